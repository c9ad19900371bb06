/** The script calls of docs/protocol.md, section 4: KEYS and ARGV of each
 * call, and what its reply means. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Envelope, encodeEnvelope } from "./envelope";
import { QueueFull, UnexpectedReply } from "./errors";
import { GROUP, PRIORITIES, QueueKeys } from "./keys";
import { Added, Numbered } from "./ledger";

export const OK = 0;
export const QUEUE_FULL = 1;
export const PAUSED = 2;
export const RATE_LIMITED = 3;
const CHUNK_JOBS = 1000;
const CHUNK_BYTES = 4 << 20;
export const SCRIPTS = [
  "enqueue", "fetch", "ack", "heartbeat", "retry", "dead_letter", "reclaim", "promote", "release",
  "retire_consumer",
] as const;
export type ScriptName = (typeof SCRIPTS)[number];

/** A packaged script's source: a byte-identical copy of lua/<name>.lua. */
export function lua(name: string): string {
  return readFileSync(join(__dirname, "..", "lua", `${name}.lua`), "utf8");
}

export type Call = [string[], (string | number | Buffer)[]];
export const nowMs = () => Date.now();
const text = (v: unknown) => (Buffer.isBuffer(v) ? v.toString() : String(v));

export interface Pending {
  id: string;
  name: string;
  priority: number;
  dueMs: number;
  envelope: Buffer;
  idempotency: [string, number] | null;
}

/** `enqueue`'s KEYS and ARGV; `knownEpoch` is the partition's epoch the
 * producer last saw ("" at first: see `Ledger`). */
export function enqueueCall(keys: QueueKeys, jobs: Pending[], maxBacklog: number, knownEpoch = "", eventsCap = 0): Call {
  const extra = [keys.delayed, keys.events, keys.seq];
  const argv: (string | number | Buffer)[] = [maxBacklog, nowMs(), 1, 0, eventsCap, knownEpoch];
  for (const job of jobs) {
    let dedup = 0;
    let ttl = 0;
    if (job.idempotency) {
      const key = keys.dedup(job.idempotency[0]);
      if (!extra.includes(key)) extra.push(key);
      dedup = 5 + extra.indexOf(key) + 1;
      ttl = job.idempotency[1];
    }
    argv.push(job.priority, job.dueMs, dedup, ttl, job.id, job.name, 0, job.envelope);
  }
  return [[...keys.common(), ...extra], argv];
}

/** What an `enqueue` reply says. */
export interface EnqueueReply {
  /** Each job's id, a duplicate's replaced by the id holding its key. */
  ids: string[];
  /** How the jobs added were numbered. */
  numbered: Numbered;
  /** The jobs added, [priority, id] in call order, duplicates left out. */
  added: Added[];
}

export function enqueueReply(jobs: Pending[], reply: unknown[]): EnqueueReply {
  if (reply[0] === QUEUE_FULL) throw new QueueFull(Number(reply[1]), Number(reply[2]));
  if (reply[0] !== OK || reply.length < 5) throw new UnexpectedReply(`enqueue answered status ${reply[0]} (${reply.length} fields)`);
  const ids = jobs.map((j) => j.id);
  const dup = reply[1] as unknown[];
  const skipped = new Set<number>();
  for (let i = 0; i < dup.length; i += 2) {
    ids[Number(dup[i]) - 1] = text(dup[i + 1]);
    skipped.add(Number(dup[i]) - 1);
  }
  const added: Added[] = [];
  jobs.forEach((job, i) => { if (!skipped.has(i)) added.push([job.priority, job.id]); });
  const numbered = { epoch: text(reply[2]), first: Number(reply[3]), kept: Number(reply[4]) };
  return { ids, numbered, added };
}

export function enqueueIds(jobs: Pending[], reply: unknown[]): string[] {
  return enqueueReply(jobs, reply).ids;
}

/** Batches of at most 1,000 jobs or 4 MiB, one script call each. */
export function chunks(jobs: Pending[]): Pending[][] {
  const out: Pending[][] = [];
  let current: Pending[] = [];
  let size = 0;
  for (const job of jobs) {
    if (current.length && (current.length >= CHUNK_JOBS || size + job.envelope.length > CHUNK_BYTES)) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(job);
    size += job.envelope.length;
  }
  if (current.length) out.push(current);
  return out;
}

export interface Claimed {
  partition: number;
  priority: number;
  entryId: string;
  envelope: Buffer | null;
  deliveries: number;
}

export function fetchCall(keys: QueueKeys, consumer: string, count: number): Call {
  return [[...keys.common(), keys.paused, keys.rate], [GROUP, consumer, count, 0, 1, nowMs()]];
}

export interface Fetched {
  status: number;
  jobs: Claimed[];
  last: string[] | null;
  waitMs: number;
}

export function parseFetch(partition: number, reply: unknown[]): Fetched {
  const status = Number(reply[0]);
  if (status === PAUSED) return { status, jobs: [], last: null, waitMs: 1000 };
  if (status === RATE_LIMITED) return { status, jobs: [], last: null, waitMs: Number(text(reply[1])) };
  if (status !== OK) throw new UnexpectedReply(`fetch answered status ${status}`);
  const flat = reply[1] as unknown[];
  const jobs: Claimed[] = [];
  for (let i = 0; i < flat.length; i += 3) {
    jobs.push({
      partition, priority: Number(text(flat[i])), entryId: text(flat[i + 1]),
      envelope: Buffer.isBuffer(flat[i + 2]) ? (flat[i + 2] as Buffer) : null, deliveries: 1,
    });
  }
  const last = reply[2] as unknown[];
  return { status, jobs, last: last && last.length ? last.map(text) : null, waitMs: 0 };
}

export function pairsCall(keys: QueueKeys, consumer: string, held: [number, string][], extra: string[]): Call {
  const argv: (string | number)[] = [GROUP, consumer];
  for (const [p, id] of held) argv.push(p, id);
  return [[...keys.common(), ...extra], argv];
}

export const bucket = (us: number) => Math.floor(4 * Math.log2(Math.max(us, 1)));

export interface Done {
  claimed: Claimed;
  jobId: string;
  name: string;
  waitUs: number;
  runUs: number;
}

/** A stream id `ms-seq` as numbers, for sorting; unparsable ids sort last. */
export function streamIdOrder(id: string): [number, number] {
  const [ms, seq] = id.split("-").map(Number);
  return Number.isFinite(ms) && Number.isFinite(seq) ? [ms, seq] : [Infinity, Infinity];
}

/** Orders jobs by priority, then entry id: each stream's ids form one range. */
function byStreamOrder(a: Done, b: Done): number {
  const [x, y] = [streamIdOrder(a.claimed.entryId), streamIdOrder(b.claimed.entryId)];
  return a.claimed.priority - b.claimed.priority || x[0] - y[0] || x[1] - y[1];
}

/** One job name's share of an `ack` batch: what lua/ack.lua takes once per
 * name instead of once per job. */
class NameSums {
  reclaims = 0;
  waitSum = 0;
  runSum = 0;
  /** Runs per latency bucket. */
  wait = new Map<number, number>();
  run = new Map<number, number>();
  /** `slot`: 1-based, the jobs' reference to this name. */
  constructor(readonly name: string, readonly slot: number) {}

  /** Counts one run of the batch. */
  add(d: Done): void {
    this.reclaims += Math.max(d.claimed.deliveries - 1, 0);
    this.waitSum += d.waitUs;
    this.runSum += d.runUs;
    this.wait.set(bucket(d.waitUs), (this.wait.get(bucket(d.waitUs)) ?? 0) + 1);
    this.run.set(bucket(d.runUs), (this.run.get(bucket(d.runUs)) ?? 0) + 1);
  }

  /** The name's arguments: name, reclaims, wait sum, run sum, then each
   * histogram as its length and (bucket, runs) pairs. */
  args(): (string | number)[] {
    const out: (string | number)[] = [this.name, this.reclaims, this.waitSum, this.runSum];
    for (const histogram of [this.wait, this.run]) {
      out.push(histogram.size);
      for (const b of [...histogram.keys()].sort((x, y) => x - y)) out.push(b, histogram.get(b)!);
    }
    return out;
  }
}

/** `ack`'s KEYS and ARGV (lua/ack.lua): the job count, three arguments per job
 * (priority, entry id, name slot), sorted by priority then id for the
 * script's ranged read, then each job name once with the batch's sums and
 * histograms for it. Always per-name metrics, no events and no results, so
 * no details section. */
export function ackCall(keys: QueueKeys, consumer: string, done: Done[]): Call {
  const names = new Map<string, NameSums>();
  const argv: (string | number | Buffer)[] = [GROUP, consumer, 1, 0, 0, nowMs(), done.length];
  for (const d of [...done].sort(byStreamOrder)) {
    if (!names.has(d.name)) names.set(d.name, new NameSums(d.name, names.size + 1));
    const sums = names.get(d.name)!;
    sums.add(d);
    argv.push(d.claimed.priority, d.claimed.entryId, sums.slot);
  }
  argv.push(names.size);
  for (const sums of names.values()) argv.push(...sums.args());
  return [[...keys.common(), keys.latency, keys.events], argv];
}

export function retryCall(keys: QueueKeys, consumer: string, c: Claimed, env: Envelope, attempt: number,
  dueUs: number, error: string): Call {
  const next = encodeEnvelope({ ...env, attempt, readyUs: dueUs });
  return [[...keys.common(), keys.delayed, keys.events], [GROUP, consumer, c.entryId, c.priority,
    Math.floor(dueUs / 1000), next, env.name, c.deliveries - 1, 1, 0, env.id, attempt, error, nowMs()]];
}

export function deadLetterCall(keys: QueueKeys, consumer: string, c: Claimed, jobId: string, name: string,
  attempts: number, error: string, failedRun: boolean): Call {
  return [[...keys.common(), keys.dead, keys.events], [GROUP, consumer, c.entryId, c.priority, error,
    nowMs(), jobId, attempts, 0, name, failedRun ? 1 : 0, c.deliveries - 1, 1, 0]];
}

export function reclaimCall(keys: QueueKeys, consumer: string, priority: number, leaseMs: number,
  cursor: string, count: number): Call {
  return [keys.common(), [GROUP, consumer, priority, leaseMs, cursor, count]];
}

export function parseReclaim(partition: number, priority: number, reply: unknown[]): [string, Claimed[], string[]] {
  const flat = reply[2] as unknown[];
  const jobs: Claimed[] = [];
  for (let i = 0; i < flat.length; i += 3) {
    jobs.push({
      partition, priority, entryId: text(flat[i]),
      envelope: Buffer.isBuffer(flat[i + 1]) ? (flat[i + 1] as Buffer) : null,
      deliveries: Number(text(flat[i + 2])),
    });
  }
  return [text(reply[1]), jobs, (reply[3] as unknown[]).map(text)];
}

export const promoteCall = (keys: QueueKeys): Call => [[...keys.common(), keys.delayed], [nowMs(), 1000]];
export const retireCall = (keys: QueueKeys, consumer: string): Call => [keys.common(), [GROUP, consumer]];

/** Capped exponential retry delays (seconds) with jitter, the Rust default. */
export class Backoff {
  constructor(readonly base = 2, readonly cap = 3600, readonly jitter = true) {}
  delay(attempt: number): number {
    const d = Math.min(this.cap, this.base * 2 ** Math.max(attempt - 1, 0));
    return this.jitter ? d * (0.75 + 0.5 * Math.random()) : d;
  }
}

/** A queue at a glance, summed over its partitions. */
export class Stats {
  priorities: Record<string, { length: number; waiting: number; inFlight: number }> = {};
  delayed = 0;
  deadLetters = 0;
  counters: Record<string, number> = {};
  get waiting(): number {
    return Object.values(this.priorities).reduce((n, p) => n + p.waiting, 0);
  }
  get inFlight(): number {
    return Object.values(this.priorities).reduce((n, p) => n + p.inFlight, 0);
  }
  /** A counter summed over priorities: enqueued, completed, dead, ... */
  total(counter: string): number {
    return PRIORITIES.reduce((n, p) => n + (this.counters[`${counter}:${p}`] ?? 0), 0);
  }
}

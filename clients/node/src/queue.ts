/** A queue: open it, enqueue one job or a batch, read stats. */
import Redis from "ioredis";
import {
  DEFAULT_MAX_PAYLOAD_BYTES, ENVELOPE_OVERHEAD, encodeEnvelope, encodePayload, newJobId, nowUs,
} from "./envelope";
import { PayloadTooLarge, UnknownLayout, UnsupportedServer, WrongKeyType } from "./errors";
import { GROUP, LAYOUT_VERSION, MAX_PARTITIONS, PRIORITIES, QueueKeys, partitionOf, priorityIndex } from "./keys";
import { Ledger, RolledBack, reportCommands, rolledBackMessage } from "./ledger";
import * as protocol from "./protocol";

/** A job's options; every field has the Rust producer's default. */
export interface JobOptions {
  priority?: string;
  name?: string;
  /** Seconds before the job may run. */
  delay?: number;
  attempts?: number;
  idempotencyKey?: string;
  /** Seconds the idempotency key is kept (default 24 h). */
  idempotencyTtl?: number;
  partitionKey?: string;
  timeoutMs?: number;
}

export interface QueueOptions {
  prefix?: string;
  maxPayloadBytes?: number;
  /** Compress payloads above this many bytes (LZ4, when smaller so). */
  compressAbove?: number | null;
  /** Refuse enqueues beyond this many waiting and delayed jobs (0 = none). */
  maxBacklog?: number;
}

/** One job and its options, for `enqueueBatch`. */
export interface NewJob extends JobOptions {
  payload: unknown;
}

function helloVersion(reply: unknown): [string, number[]] {
  const flat = reply as unknown[];
  const info: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) info[String(flat[i])] = flat[i + 1];
  const version = String(info.version ?? "0").split(".").map(Number);
  while (version.length < 3) version.push(0);
  return [String(info.server ?? "redis"), version];
}

function older(a: number[], b: number[]): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

/** The partition count a layout record says; refuses unknown versions. */
export function partitionsFrom(layout: Record<string, string>): number {
  if (!("partitions" in layout)) return 1;
  if (layout.version !== String(LAYOUT_VERSION)) {
    throw new UnknownLayout(`the queue's layout version is "${layout.version}"; this client knows ${LAYOUT_VERSION}: upgrade it before using this queue`);
  }
  const count = Number(layout.partitions);
  if (!(count >= 1 && count <= MAX_PARTITIONS)) throw new UnknownLayout(`the queue's layout says ${layout.partitions} partitions`);
  return count;
}

export class Queue {
  readonly partitions: QueueKeys[];
  /** Per partition: this handle's acknowledged jobs and the epoch it saw. */
  readonly ledgers: Ledger[];
  /** Approximate MAXLEN of the events stream; 0 = no events. This client
   * keeps no events (docs/protocol.md, section 6): the scripts get 0, and so
   * does the loss report, unless this is raised. */
  eventsCap = 0;
  private roundRobin = Math.floor(Math.random() * 65536);
  private groupsReady = false;

  private constructor(readonly client: Redis, readonly name: string, readonly options: Required<QueueOptions>, partitions: number) {
    this.partitions = Array.from({ length: partitions }, (_, i) => new QueueKeys(options.prefix, name, i));
    this.ledgers = this.partitions.map(() => new Ledger());
    for (const script of protocol.SCRIPTS) client.defineCommand(script, { lua: protocol.lua(script) });
  }

  /** Connects, checks the server version and the queue's layout. */
  static async open(url: string, name: string, options: QueueOptions = {}): Promise<Queue> {
    const settings: Required<QueueOptions> = {
      prefix: options.prefix ?? "streamq",
      maxPayloadBytes: options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES,
      compressAbove: options.compressAbove ?? null,
      maxBacklog: options.maxBacklog ?? 0,
    };
    const keys = new QueueKeys(settings.prefix, name);
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await client.connect();
    try {
      const [server, version] = helloVersion(await client.call("HELLO"));
      const required = server === "valkey" ? [7, 2, 0] : [7, 0, 0];
      if (older(version, required)) {
        throw new UnsupportedServer(`${server} ${version.join(".")} is too old: streamq needs ${required.join(".")} or newer`);
      }
      const layout = await client.hgetall(keys.layout);
      return new Queue(client, name, settings, partitionsFrom(layout));
    } catch (err) {
      client.disconnect();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.client.quit();
  }

  /** Runs one script: replies with Buffers when `buffers` (envelopes). */
  call(target: Redis | ReturnType<Redis["pipeline"]>, script: protocol.ScriptName, [keys, args]: protocol.Call, buffers = false): any {
    const command = buffers ? `${script}Buffer` : script;
    return (target as any)[command](keys.length, ...keys, ...args);
  }

  /** Checks key types and creates the consumer groups, once per handle. */
  async ensureGroups(): Promise<void> {
    if (this.groupsReady) return;
    for (const keys of this.partitions) {
      const typed = keys.typed();
      const found = await Promise.all(typed.map(([key]) => this.client.type(key)));
      typed.forEach(([key, expected], i) => {
        if (found[i] !== "none" && found[i] !== expected) throw new WrongKeyType(`key ${key} holds a ${found[i]}, not a ${expected}`);
      });
      for (let i = 0; i < 4; i++) {
        const stream = keys.streams[i];
        if (found[i] === "stream") {
          const groups = (await this.client.call("XINFO", "GROUPS", stream)) as unknown[][];
          if (groups.some((g) => g[1] === GROUP)) continue;
        }
        try {
          await this.client.xgroup("CREATE", stream, GROUP, "0", "MKSTREAM");
        } catch (err) {
          if (!String(err).includes("BUSYGROUP")) throw err;
        }
      }
    }
    this.groupsReady = true;
  }

  private encode(job: NewJob): protocol.Pending {
    const priority = priorityIndex(job.priority ?? "medium");
    const [data, compressed] = encodePayload(job.payload, this.options.maxPayloadBytes, this.options.compressAbove);
    const delayUs = Math.round((job.delay ?? 0) * 1e6);
    const ready = nowUs() + delayUs;
    const id = newJobId();
    const envelope = encodeEnvelope({
      version: 1, id, name: job.name ?? "", attempt: 0, maxAttempts: Math.max(job.attempts ?? 3, 1),
      enqueuedUs: nowUs(), readyUs: ready, timeoutMs: job.timeoutMs ?? null, payload: data, compressed,
      trace: null, group: null, parent: null,
    });
    if (envelope.length > this.options.maxPayloadBytes + ENVELOPE_OVERHEAD) {
      throw new PayloadTooLarge(`envelope of ${envelope.length} bytes is over the limit`);
    }
    const idempotency: [string, number] | null = job.idempotencyKey === undefined ? null
      : [job.idempotencyKey, Math.round((job.idempotencyTtl ?? 86400) * 1000)];
    return { id, name: job.name ?? "", priority, dueMs: delayUs > 0 ? Math.floor(ready / 1000) : 0, envelope, idempotency };
  }

  private partitionFor(job: NewJob): number {
    const n = this.partitions.length;
    if (n === 1) return 0;
    const key = job.partitionKey ?? job.idempotencyKey;
    return key !== undefined ? partitionOf(key, n) : this.roundRobin++ % n;
  }

  /** Enqueues one job; resolves to its id (for a duplicate idempotency key,
   * the id of the job holding the key). */
  async enqueue(payload: unknown, options: JobOptions = {}): Promise<string> {
    return (await this.enqueueBatch([{ ...options, payload }]))[0];
  }

  /** Enqueues many jobs in one round trip (one script call per partition and
   * per 1,000 jobs, pipelined); resolves to their ids in order. */
  async enqueueBatch(jobs: NewJob[]): Promise<string[]> {
    if (!jobs.length) return [];
    await this.ensureGroups();
    const byPartition = new Map<number, [number, protocol.Pending][]>();
    jobs.forEach((job, position) => {
      const p = this.partitionFor(job);
      if (!byPartition.has(p)) byPartition.set(p, []);
      byPartition.get(p)!.push([position, this.encode(job)]);
    });
    const pipe = this.client.pipeline();
    const calls: [number, Map<protocol.Pending, number>, protocol.Pending[]][] = [];
    // The epoch each partition's calls name: its ledger's, read once per
    // batch (every call of the batch is judged against it).
    const named = new Map<number, string>();
    for (const [partition, items] of byPartition) {
      const positions = new Map(items.map(([pos, p]) => [p, pos]));
      named.set(partition, this.ledgers[partition].epoch());
      for (const chunk of protocol.chunks(items.map(([, p]) => p))) {
        calls.push([partition, positions, chunk]);
        this.call(pipe, "enqueue", protocol.enqueueCall(this.partitions[partition], chunk, this.options.maxBacklog,
          named.get(partition), this.eventsCap));
      }
    }
    const replies = (await pipe.exec()) ?? [];
    const ids: string[] = new Array(jobs.length);
    const rolledBack = new Map<number, RolledBack[]>();
    let error: unknown = null;
    // Every call that succeeded is recorded in its partition's ledger,
    // whatever the others did; the first error is thrown after the report.
    calls.forEach(([partition, positions, chunk], i) => {
      const [err, reply] = replies[i] ?? [new Error("no reply to an enqueue call"), null];
      let parsed: protocol.EnqueueReply;
      try {
        if (err) throw err;
        parsed = protocol.enqueueReply(chunk, reply as unknown[]);
      } catch (e) {
        error ??= e;
        return;
      }
      parsed.ids.forEach((id, j) => {
        ids[positions.get(chunk[j])!] = id;
      });
      const lost = this.ledgers[partition].record(named.get(partition)!, parsed.numbered, parsed.added);
      if (lost) {
        if (!rolledBack.has(partition)) rolledBack.set(partition, []);
        rolledBack.get(partition)!.push(lost);
      }
    });
    for (const [partition, lost] of rolledBack) await this.reportRolledBack(partition, lost);
    if (error !== null) throw error;
    return ids;
  }

  /** Reports what new epochs rolled back on `partition`: an error naming the
   * jobs, the `rolled_back:<priority>` counters and, when the queue keeps
   * events, a `rolled_back` event per named job. Best effort: a failure is
   * logged, never thrown (the enqueue that found the loss succeeded). */
  private async reportRolledBack(partition: number, rolledBack: RolledBack[]): Promise<void> {
    const keys = this.partitions[partition];
    console.error(rolledBackMessage(keys, rolledBack));
    try {
      const pipe = this.client.pipeline();
      for (const [command, ...args] of reportCommands(keys, rolledBack, this.eventsCap, protocol.nowMs())) {
        pipe.call(String(command), ...args);
      }
      const failed = ((await pipe.exec()) ?? []).find(([err]) => err);
      if (failed) throw failed[0];
    } catch (err) {
      console.error(`streamq: could not count the lost jobs of queue ${keys.queue}, partition ${keys.index} in Redis:`, err);
    }
  }

  /** Waiting, in flight, delayed, dead letters and counters, over partitions. */
  async stats(): Promise<protocol.Stats> {
    const stats = new protocol.Stats();
    for (const keys of this.partitions) {
      const pipe = this.client.pipeline();
      for (const stream of keys.streams) pipe.call("XINFO", "GROUPS", stream).xlen(stream);
      pipe.zcard(keys.delayed).xlen(keys.dead).hgetall(keys.stats);
      const replies = (await pipe.exec()) ?? [];
      PRIORITIES.forEach((name, i) => {
        const [groupsErr, groups] = replies[2 * i];
        const length = Number(replies[2 * i + 1][1] ?? 0);
        const group = groupsErr ? undefined : (groups as unknown[][]).find((g) => g[1] === GROUP);
        const field = (k: string) => (group ? Number(group[group.indexOf(k) + 1] ?? 0) : 0);
        const p = (stats.priorities[name] ??= { length: 0, waiting: 0, inFlight: 0 });
        // The lag is nil, or stale, once undelivered entries were deleted
        // (docs/protocol.md): it never exceeds what the stream holds.
        const undelivered = Math.max(length - field("pending"), 0);
        const lag = group ? group[group.indexOf("lag") + 1] : null;
        p.length += length;
        p.waiting += lag === null || lag === undefined ? undelivered : Math.min(Number(lag), undelivered);
        p.inFlight += field("pending");
      });
      stats.delayed += Number(replies[8][1] ?? 0);
      stats.deadLetters += Number(replies[9][1] ?? 0);
      for (const [k, v] of Object.entries((replies[10][1] as Record<string, string>) ?? {})) {
        if (!Number.isNaN(Number(v))) stats.counters[k] = (stats.counters[k] ?? 0) + Number(v);
      }
    }
    return stats;
  }

  /** The oldest dead letters of every partition, as objects of their fields. */
  async deadLetters(count = 100): Promise<Record<string, string>[]> {
    const letters: Record<string, string>[] = [];
    for (const keys of this.partitions) {
      for (const [id, fields] of await this.client.xrange(keys.dead, "-", "+", "COUNT", count)) {
        const letter: Record<string, string> = { id };
        for (let i = 0; i < fields.length; i += 2) if (fields[i] !== "e") letter[fields[i]] = fields[i + 1];
        letters.push(letter);
      }
    }
    return letters;
  }
}

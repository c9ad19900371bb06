/** A worker: concurrent handlers, lease heartbeats, retries with backoff,
 * dead letters, reclaim of stalled jobs and a graceful stop, as
 * docs/protocol.md section 4 describes the consumer's duties. */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import Redis from "ioredis";
import { decodeEnvelope, nowUs, payloadValue } from "./envelope";
import { DecodeError, PermanentError } from "./errors";
import { PRIORITIES, Priority, QueueKeys } from "./keys";
import * as protocol from "./protocol";
import { Queue } from "./queue";

/** What a handler gets. */
export interface JobContext {
  id: string;
  name: string;
  payload: any;
  /** 1 on the first run. */
  attempt: number;
  maxAttempts: number;
  priority: Priority;
  /** Aborted when an operator cancels the running job. */
  signal: AbortSignal;
}

export interface WorkerOptions {
  concurrency?: number;
  /** Seconds a claimed job is leased; renewed every third of it. */
  lease?: number;
  block?: number;
  backoff?: protocol.Backoff;
  maxDeliveries?: number;
  reclaimInterval?: number;
  promoteInterval?: number;
  /** Seconds running jobs get to finish on stop. */
  grace?: number;
  consumer?: string;
}

export class Outcomes {
  completed = 0;
  retried = 0;
  deadLettered = 0;
  lost = 0;
  reclaimed = 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `<host>-<pid>-<8 hex>`, unique per worker, as the Rust worker names itself. */
export function defaultConsumerName(): string {
  return `${hostname() || "host"}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/** Runs `handler(job)` for the queue's jobs until `stop()`. A handler that
 * resolves completes the job; one that throws retries it with backoff while
 * attempts remain, then dead-letters it with the error; `PermanentError`
 * dead-letters at once. */
export class Worker {
  readonly outcomes = new Outcomes();
  readonly consumer: string;
  private readonly o: Required<Omit<WorkerOptions, "consumer">>;
  private stopping = false;
  private waiters: (() => void)[] = [];
  // Keyed by "partition:priority:entry id": each priority's stream numbers its
  // entries itself, so entry ids repeat across priorities.
  private readonly held = new Map<string, [number, number, string]>(); // key -> [partition, priority, entry id]
  private readonly running = new Map<string, { promise: Promise<void>; abort: AbortController }>();
  // Partitions with a `live` hash: producers there track jobs, and only the
  // worker that ends a job removes its record (docs/protocol.md, section 6).
  private readonly live = new Set<number>();

  constructor(readonly queue: Queue, readonly handler: (job: JobContext) => Promise<unknown>, options: WorkerOptions = {}) {
    this.consumer = options.consumer ?? defaultConsumerName();
    this.o = {
      concurrency: options.concurrency ?? 16, lease: options.lease ?? 30, block: options.block ?? 5,
      backoff: options.backoff ?? new protocol.Backoff(), maxDeliveries: options.maxDeliveries ?? 5,
      reclaimInterval: options.reclaimInterval ?? 5, promoteInterval: options.promoteInterval ?? 0.25,
      grace: options.grace ?? 30,
    };
  }

  /** Stops claiming; running jobs finish (up to `grace`), the rest go back. */
  stop(): void {
    this.stopping = true;
    this.wake();
  }

  /** Wakes every fetch loop waiting for room. */
  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Works jobs until `stop()`; resolves to what it did. */
  async run(): Promise<Outcomes> {
    await this.queue.ensureGroups();
    for (const [p, keys] of this.queue.partitions.entries()) if (await this.queue.client.exists(keys.live)) this.live.add(p);
    if (this.live.size) {
      console.warn(`streamq: the producers of queue ${this.queue.name} track jobs but this worker does not: it removes the `
        + "records of the jobs it ends; use a Rust worker with track_jobs to keep their state readable");
    }
    const loops = this.queue.partitions.map((_, p) => this.fetchLoop(p));
    loops.push(this.maintenance());
    await Promise.all(loops);
    const running = [...this.running.values()].map((r) => r.promise);
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((r) => (timer = setTimeout(r, this.o.grace * 1000)));
    await Promise.race([Promise.all(running), grace]);
    clearTimeout(timer);
    await this.handBack();
    for (const keys of this.queue.partitions) {
      await this.queue.call(this.queue.client, "retire_consumer", protocol.retireCall(keys, this.consumer));
    }
    return this.outcomes;
  }

  private room(): number {
    return this.o.concurrency - this.held.size;
  }

  private async fetchLoop(partition: number): Promise<void> {
    const keys = this.queue.partitions[partition];
    const blockMs = Math.max(Math.round(Math.min(this.o.block, 1) * 1000), 1);
    const blocking = this.queue.client.duplicate();
    try {
      while (!this.stopping) {
        while (this.room() <= 0 && !this.stopping) await new Promise<void>((r) => this.waiters.push(r));
        if (this.stopping) return;
        const reply = await this.queue.call(this.queue.client, "fetch", protocol.fetchCall(keys, this.consumer, this.room()), true);
        const fetched = protocol.parseFetch(partition, reply);
        if (fetched.status !== protocol.OK) {
          await sleep(fetched.waitMs);
          continue;
        }
        this.dispatch(fetched.jobs);
        if (fetched.last) {
          await blocking.xread("COUNT", 1, "BLOCK", blockMs, "STREAMS", ...keys.streams, ...fetched.last);
        }
      }
    } catch (err) {
      console.error(`streamq: the fetch loop of partition ${partition} failed; stopping:`, err);
      this.stop();
    } finally {
      blocking.disconnect();
    }
  }

  private dispatch(jobs: protocol.Claimed[]): void {
    for (const c of jobs) {
      const key = `${c.partition}:${c.priority}:${c.entryId}`;
      this.held.set(key, [c.partition, c.priority, c.entryId]);
      const abort = new AbortController();
      const promise = this.execute(c, abort.signal)
        .catch((err) => console.error(`streamq: finishing job entry ${c.entryId} failed; its lease will expire:`, err))
        .finally(() => {
          this.held.delete(key);
          this.running.delete(key);
          this.wake();
        });
      this.running.set(key, { promise, abort });
    }
  }

  private async execute(c: protocol.Claimed, signal: AbortSignal): Promise<void> {
    const keys = this.queue.partitions[c.partition];
    let env;
    try {
      if (!c.envelope) throw new DecodeError("the stream entry has no envelope");
      env = decodeEnvelope(c.envelope);
    } catch (err) {
      return this.dead(keys, c, "", "", 0, `unreadable job: ${(err as Error).message}`, false);
    }
    if (c.deliveries > this.o.maxDeliveries) {
      return this.dead(keys, c, env.id, env.name, env.attempt + 1,
        `delivered ${c.deliveries} times without finishing (max ${this.o.maxDeliveries}): each worker holding it died or hung`, false);
    }
    let payload;
    try {
      payload = payloadValue(env, this.queue.options.maxPayloadBytes);
    } catch (err) {
      return this.dead(keys, c, env.id, env.name, env.attempt, `unreadable payload: ${(err as Error).message}`, false);
    }
    const attempt = env.attempt + 1;
    const started = nowUs();
    try {
      await this.handler({
        id: env.id, name: env.name, payload, attempt, maxAttempts: env.maxAttempts,
        priority: PRIORITIES[c.priority - 1], signal,
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof PermanentError) return this.dead(keys, c, env.id, env.name, attempt, message, true);
      if (attempt >= env.maxAttempts) {
        return this.dead(keys, c, env.id, env.name, attempt,
          `failed ${attempt} of ${env.maxAttempts} attempts, last: ${message}`, true);
      }
      const due = nowUs() + Math.round(this.o.backoff.delay(attempt) * 1e6);
      const reply = await this.queue.call(this.queue.client, "retry", protocol.retryCall(keys, this.consumer, c, env, attempt, due, message));
      return this.count(reply[1], "retried");
    }
    const done: protocol.Done = { claimed: c, jobId: env.id, name: env.name, waitUs: Math.max(started - env.readyUs, 0), runUs: nowUs() - started };
    const reply = await this.queue.call(this.queue.client, "ack", protocol.ackCall(keys, this.consumer, [done]));
    this.count(reply[1], "completed");
    await this.ended(c, env.id, reply[1]);
  }

  private async dead(keys: QueueKeys, c: protocol.Claimed, jobId: string, name: string, attempts: number, error: string, failedRun: boolean): Promise<void> {
    const reply = await this.queue.call(this.queue.client, "dead_letter", protocol.deadLetterCall(keys, this.consumer, c, jobId, name, attempts, error, failedRun));
    this.count(reply[1], "deadLettered");
    await this.ended(c, jobId, reply[1]);
  }

  /** Removes the `live` record of a job this worker ended (unless another
   * worker held it by then). Best effort: a failure is logged. */
  private async ended(c: protocol.Claimed, jobId: string, lost: unknown[]): Promise<void> {
    if (!this.live.has(c.partition) || !jobId || (lost && lost.length)) return;
    try {
      await this.queue.client.hdel(this.queue.partitions[c.partition].live, jobId);
    } catch (err) {
      console.error(`streamq: could not remove the live record of job ${jobId}:`, err);
    }
  }

  private count(lost: unknown[], outcome: "completed" | "retried" | "deadLettered"): void {
    if (lost && lost.length) this.outcomes.lost += 1;
    else this.outcomes[outcome] += 1;
  }

  private async maintenance(): Promise<void> {
    let nextBeat = Date.now();
    let nextReclaim = Date.now();
    try {
      while (!this.stopping) {
        await sleep(this.o.promoteInterval * 1000);
        if (this.stopping) return;
        for (const keys of this.queue.partitions) {
          await this.queue.call(this.queue.client, "promote", protocol.promoteCall(keys));
        }
        const now = Date.now();
        if (now >= nextBeat) {
          await this.heartbeat();
          nextBeat = now + (this.o.lease * 1000) / 3;
        }
        if (now >= nextReclaim) {
          await this.reclaim();
          nextReclaim = now + this.o.reclaimInterval * 1000;
        }
      }
    } catch (err) {
      console.error("streamq: the maintenance loop failed; stopping:", err);
      this.stop();
    }
  }

  private heldByPartition(): Map<number, [number, string][]> {
    const out = new Map<number, [number, string][]>();
    for (const [partition, priority, entryId] of this.held.values()) {
      if (!out.has(partition)) out.set(partition, []);
      out.get(partition)!.push([priority, entryId]);
    }
    return out;
  }

  private async heartbeat(): Promise<void> {
    for (const [partition, held] of this.heldByPartition()) {
      const keys = this.queue.partitions[partition];
      const reply = await this.queue.call(this.queue.client, "heartbeat", protocol.pairsCall(keys, this.consumer, held, [keys.stop]));
      // Each as its stop request's member: "<priority index>:<entry id>".
      for (const member of (reply[2] as string[]) ?? []) this.running.get(`${partition}:${member}`)?.abort.abort();
    }
  }

  private async reclaim(): Promise<void> {
    const leaseMs = Math.round(this.o.lease * 1000);
    for (const [partition, keys] of this.queue.partitions.entries()) {
      for (let priority = 1; priority <= 4; priority++) {
        let cursor = "0-0";
        while (this.room() > 0) {
          const reply = await this.queue.call(this.queue.client, "reclaim", protocol.reclaimCall(keys, this.consumer, priority, leaseMs, cursor, this.room()), true);
          const [next, jobs, deleted] = protocol.parseReclaim(partition, priority, reply);
          if (deleted.length) console.error(`streamq: ${deleted.length} jobs were deleted from Redis while pending (lost): ${deleted}`);
          this.outcomes.reclaimed += jobs.length;
          this.dispatch(jobs);
          cursor = next;
          if (cursor === "0-0") break;
        }
      }
    }
  }

  private async handBack(): Promise<void> {
    for (const [partition, held] of this.heldByPartition()) {
      const keys = this.queue.partitions[partition];
      await this.queue.call(this.queue.client, "release", protocol.pairsCall(keys, this.consumer, held, []));
    }
  }
}

/** Which acknowledged enqueues a failover rolled back (docs/protocol.md,
 * "Loss accounting"; the Rust crate's src/producer/ledger.rs).
 *
 * Redis replicates asynchronously: a master can acknowledge an enqueue and
 * fail before its replica has it. `enqueue.lua` numbers every job it adds
 * (one sequence per partition) and names the epoch: the server writing the
 * sequence. A server that did not write the current epoch (a promoted
 * replica, a restarted master, the node a slot moved to) opens a new one and
 * records the first number it did not inherit. Each call names the epoch the
 * producer last saw, and the reply says up to which number that epoch
 * survived, so the producer knows which of its own recent jobs the new
 * server never had. It keeps the last `RECENT_JOBS` numbered jobs per
 * partition for that; older ones are counted, not named.
 *
 * The ledger itself is pure (no I/O); `reportCommands` says what to send and
 * the queue sends it. */
import { PRIORITIES, QueueKeys } from "./keys";

/** Acknowledged jobs remembered per partition, to name the rolled back ones. */
export const RECENT_JOBS = 16_384;
/** Runs of forgotten numbers kept per partition (a producer alone on a
 * partition needs one). */
export const FORGOTTEN_RUNS = 4_096;
/** Closed epochs remembered (the server's history keeps as many). */
export const RETIRED_EPOCHS = 8;
/** Job ids named in the error logged per report (the count is always whole). */
const LOGGED_IDS = 100;

/** The epoch part of an `enqueue` reply. */
export interface Numbered {
  /** The current epoch; empty when the server has no epochs (`INFO` refused). */
  epoch: string;
  /** The number of the first job added; the rest follow in call order. */
  first: number;
  /** Up to which number the epoch the call named survived: -1 when it named
   * the current one (or none), 0 when that epoch is no longer in the
   * history, -2 when the sequence was deleted (obliterate). */
  kept: number;
}

/** A job the ledger keeps: its priority index (1..4) and id. */
export type Added = [priority: number, id: string];

/** What a new epoch took away from this producer. */
export interface RolledBack {
  /** The jobs, as [priority index 1..4, job id]. */
  jobs: Added[];
  /** Rolled back jobs too old to be named (beyond `RECENT_JOBS`). */
  unnamed: number;
}

/** A FIFO with amortised O(1) shift (an array's shift is O(n)). */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  last(): T | undefined {
    return this.length ? this.items[this.items.length - 1] : undefined;
  }
  *[Symbol.iterator](): Iterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i];
  }
}

/** One partition's record of its producer's recent jobs. */
export class Ledger {
  private current = "";
  /** Jobs acknowledged in the epoch, [number, priority, id], at most RECENT_JOBS. */
  private recent = new Fifo<[number, number, string]>();
  /** The numbers of older jobs of the epoch, as runs [first, count], at most
   * FORGOTTEN_RUNS: enough to count them if they are rolled back. */
  private forgotten = new Fifo<[number, number]>();
  /** Epochs this producer saw closed, [epoch, last surviving number], for
   * calls that named one and were answered after it closed. */
  private retired: [string, number][] = [];

  /** The epoch to name in the next call ("" before the first). */
  epoch(): string {
    return this.current;
  }

  /** Records the jobs one call added (in call order, duplicates left out)
   * and returns what a new epoch rolled back, if anything. `named` is the
   * epoch the call named. */
  record(named: string, numbered: Numbered, added: Iterable<Added>): RolledBack | null {
    if (!numbered.epoch) return null;
    let rolledBack: RolledBack | null = null;
    if (this.current !== numbered.epoch) {
      if (named === this.current) {
        rolledBack = this.open(numbered.epoch, numbered.kept);
      } else {
        const retired = this.retired.find(([e]) => e === named);
        if (retired) {
          // A call named an epoch another call already closed: its own jobs
          // are judged against what that epoch kept.
          const kept = retired[1];
          const lost: RolledBack = { jobs: [], unnamed: 0 };
          let number = numbered.first;
          for (const [priority, id] of added) {
            if (number > kept) lost.jobs.push([priority, id]);
            number++;
          }
          return lost.jobs.length ? lost : null;
        }
      }
    }
    let number = numbered.first;
    for (const [priority, id] of added) this.recent.push([number++, priority, id]);
    while (this.recent.length > RECENT_JOBS) this.forget(this.recent.shift()![0]);
    return rolledBack;
  }

  /** Moves to `epoch`, which kept the old one's numbers up to `kept`. */
  private open(epoch: string, kept: number): RolledBack | null {
    const old = this.current;
    this.current = epoch;
    if (!old || kept === -1) return null;
    const recent = this.recent;
    const forgotten = this.forgotten;
    this.recent = new Fifo();
    this.forgotten = new Fifo();
    // The sequence was deleted on purpose (obliterate): so were the jobs.
    if (kept === -2) return null;
    kept = Math.max(kept, 0);
    this.retired.push([old, kept]);
    while (this.retired.length > RETIRED_EPOCHS) this.retired.shift();
    const lost: RolledBack = { jobs: [], unnamed: 0 };
    for (const [number, priority, id] of recent) {
      if (number > kept) lost.jobs.push([priority, id]);
      else this.recent.push([number, priority, id]);
    }
    for (const [first, count] of forgotten) {
      const last = first + count - 1;
      if (last > kept) lost.unnamed += last - Math.max(kept, first - 1);
      else this.forgotten.push([first, count]);
    }
    return lost.jobs.length || lost.unnamed ? lost : null;
  }

  /** Keeps `number` as part of a run. */
  private forget(number: number): void {
    const run = this.forgotten.last();
    if (run && run[0] + run[1] === number) {
      run[1]++;
      return;
    }
    this.forgotten.push([number, 1]);
    while (this.forgotten.length > FORGOTTEN_RUNS) this.forgotten.shift();
  }
}

/** The commands that count what new epochs rolled back on the partition of
 * `keys`: `HINCRBY stats rolled_back:<priority>` per priority, and, when the
 * queue keeps events (`eventsCap` > 0), one `rolled_back` event per named
 * job. Unnamed jobs have no priority left: they count as `low`. */
export function reportCommands(keys: QueueKeys, rolledBack: RolledBack[], eventsCap: number, nowMs: number): (string | number)[][] {
  const perPriority = [0, 0, 0, 0];
  const named = rolledBack.flatMap((lost) => lost.jobs);
  for (const [priority] of named) perPriority[priority - 1]++;
  perPriority[3] += rolledBack.reduce((n, lost) => n + lost.unnamed, 0);
  const commands: (string | number)[][] = [];
  PRIORITIES.forEach((name, i) => {
    if (perPriority[i] > 0) commands.push(["HINCRBY", keys.stats, `rolled_back:${name}`, perPriority[i]]);
  });
  if (eventsCap > 0) {
    for (const [priority, id] of named) {
      commands.push(["XADD", keys.events, "MAXLEN", "~", eventsCap, "*", "ev", "rolled_back", "job", id,
        "p", PRIORITIES[priority - 1], "at", nowMs]);
    }
  }
  return commands;
}

/** The error naming the jobs new epochs rolled back on a partition. */
export function rolledBackMessage(keys: QueueKeys, rolledBack: RolledBack[]): string {
  const named = rolledBack.flatMap((lost) => lost.jobs.map(([, id]) => id));
  const total = named.length + rolledBack.reduce((n, lost) => n + lost.unnamed, 0);
  const which = named.length > LOGGED_IDS ? ` (the first ${LOGGED_IDS})` : "";
  return `streamq: ${total} acknowledged jobs lost on queue ${keys.queue}, partition ${keys.index}: `
    + "the server now holding this partition never had them (a failover after asynchronous "
    + "replication, or a restart); jobs that had already run are among them. "
    + `Job ids${which}: ${named.slice(0, LOGGED_IDS).join(", ")}`;
}

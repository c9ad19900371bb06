/** Every key name and partition rule of docs/protocol.md, section 2. */
import { InvalidName, UnknownPriority } from "./errors";

export const PRIORITIES = ["critical", "high", "medium", "low"] as const;
export type Priority = (typeof PRIORITIES)[number];
export const GROUP = "streamq";
export const LAYOUT_VERSION = 1;
export const MAX_PARTITIONS = 1024;
const MAX_NAME_LEN = 128;
const SLOTS = 16384;

/** 1 = critical .. 4 = low, as the scripts take it. */
export function priorityIndex(priority: string): number {
  const i = PRIORITIES.indexOf(priority.trim().toLowerCase() as Priority);
  if (i < 0) throw new UnknownPriority(`unknown priority "${priority}": use critical, high, medium or low`);
  return i + 1;
}

export function validateName(what: string, name: string): void {
  if (!name || Buffer.byteLength(name) > MAX_NAME_LEN || /[{}\s\x00-\x1f\x7f]/.test(name)) {
    throw new InvalidName(
      `invalid ${what} "${name}": 1 to ${MAX_NAME_LEN} bytes, no braces, whitespace or control characters`,
    );
  }
}

function crc16(data: Buffer): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = (crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1) & 0xffff;
  }
  return crc;
}

/** Redis Cluster's key slot, hash tags included. */
export function slot(key: string): number {
  let data = Buffer.from(key);
  const open = data.indexOf("{");
  if (open >= 0) {
    const close = data.indexOf("}", open + 1);
    if (close > open + 1) data = data.subarray(open + 1, close);
  }
  return crc16(data) % SLOTS;
}

/** The hash tag (without braces) of partition `index` of `queue`. */
export function tag(queue: string, index: number): string {
  if (index === 0) return queue;
  const offset = parseInt((index & 0x3fff).toString(2).padStart(14, "0").split("").reverse().join(""), 2);
  const target = (slot(queue) + offset) % SLOTS;
  for (let s = 0; ; s++) {
    const candidate = `${queue}#${index}.${s}`;
    if ((slot(candidate) + SLOTS - target) % SLOTS < 64) return candidate;
  }
}

const MASK64 = (1n << 64n) - 1n;

export function fnv1a64(data: Buffer): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of data) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & MASK64;
  return h;
}

export function jump(key: bigint, buckets: number): number {
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    key = (key * 2862933555777941757n + 1n) & MASK64;
    j = Math.trunc((b + 1) * (2 ** 31 / Number((key >> 33n) + 1n)));
  }
  return Math.max(b, 0);
}

/** The partition of a job with partition key `key`. */
export function partitionOf(key: string, partitions: number): number {
  return jump(fnv1a64(Buffer.from(key)), Math.max(partitions, 1));
}

/** The key names of one partition of a queue. */
export class QueueKeys {
  readonly base: string;
  readonly streams: string[];
  readonly stats: string;
  readonly dead: string;
  readonly delayed: string;
  readonly latency: string;
  readonly paused: string;
  readonly rate: string;
  readonly events: string;
  readonly stop: string;
  /** Tracked jobs that have not ended: written by producers that track jobs;
   * this client's workers only remove the records of jobs they end. */
  readonly live: string;
  readonly layout: string;
  /** The enqueue sequence and its epochs (docs/protocol.md, "Loss accounting"). */
  readonly seq: string;

  constructor(readonly prefix: string, readonly queue: string, readonly index = 0) {
    validateName("queue name", queue);
    validateName("key prefix", prefix);
    const base = `${prefix}:{${tag(queue, index)}}`;
    this.base = base;
    this.streams = PRIORITIES.map((p) => `${base}:${p}`);
    this.stats = `${base}:stats`;
    this.dead = `${base}:dead`;
    this.delayed = `${base}:delayed`;
    this.latency = `${base}:latency`;
    this.paused = `${base}:paused`;
    this.rate = `${base}:rate`;
    this.events = `${base}:events`;
    this.stop = `${base}:stop`;
    this.live = `${base}:live`;
    this.layout = `${base}:layout`;
    this.seq = `${base}:seq`;
  }

  /** The five keys every script takes first. */
  common(): string[] {
    return [this.stats, ...this.streams];
  }

  dedup(key: string): string {
    return `${this.base}:dedup:${key}`;
  }

  /** (key, type) of the keys a queue owns, for the wrong-type check. */
  typed(): [string, string][] {
    return [
      ...this.streams.map((s): [string, string] => [s, "stream"]),
      [this.stats, "hash"],
      [this.dead, "stream"],
      [this.delayed, "zset"],
    ];
  }
}

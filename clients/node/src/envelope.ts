/** The job envelope of docs/protocol.md, section 3: a MessagePack array by
 * position, led by its schema version, the user's payload nested as bytes. */
import { randomBytes } from "node:crypto";
import { decode, encode } from "@msgpack/msgpack";
// lz4js: pure JavaScript LZ4 block functions (no native build).
// eslint-disable-next-line @typescript-eslint/no-var-requires
const lz4 = require("lz4js");
import { DecodeError, PayloadTooLarge } from "./errors";

export const SCHEMA_VERSION = 1;
export const ENVELOPE_OVERHEAD = 1024;
export const DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20;

/** A time-ordered UUIDv7 in text form, as the Rust producer makes them. */
export function newJobId(): string {
  const bytes = randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) bytes[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export interface Envelope {
  version: number;
  id: string;
  name: string;
  attempt: number;
  maxAttempts: number;
  enqueuedUs: number;
  readyUs: number;
  timeoutMs: number | null;
  payload: Uint8Array;
  compressed: boolean;
  trace: string | null;
  group: string | null;
  parent: unknown[] | null;
}

export function encodeEnvelope(e: Envelope): Buffer {
  const fields: unknown[] = [
    e.version, e.id, e.name, e.attempt, e.maxAttempts, e.enqueuedUs, e.readyUs, e.timeoutMs,
    e.payload, e.compressed, e.trace,
  ];
  if (e.group !== null || e.parent !== null) fields.push(e.group ?? "");
  if (e.parent !== null) fields.push(e.parent);
  return Buffer.from(encode(fields));
}

export function decodeEnvelope(data: Uint8Array): Envelope {
  let f: unknown;
  try {
    f = decode(data);
  } catch (err) {
    throw new DecodeError(`envelope is not MessagePack: ${(err as Error).message}`);
  }
  if (!Array.isArray(f) || f.length < 11) throw new DecodeError("envelope is not a streamq envelope");
  if (typeof f[0] !== "number" || f[0] > SCHEMA_VERSION) {
    throw new DecodeError(`envelope schema version ${f[0]} is newer than this client reads (${SCHEMA_VERSION})`);
  }
  return {
    version: f[0], id: String(f[1]), name: String(f[2]), attempt: Number(f[3]),
    maxAttempts: Number(f[4]), enqueuedUs: Number(f[5]), readyUs: Number(f[6]),
    timeoutMs: f[7] === null || f[7] === undefined ? null : Number(f[7]),
    payload: f[8] as Uint8Array, compressed: Boolean(f[9]), trace: (f[10] as string | null) ?? null,
    group: f.length > 11 && f[11] ? String(f[11]) : null,
    parent: f.length > 12 ? (f[12] as unknown[]) : null,
  };
}

/** The user's payload, decompressed and decoded. */
export function payloadValue(e: Envelope, limit = DEFAULT_MAX_PAYLOAD_BYTES): unknown {
  let data = Buffer.from(e.payload);
  if (e.compressed) {
    if (data.length < 4) throw new DecodeError("compressed payload: no size");
    const size = data.readUInt32LE(0);
    if (size > limit) throw new DecodeError(`compressed payload expands to ${size} bytes, over the limit of ${limit}`);
    const out = Buffer.alloc(size);
    const written = lz4.decompressBlock(data, out, 4, data.length - 4, 0);
    if (written !== size) throw new DecodeError(`compressed payload: ${written} bytes, ${size} announced`);
    data = out;
  }
  try {
    return decode(data);
  } catch (err) {
    throw new DecodeError(`payload is not MessagePack: ${(err as Error).message}`);
  }
}

/** The payload's bytes, compressed when above `compressAbove` and smaller so. */
export function encodePayload(value: unknown, maxBytes: number, compressAbove: number | null): [Buffer, boolean] {
  const data = Buffer.from(encode(value));
  if (data.length > maxBytes) throw new PayloadTooLarge(`payload of ${data.length} bytes is over the limit of ${maxBytes}`);
  if (compressAbove !== null && data.length > compressAbove) {
    const block = Buffer.alloc(lz4.compressBound(data.length));
    const size = lz4.compressBlock(data, block, 0, data.length, new Uint32Array(1 << 16));
    if (size > 0 && size + 4 < data.length) {
      const packed = Buffer.alloc(4 + size);
      packed.writeUInt32LE(data.length, 0);
      block.copy(packed, 4, 0, size);
      return [packed, true];
    }
  }
  return [data, false];
}

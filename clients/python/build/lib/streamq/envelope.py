"""The job envelope of docs/protocol.md, section 3: a MessagePack array by
position, led by its schema version, the user's payload nested as bytes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import lz4.block
import msgpack

from .errors import PayloadTooLarge, StreamqError

SCHEMA_VERSION = 1
ENVELOPE_OVERHEAD = 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20


class DecodeError(StreamqError):
    """An envelope or payload that does not decode: the job is poison."""


def new_job_id() -> str:
    """A time-ordered UUIDv7 in text form, as the Rust producer makes them."""
    ms = time.time_ns() // 1_000_000
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | uuid.uuid4().int & ((1 << 76) - 1)
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC 4122 variant
    return str(uuid.UUID(int=value))


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Envelope:
    """One job as stored in its stream entry."""

    id: str
    name: str
    attempt: int
    max_attempts: int
    enqueued_us: int
    ready_us: int
    timeout_ms: Optional[int]
    payload: bytes
    compressed: bool = False
    trace: Optional[str] = None
    group: Optional[str] = None
    parent: Optional[list] = None
    version: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        fields = [
            self.version, self.id, self.name, self.attempt, self.max_attempts,
            self.enqueued_us, self.ready_us, self.timeout_ms, self.payload,
            self.compressed, self.trace,
        ]
        if self.group is not None or self.parent is not None:
            fields.append(self.group or "")
        if self.parent is not None:
            fields.append(self.parent)
        return msgpack.packb(fields, use_bin_type=True)

    @staticmethod
    def decode(data: bytes) -> "Envelope":
        try:
            fields = msgpack.unpackb(data, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"envelope is not MessagePack: {exc}") from exc
        if not isinstance(fields, list) or len(fields) < 11:
            raise DecodeError("envelope is not a streamq envelope")
        if not isinstance(fields[0], int) or fields[0] > SCHEMA_VERSION:
            raise DecodeError(
                f"envelope schema version {fields[0]} is newer than this client reads ({SCHEMA_VERSION})"
            )
        group = fields[11] if len(fields) > 11 and fields[11] else None
        parent = fields[12] if len(fields) > 12 else None
        return Envelope(
            version=fields[0], id=fields[1], name=fields[2], attempt=fields[3],
            max_attempts=fields[4], enqueued_us=fields[5], ready_us=fields[6],
            timeout_ms=fields[7], payload=bytes(fields[8]), compressed=bool(fields[9]),
            trace=fields[10], group=group, parent=parent,
        )

    def payload_value(self, limit: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
        """The user's payload, decompressed and decoded."""
        data = self.payload
        if self.compressed:
            if len(data) < 4:
                raise DecodeError("compressed payload: no size")
            size = int.from_bytes(data[:4], "little")
            if size > limit:
                raise DecodeError(f"compressed payload expands to {size} bytes, over the limit of {limit}")
            try:
                data = lz4.block.decompress(data)
            except Exception as exc:
                raise DecodeError(f"compressed payload: {exc}") from exc
        try:
            return msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise DecodeError(f"payload is not MessagePack: {exc}") from exc


def encode_payload(value: Any, max_bytes: int, compress_above: Optional[int]) -> tuple:
    """The payload's bytes and whether they are compressed."""
    data = msgpack.packb(value, use_bin_type=True)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"payload of {len(data)} bytes is over the limit of {max_bytes}")
    if compress_above is not None and len(data) > compress_above:
        packed = lz4.block.compress(data, store_size=True)
        if len(packed) < len(data):
            return packed, True
    return data, False

"""Every key name and partition rule of docs/protocol.md, section 2."""

from __future__ import annotations

import re

from .errors import InvalidName, UnknownPriority

PRIORITIES = ("critical", "high", "medium", "low")
GROUP = "streamq"
MAX_NAME_LEN = 128
LAYOUT_VERSION = 1
MAX_PARTITIONS = 1024
SLOTS = 16384
_BAD_NAME = re.compile(r"[{}\s\x00-\x1f\x7f]")


def priority_index(priority: str) -> int:
    """1 = critical .. 4 = low, as the scripts take it."""
    name = priority.strip().lower()
    if name not in PRIORITIES:
        raise UnknownPriority(f"unknown priority {priority!r}: use critical, high, medium or low")
    return PRIORITIES.index(name) + 1


def validate_name(what: str, name: str) -> None:
    if not name or len(name.encode()) > MAX_NAME_LEN or _BAD_NAME.search(name):
        raise InvalidName(
            f"invalid {what} {name!r}: 1 to {MAX_NAME_LEN} bytes, "
            "no braces, whitespace or control characters"
        )


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    """Redis Cluster's key slot, hash tags included."""
    data = key.encode()
    open_at = data.find(b"{")
    if open_at >= 0:
        close_at = data.find(b"}", open_at + 1)
        if close_at > open_at + 1:
            data = data[open_at + 1 : close_at]
    return _crc16(data) % SLOTS


def tag(queue: str, index: int) -> str:
    """The hash tag (without braces) of partition `index` of `queue`."""
    if index == 0:
        return queue
    offset = int(f"{index & 0x3FFF:014b}"[::-1], 2)
    target = (slot(queue) + offset) % SLOTS
    s = 0
    while True:
        candidate = f"{queue}#{index}.{s}"
        if (slot(candidate) + SLOTS - target) % SLOTS < 64:
            return candidate
        s += 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def jump(key: int, buckets: int) -> int:
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return max(b, 0)


def partition_of(key: str, partitions: int) -> int:
    """The partition of a job with partition key `key`."""
    return jump(fnv1a64(key.encode()), max(partitions, 1))


class QueueKeys:
    """The key names of one partition of a queue."""

    def __init__(self, prefix: str, queue: str, index: int = 0):
        validate_name("queue name", queue)
        validate_name("key prefix", prefix)
        self.prefix, self.queue, self.index = prefix, queue, index
        base = f"{prefix}:{{{tag(queue, index)}}}"
        self.base = base
        self.streams = [f"{base}:{p}" for p in PRIORITIES]
        self.stats = f"{base}:stats"
        self.dead = f"{base}:dead"
        self.delayed = f"{base}:delayed"
        self.latency = f"{base}:latency"
        self.paused = f"{base}:paused"
        self.rate = f"{base}:rate"
        self.events = f"{base}:events"
        self.stop = f"{base}:stop"
        # Tracked jobs that have not ended: written by producers that track
        # jobs; this client's workers only remove the records of jobs they end.
        self.live = f"{base}:live"
        self.layout = f"{base}:layout"
        # The enqueue sequence and its epochs (docs/protocol.md, "Loss accounting").
        self.seq = f"{base}:seq"

    def common(self) -> list:
        """The five keys every script takes first."""
        return [self.stats, *self.streams]

    def dedup(self, key: str) -> str:
        return f"{self.base}:dedup:{key}"

    def typed(self) -> list:
        """(key, type) of the keys a queue owns, for the wrong-type check."""
        return [(s, "stream") for s in self.streams] + [
            (self.stats, "hash"),
            (self.dead, "stream"),
            (self.delayed, "zset"),
        ]

"""The script calls of docs/protocol.md, section 4, as pure functions: the
KEYS and ARGV of each call, and what its reply means. The sync and asyncio
clients only add the I/O."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .envelope import Envelope
from .errors import QueueFull, UnexpectedReply
from .keys import GROUP, PRIORITIES, QueueKeys
from .ledger import Numbered

LUA_DIR = Path(__file__).parent / "lua"
OK, QUEUE_FULL, PAUSED, RATE_LIMITED = 0, 1, 2, 3
CHUNK_JOBS = 1000
CHUNK_BYTES = 4 << 20


def lua(name: str) -> bytes:
    """A packaged script's source (a byte-identical copy of lua/<name>.lua)."""
    return (LUA_DIR / f"{name}.lua").read_bytes()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Pending:
    """One job encoded and ready for `enqueue`."""

    id: str
    name: str
    priority: int
    due_ms: int
    envelope: bytes
    idempotency: Optional[tuple] = None  # (key, ttl ms)


def enqueue_call(keys: QueueKeys, jobs: list, max_backlog: int, by_name: bool,
                 known_epoch: str = "", events_cap: int = 0) -> tuple:
    """`enqueue`'s KEYS and ARGV; `known_epoch` is the partition's epoch the
    producer last saw ("" at first: see `ledger.Ledger`)."""
    extra = [keys.delayed, keys.events, keys.seq]
    argv: list = [max_backlog, now_ms(), int(by_name), 0, events_cap, known_epoch]
    for job in jobs:
        dedup, ttl = 0, 0
        if job.idempotency is not None:
            key = keys.dedup(job.idempotency[0])
            if key not in extra:
                extra.append(key)
            dedup, ttl = 5 + extra.index(key) + 1, job.idempotency[1]
        argv += [job.priority, job.due_ms, dedup, ttl, job.id, job.name, 0, job.envelope]
    return keys.common() + extra, argv


def enqueue_reply(jobs: list, reply: Any) -> tuple:
    """(ids, numbered, added) from an `enqueue` reply: each job's id, a
    duplicate's replaced by the id holding its key; how the jobs added were
    numbered (`ledger.Numbered`); and the jobs added, as (priority, id) in
    call order, duplicates left out."""
    status = reply[0]
    if status == QUEUE_FULL:
        raise QueueFull(int(reply[1]), int(reply[2]))
    if status != OK or len(reply) < 5:
        raise UnexpectedReply(f"enqueue answered status {status} ({len(reply)} fields)")
    ids = [job.id for job in jobs]
    duplicates = reply[1]
    for i in range(0, len(duplicates), 2):
        ids[int(duplicates[i]) - 1] = _text(duplicates[i + 1])
    skipped = {int(duplicates[i]) - 1 for i in range(0, len(duplicates), 2)}
    added = [(job.priority, job.id) for i, job in enumerate(jobs) if i not in skipped]
    numbered = Numbered(_text(reply[2]), int(reply[3]), int(reply[4]))
    return ids, numbered, added


def enqueue_ids(jobs: list, reply: Any) -> list:
    """Each job's id, duplicates replaced by the id holding their key."""
    return enqueue_reply(jobs, reply)[0]


def chunks(jobs: list) -> list:
    """Batches of at most 1,000 jobs or 4 MiB, one script call each."""
    out, current, size = [], [], 0
    for job in jobs:
        if current and (len(current) >= CHUNK_JOBS or size + len(job.envelope) > CHUNK_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(job)
        size += len(job.envelope)
    if current:
        out.append(current)
    return out


@dataclass
class Claimed:
    """A stream entry a worker claimed: fetched or reclaimed."""

    partition: int
    priority: int  # 1..4
    entry_id: str
    envelope: Optional[bytes]
    deliveries: int = 1


def fetch_call(keys: QueueKeys, consumer: str, count: int) -> tuple:
    return keys.common() + [keys.paused, keys.rate], [GROUP, consumer, count, 0, 1, now_ms()]


def parse_fetch(partition: int, reply: Any) -> tuple:
    """(status, claimed jobs, last delivered ids or None, wait ms)."""
    status = reply[0]
    if status == PAUSED:
        return PAUSED, [], None, 1000
    if status == RATE_LIMITED:
        return RATE_LIMITED, [], None, int(reply[1])
    if status != OK:
        raise UnexpectedReply(f"fetch answered status {status}")
    flat, last = reply[1], reply[2]
    jobs = [
        Claimed(partition, int(flat[i]), _text(flat[i + 1]), flat[i + 2])
        for i in range(0, len(flat), 3)
    ]
    return OK, jobs, ([_text(x) for x in last] if last else None), 0


def heartbeat_call(keys: QueueKeys, consumer: str, held: list) -> tuple:
    argv: list = [GROUP, consumer]
    for priority, entry_id in held:
        argv += [priority, entry_id]
    return keys.common() + [keys.stop], argv


def release_call(keys: QueueKeys, consumer: str, held: list) -> tuple:
    argv: list = [GROUP, consumer]
    for priority, entry_id in held:
        argv += [priority, entry_id]
    return keys.common(), argv


def bucket(us: int) -> int:
    return math.floor(4 * math.log2(max(us, 1)))


@dataclass
class Done:
    """A job that ran to completion, for `ack`."""

    claimed: Claimed
    job_id: str
    name: str
    wait_us: int
    run_us: int


def stream_id_order(entry_id: str) -> tuple:
    """A stream id `ms-seq` as numbers, for sorting; unparsable ids sort last."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq)
    except ValueError:
        return math.inf, math.inf


@dataclass
class NameSums:
    """One job name's share of an `ack` batch: what lua/ack.lua takes once
    per name instead of once per job."""

    name: str
    slot: int  # 1-based, the jobs' reference to this name
    reclaims: int = 0
    wait_sum: int = 0
    run_sum: int = 0
    wait: dict = field(default_factory=dict)  # runs per latency bucket
    run: dict = field(default_factory=dict)

    def add(self, d: Done) -> None:
        """Counts one run of the batch."""
        self.reclaims += max(d.claimed.deliveries - 1, 0)
        self.wait_sum += d.wait_us
        self.run_sum += d.run_us
        self.wait[bucket(d.wait_us)] = self.wait.get(bucket(d.wait_us), 0) + 1
        self.run[bucket(d.run_us)] = self.run.get(bucket(d.run_us), 0) + 1

    def args(self) -> list:
        """The name's arguments: name, reclaims, wait sum, run sum, then each
        histogram as its length and (bucket, runs) pairs."""
        out: list = [self.name, self.reclaims, self.wait_sum, self.run_sum]
        for histogram in (self.wait, self.run):
            out.append(len(histogram))
            for b in sorted(histogram):
                out += [b, histogram[b]]
        return out


def ack_call(keys: QueueKeys, consumer: str, done: list) -> tuple:
    """`ack`'s KEYS and ARGV (lua/ack.lua): the job count, three arguments per
    job (priority, entry id, name slot), sorted by priority then id for the
    script's ranged read, then each job name once with the batch's sums and
    histograms for it. Always per-name metrics, no events and no results, so
    no details section."""
    done = sorted(done, key=lambda d: (d.claimed.priority, stream_id_order(d.claimed.entry_id)))
    names: dict = {}
    argv: list = [GROUP, consumer, 1, 0, 0, now_ms(), len(done)]
    for d in done:
        if d.name not in names:
            names[d.name] = NameSums(d.name, len(names) + 1)
        sums = names[d.name]
        sums.add(d)
        argv += [d.claimed.priority, d.claimed.entry_id, sums.slot]
    argv.append(len(names))
    for sums in names.values():
        argv += sums.args()
    return keys.common() + [keys.latency, keys.events], argv


def retry_call(keys: QueueKeys, consumer: str, c: Claimed, env: Envelope, attempt: int,
               due_us: int, error: str) -> tuple:
    env.attempt, env.ready_us = attempt, due_us
    argv = [GROUP, consumer, c.entry_id, c.priority, due_us // 1000, env.encode(), env.name,
            c.deliveries - 1, 1, 0, env.id, attempt, error, now_ms()]
    return keys.common() + [keys.delayed, keys.events], argv


def dead_letter_call(keys: QueueKeys, consumer: str, c: Claimed, job_id: str, name: str,
                     attempts: int, error: str, failed_run: bool) -> tuple:
    argv = [GROUP, consumer, c.entry_id, c.priority, error, now_ms(), job_id, attempts, 0, name,
            int(failed_run), c.deliveries - 1, 1, 0]
    return keys.common() + [keys.dead, keys.events], argv


def reclaim_call(keys: QueueKeys, consumer: str, priority: int, lease_ms: int, cursor: str,
                 count: int) -> tuple:
    return keys.common(), [GROUP, consumer, priority, lease_ms, cursor, count]


def parse_reclaim(partition: int, priority: int, reply: Any) -> tuple:
    """(next cursor, claimed jobs, ids Redis deleted while pending)."""
    flat = reply[2]
    jobs = [
        Claimed(partition, priority, _text(flat[i]), flat[i + 1], int(flat[i + 2]))
        for i in range(0, len(flat), 3)
    ]
    return _text(reply[1]), jobs, [_text(x) for x in reply[3]]


def promote_call(keys: QueueKeys) -> tuple:
    return keys.common() + [keys.delayed], [now_ms(), 1000]


def retire_call(keys: QueueKeys, consumer: str) -> tuple:
    return keys.common(), [GROUP, consumer]


@dataclass
class Backoff:
    """Capped exponential retry delays with jitter, as the Rust worker's
    default: `base` doubling per attempt, at most `cap`, times [0.75, 1.25)."""

    base: float = 2.0
    cap: float = 3600.0
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        delay = min(self.cap, self.base * (2 ** max(attempt - 1, 0)))
        return delay * (0.75 + 0.5 * random.random()) if self.jitter else delay


@dataclass
class Stats:
    """A queue at a glance, summed over its partitions."""

    priorities: dict = field(default_factory=dict)
    delayed: int = 0
    dead_letters: int = 0
    counters: dict = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return sum(p["waiting"] for p in self.priorities.values())

    @property
    def in_flight(self) -> int:
        return sum(p["in_flight"] for p in self.priorities.values())

    def total(self, counter: str) -> int:
        """A counter summed over priorities: enqueued, completed, dead, ..."""
        return sum(self.counters.get(f"{counter}:{p}", 0) for p in PRIORITIES)


def stats_commands() -> list:
    """What `stats()` reads per partition, as (command, key-getter) pairs."""
    commands = []
    for i in range(4):
        commands.append(("XINFO_GROUPS", lambda k, i=i: k.streams[i]))
        commands.append(("XLEN", lambda k, i=i: k.streams[i]))
    commands += [("ZCARD", lambda k: k.delayed), ("XLEN", lambda k: k.dead),
                 ("HGETALL", lambda k: k.stats)]
    return commands


def add_stats(stats: Stats, replies: list) -> None:
    """Adds one partition's replies to `stats_commands()` into `stats`."""
    for i, name in enumerate(PRIORITIES):
        groups, length = replies[2 * i], replies[2 * i + 1]
        group = next((g for g in (groups or []) if _text(g.get("name", b"")) == GROUP), None)
        pending = int(group.get("pending") or 0) if group else 0
        # The lag is nil, or stale, once undelivered entries were deleted
        # (docs/protocol.md): it never exceeds what the stream holds.
        undelivered = max(int(length or 0) - pending, 0)
        lag = group.get("lag") if group else None
        p = stats.priorities.setdefault(name, {"length": 0, "waiting": 0, "in_flight": 0})
        p["length"] += int(length or 0)
        p["waiting"] += undelivered if lag is None else min(int(lag), undelivered)
        p["in_flight"] += pending
    stats.delayed += int(replies[8] or 0)
    stats.dead_letters += int(replies[9] or 0)
    for k, v in (replies[10] or {}).items():
        key = _text(k)
        try:
            stats.counters[key] = stats.counters.get(key, 0) + int(v)
        except ValueError:
            continue

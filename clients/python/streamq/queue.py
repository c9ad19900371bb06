"""A queue, synchronously: open it, enqueue one job or a batch, read stats."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import redis

from . import ledger, protocol
from .envelope import DEFAULT_MAX_PAYLOAD_BYTES, ENVELOPE_OVERHEAD, Envelope, encode_payload, new_job_id, now_us
from .errors import PayloadTooLarge, UnknownLayout, UnsupportedServer, WrongKeyType
from .keys import GROUP, LAYOUT_VERSION, MAX_PARTITIONS, QueueKeys, partition_of, priority_index

SCRIPTS = ("enqueue", "fetch", "ack", "heartbeat", "retry", "dead_letter", "reclaim",
           "promote", "release", "retire_consumer")


@dataclass
class Job:
    """A job to enqueue, with its options (the defaults of `Queue.enqueue`)."""

    payload: Any
    priority: str = "medium"
    name: str = ""
    delay: float = 0.0
    attempts: int = 3
    idempotency_key: Optional[str] = None
    idempotency_ttl: float = 24 * 3600.0
    partition_key: Optional[str] = None
    timeout_ms: Optional[int] = None


def server_version(hello: Any) -> tuple:
    """(server, (major, minor, patch)) from a HELLO reply."""
    if isinstance(hello, list):
        hello = dict(zip(hello[::2], hello[1::2]))
    info = {protocol._text(k): v for k, v in hello.items()}
    server = protocol._text(info.get("server", "redis"))
    version = tuple(int(x) for x in protocol._text(info.get("version", "0")).split(".")[:3])
    return server, version + (0,) * (3 - len(version))


def check_server(server: str, version: tuple) -> None:
    required = (7, 2, 0) if server == "valkey" else (7, 0, 0)
    if version < required:
        raise UnsupportedServer(
            f"{server} {'.'.join(map(str, version))} is too old: streamq needs "
            f"{'.'.join(map(str, required))} or newer"
        )


def partitions_from(layout: dict) -> int:
    """The partition count a layout record says; refuses unknown versions."""
    layout = {protocol._text(k): protocol._text(v) for k, v in (layout or {}).items()}
    if "partitions" not in layout:
        return 1
    if layout.get("version") != str(LAYOUT_VERSION):
        raise UnknownLayout(
            f"the queue's layout version is {layout.get('version')!r}; this client knows "
            f"{LAYOUT_VERSION}: upgrade it before using this queue"
        )
    count = int(layout["partitions"])
    if not 1 <= count <= MAX_PARTITIONS:
        raise UnknownLayout(f"the queue's layout says {count} partitions")
    return count


class QueueSettings:
    """What producers and workers of a queue share."""

    def __init__(self, name: str, prefix: str, max_payload_bytes: int,
                 compress_above: Optional[int], max_backlog: int):
        self.name, self.prefix = name, prefix
        self.max_payload_bytes = max_payload_bytes
        self.compress_above = compress_above
        self.max_backlog = max_backlog
        # Approximate MAXLEN of the events stream; 0 = no events. This client
        # keeps no events (docs/protocol.md, section 6): the scripts get 0,
        # and so does the loss report, unless this is raised.
        self.events_cap = 0

    def encode(self, job: Job) -> protocol.Pending:
        priority = priority_index(job.priority)
        data, compressed = encode_payload(job.payload, self.max_payload_bytes, self.compress_above)
        ready = now_us() + int(job.delay * 1_000_000)
        job_id = new_job_id()
        envelope = Envelope(
            id=job_id, name=job.name, attempt=0, max_attempts=max(job.attempts, 1),
            enqueued_us=now_us(), ready_us=ready, timeout_ms=job.timeout_ms, payload=data,
            compressed=compressed,
        ).encode()
        if len(envelope) > self.max_payload_bytes + ENVELOPE_OVERHEAD:
            raise PayloadTooLarge(f"envelope of {len(envelope)} bytes is over the limit")
        idempotency = None
        if job.idempotency_key is not None:
            idempotency = (job.idempotency_key, int(job.idempotency_ttl * 1000))
        due = ready // 1000 if job.delay > 0 else 0
        return protocol.Pending(job_id, job.name, priority, due, envelope, idempotency)


def partition_for(job: Job, partitions: int, round_robin: Iterator[int]) -> int:
    """The partition of `job`: by its partition key, else its idempotency
    key, else round-robin (docs/protocol.md, "Partitions")."""
    if partitions == 1:
        return 0
    key = job.partition_key if job.partition_key is not None else job.idempotency_key
    if key is not None:
        return partition_of(key, partitions)
    return next(round_robin) % partitions


def plan_batch(settings: QueueSettings, jobs: list, partitions: int, round_robin: Iterator[int]) -> list:
    """The `enqueue` calls of a batch: (partition, chunk, position of each
    pending job in `jobs`), one call per partition and per 1,000 jobs."""
    by_partition: dict = {}
    for position, job in enumerate(jobs):
        pending = settings.encode(job)
        by_partition.setdefault(partition_for(job, partitions, round_robin), []).append((position, pending))
    calls = []
    for partition, items in by_partition.items():
        positions = {id(p): pos for pos, p in items}
        for chunk in protocol.chunks([p for _, p in items]):
            calls.append((partition, chunk, [positions[id(p)] for p in chunk]))
    return calls


def enqueue_commands(settings: QueueSettings, partitions: list, ledgers: list, calls: list) -> tuple:
    """The `enqueue` script calls of `plan_batch`'s calls, as (keys, args),
    and the epoch each partition's calls name (its ledger's, read once per
    batch: every call of the batch is judged against it)."""
    named: dict = {}
    commands = []
    for partition, chunk, _ in calls:
        if partition not in named:
            named[partition] = ledgers[partition].epoch()
        commands.append(protocol.enqueue_call(
            partitions[partition], chunk, settings.max_backlog, True, named[partition],
            settings.events_cap,
        ))
    return commands, named


def finish_batch(calls: list, replies: list, count: int, named: dict, ledgers: list) -> tuple:
    """From the replies to `plan_batch`'s calls (an exception in place of a
    failed call's reply): (the jobs' ids in their order, what new epochs
    rolled back per partition, the first error). Every call that succeeded
    is recorded in its partition's ledger, whatever the others did."""
    ids: list = [None] * count
    rolled_back: dict = {}
    error = None
    for (partition, chunk, positions), reply in zip(calls, replies):
        try:
            if isinstance(reply, Exception):
                raise reply
            chunk_ids, numbered, added = protocol.enqueue_reply(chunk, reply)
        except Exception as exc:  # reported after the others are recorded
            error = error or exc
            continue
        for position, job_id in zip(positions, chunk_ids):
            ids[position] = job_id
        lost = ledgers[partition].record(named[partition], numbered, added)
        if lost is not None:
            rolled_back.setdefault(partition, []).append(lost)
    return ids, rolled_back, error


def report_rolled_back(client: Any, partitions: list, settings: QueueSettings, rolled_back: dict) -> None:
    """Reports what new epochs rolled back (`ledger.report_commands`): an
    error in the log naming the jobs, the `rolled_back:<priority>` counters
    and events. Best effort: a failure is logged, never raised (the enqueue
    that found the loss succeeded)."""
    for partition, lost in rolled_back.items():
        keys = partitions[partition]
        ledger.log_rolled_back(keys, lost)
        try:
            pipe = client.pipeline(transaction=False)
            for command in ledger.report_commands(keys, lost, settings.events_cap, protocol.now_ms()):
                pipe.execute_command(*command)
            pipe.execute()
        except Exception as exc:
            ledger.log_report_failed(keys, exc)


class Queue:
    """One queue on one Redis (or Valkey), used synchronously.

    Thread-safe: redis-py's connection pool serves every thread.
    """

    def __init__(self, client: redis.Redis, settings: QueueSettings, partitions: int):
        self.client = client
        self.settings = settings
        self.partitions = [QueueKeys(settings.prefix, settings.name, i) for i in range(partitions)]
        self.scripts = {name: client.register_script(protocol.lua(name)) for name in SCRIPTS}
        # Per partition: this handle's acknowledged jobs and the epoch it saw.
        self.ledgers = [ledger.Ledger() for _ in range(partitions)]
        self._round_robin = itertools.count(random.randrange(1 << 16))
        self._groups_ready = False

    @classmethod
    def open(cls, url: str, name: str, *, prefix: str = "streamq",
             max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
             compress_above: Optional[int] = None, max_backlog: int = 0) -> "Queue":
        """Connects, checks the server version and the queue's layout.

        Raises `UnsupportedServer`, `UnknownLayout`, `InvalidName`, or
        redis-py's connection errors.
        """
        client = redis.Redis.from_url(url)
        check_server(*server_version(client.execute_command("HELLO")))
        layout = client.hgetall(QueueKeys(prefix, name).layout)
        settings = QueueSettings(name, prefix, max_payload_bytes, compress_above, max_backlog)
        return cls(client, settings, partitions_from(layout))

    @property
    def name(self) -> str:
        return self.settings.name

    def close(self) -> None:
        self.client.close()

    def call(self, script: str, keys_and_args: tuple, client: Any = None) -> Any:
        keys, args = keys_and_args
        return self.scripts[script](keys=keys, args=args, client=client or self.client)

    def ensure_groups(self) -> None:
        """Checks key types and creates the consumer groups, once per handle."""
        if self._groups_ready:
            return
        for keys in self.partitions:
            pipe = self.client.pipeline(transaction=False)
            for key, _ in keys.typed():
                pipe.type(key)
            found = [protocol._text(t) for t in pipe.execute()]
            for (key, expected), kind in zip(keys.typed(), found):
                if kind not in ("none", expected):
                    raise WrongKeyType(f"key {key} holds a {kind}, not a {expected}")
            for stream, kind in zip(keys.streams, found):
                if kind == "stream" and any(
                    protocol._text(g["name"]) == GROUP for g in self.client.xinfo_groups(stream)
                ):
                    continue
                try:
                    self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
        self._groups_ready = True

    def enqueue(self, payload: Any, **options: Any) -> str:
        """Enqueues one job; returns its id (for a duplicate idempotency key,
        the id of the job holding the key). Options are `Job`'s fields."""
        return self.enqueue_batch([Job(payload, **options)])[0]

    def enqueue_batch(self, jobs: Iterable[Any], **defaults: Any) -> list:
        """Enqueues many jobs in one round trip (one script call per partition
        and per 1,000 jobs, pipelined); returns their ids in order. Items are
        `Job`s or bare payloads, which take `defaults` as options."""
        jobs = [j if isinstance(j, Job) else Job(j, **defaults) for j in jobs]
        if not jobs:
            return []
        self.ensure_groups()
        calls = plan_batch(self.settings, jobs, len(self.partitions), self._round_robin)
        commands, named = enqueue_commands(self.settings, self.partitions, self.ledgers, calls)
        pipe = self.client.pipeline(transaction=False)
        for keys_and_args in commands:
            self.call("enqueue", keys_and_args, client=pipe)
        replies = pipe.execute(raise_on_error=False)
        ids, rolled_back, error = finish_batch(calls, replies, len(jobs), named, self.ledgers)
        report_rolled_back(self.client, self.partitions, self.settings, rolled_back)
        if error is not None:
            raise error
        return ids

    def stats(self) -> protocol.Stats:
        """Waiting, in flight, delayed, dead letters and the counters, summed
        over partitions."""
        stats = protocol.Stats()
        for keys in self.partitions:
            pipe = self.client.pipeline(transaction=False)
            for command, key in protocol.stats_commands():
                if command == "XINFO_GROUPS":
                    pipe.xinfo_groups(key(keys))
                elif command == "XLEN":
                    pipe.xlen(key(keys))
                elif command == "ZCARD":
                    pipe.zcard(key(keys))
                else:
                    pipe.hgetall(key(keys))
            replies = pipe.execute(raise_on_error=False)
            replies = [None if isinstance(r, Exception) else r for r in replies]
            protocol.add_stats(stats, replies)
        return stats

    def dead_letters(self, count: int = 100) -> list:
        """The oldest dead letters of every partition, as dicts of their fields
        (`job`, `error`, `attempts`, ... and `e`, the envelope)."""
        letters = []
        for keys in self.partitions:
            for entry_id, fields in self.client.xrange(keys.dead, count=count):
                letter = {protocol._text(k): v for k, v in fields.items()}
                letter["id"] = protocol._text(entry_id)
                for text in ("job", "error", "attempts", "priority"):
                    if text in letter:
                        letter[text] = protocol._text(letter[text])
                letters.append(letter)
        return letters

"""A worker, synchronously: handler threads, lease heartbeats, retries with
backoff, dead letters, reclaim of stalled jobs and a graceful stop, exactly
as docs/protocol.md section 4 describes the consumer's duties."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import redis

from . import protocol
from .envelope import DecodeError, Envelope, now_us
from .errors import PermanentError
from .keys import PRIORITIES
from .queue import Queue

log = logging.getLogger("streamq")


def default_consumer_name() -> str:
    """`<host>-<pid>-<8 hex>`, unique per worker, as the Rust worker names itself."""
    return f"{socket.gethostname() or 'host'}-{os.getpid()}-{uuid.uuid4().hex[-8:]}"


def warn_live_records(queue: str) -> None:
    """Said once by a worker that finds the `live` hash at start."""
    log.warning("streamq: the producers of queue %s track jobs but this worker does not: it "
                "removes the records of the jobs it ends; use a Rust worker with track_jobs "
                "to keep their state readable", queue)


@dataclass
class JobContext:
    """What a handler gets: the job and a way to see a stop request."""

    id: str
    name: str
    payload: Any
    attempt: int  # 1 on the first run
    max_attempts: int
    priority: str
    stopped: threading.Event = field(default_factory=threading.Event)


@dataclass
class WorkerConfig:
    """How a worker runs; the defaults are the Rust worker's."""

    concurrency: int = 16
    lease: float = 30.0
    block: float = 5.0
    backoff: protocol.Backoff = field(default_factory=protocol.Backoff)
    max_deliveries: int = 5
    reclaim_interval: float = 5.0
    promote_interval: float = 0.25
    grace: float = 30.0
    consumer: Optional[str] = None


class Outcomes:
    """Counts of what the worker did, for its caller."""

    def __init__(self) -> None:
        self.completed = self.retried = self.dead_lettered = self.lost = self.reclaimed = 0


class Worker:
    """Runs `handler(job: JobContext)` for the queue's jobs until `stop()`.

    A handler's return ends the job completed; an exception retries it with
    backoff while attempts remain, then dead-letters it with the error;
    `PermanentError` dead-letters at once.
    """

    def __init__(self, queue: Queue, handler: Callable[[JobContext], Any],
                 config: Optional[WorkerConfig] = None):
        self.queue = queue
        self.handler = handler
        self.config = config or WorkerConfig()
        self.consumer = self.config.consumer or default_consumer_name()
        self.outcomes = Outcomes()
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        # Keyed by (partition, priority index, entry id): each priority's
        # stream numbers its entries itself, so ids repeat across priorities.
        self._held: set = set()
        self._running: dict = {}  # key as in _held -> JobContext
        # Partitions with a `live` hash: producers there track jobs, and only
        # the worker that ends a job removes its record (docs/protocol.md, 6).
        self._live: set = set()

    def stop(self) -> None:
        """Asks `run()` to stop: it stops claiming, lets running jobs finish
        (up to `grace`), hands back the rest and returns."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()

    def run(self) -> Outcomes:
        """Works jobs until `stop()`; returns what it did."""
        self.queue.ensure_groups()
        self._live = {p for p, keys in enumerate(self.queue.partitions)
                      if self.queue.client.exists(keys.live)}
        if self._live:
            warn_live_records(self.queue.settings.name)
        executor = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="streamq-job")
        threads = [
            threading.Thread(target=self._fetch_loop, args=(p, executor), daemon=True)
            for p in range(len(self.queue.partitions))
        ]
        threads.append(threading.Thread(target=self._maintenance, args=(executor,), daemon=True))
        for thread in threads:
            thread.start()
        self._stopping.wait()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + self.config.grace
        with self._lock:
            while self._running and time.monotonic() < deadline:
                self._lock.wait(0.05)
        executor.shutdown(wait=False)
        self._hand_back()
        for keys in self.queue.partitions:
            self.queue.call("retire_consumer", protocol.retire_call(keys, self.consumer))
        return self.outcomes

    # ---- claiming ----

    def _room(self) -> int:
        return self.config.concurrency - len(self._held)

    def _fetch_loop(self, partition: int, executor: ThreadPoolExecutor) -> None:
        keys = self.queue.partitions[partition]
        block_ms = max(int(min(self.config.block, 1.0) * 1000), 1)
        blocking = redis.Redis(connection_pool=redis.ConnectionPool(
            **{**self.queue.client.connection_pool.connection_kwargs,
               "socket_timeout": block_ms / 1000 + 10}))
        try:
            while not self._stopping.is_set():
                with self._lock:
                    while self._room() <= 0 and not self._stopping.is_set():
                        self._lock.wait()
                    room = self._room()
                if self._stopping.is_set():
                    return
                reply = self.queue.call("fetch", protocol.fetch_call(keys, self.consumer, room))
                status, jobs, last, wait_ms = protocol.parse_fetch(partition, reply)
                if status != protocol.OK:
                    self._stopping.wait(wait_ms / 1000)
                    continue
                self._dispatch(jobs, executor)
                if last is not None:
                    blocking.xread(dict(zip(keys.streams, last)), count=1, block=block_ms)
        except Exception:
            log.exception("streamq: the fetch loop of partition %d failed; stopping", partition)
            self.stop()
        finally:
            blocking.close()

    def _dispatch(self, jobs: list, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            for c in jobs:
                self._held.add(_key(c))
        for c in jobs:
            executor.submit(self._execute, c)

    # ---- running one job ----

    def _execute(self, c: protocol.Claimed) -> None:
        keys = self.queue.partitions[c.partition]
        try:
            self._run_one(keys, c)
        except Exception:
            log.exception("streamq: finishing job entry %s failed; its lease will expire "
                          "and another worker will run it", c.entry_id)
        finally:
            with self._lock:
                self._held.discard(_key(c))
                self._running.pop(_key(c), None)
                self._lock.notify_all()

    def _run_one(self, keys, c: protocol.Claimed) -> None:
        try:
            if c.envelope is None:
                raise DecodeError("the stream entry has no envelope")
            env = Envelope.decode(c.envelope)
        except DecodeError as exc:
            self._dead(keys, c, "", "", 0, f"unreadable job: {exc}", False)
            return
        if c.deliveries > self.config.max_deliveries:
            self._dead(keys, c, env.id, env.name, env.attempt + 1,
                       f"delivered {c.deliveries} times without finishing (max "
                       f"{self.config.max_deliveries}): each worker holding it died or hung",
                       False)
            return
        try:
            payload = env.payload_value(self.queue.settings.max_payload_bytes)
        except DecodeError as exc:
            self._dead(keys, c, env.id, env.name, env.attempt, f"unreadable payload: {exc}", False)
            return
        attempt = env.attempt + 1
        job = JobContext(env.id, env.name, payload, attempt, env.max_attempts, PRIORITIES[c.priority - 1])
        with self._lock:
            self._running[_key(c)] = job
        started = now_us()
        try:
            self.handler(job)
        except PermanentError as exc:
            self._dead(keys, c, env.id, env.name, attempt, str(exc), True)
            return
        except Exception as exc:  # the handler's failure, whatever its type
            if attempt >= env.max_attempts:
                error = f"failed {attempt} of {env.max_attempts} attempts, last: {exc}"
                self._dead(keys, c, env.id, env.name, attempt, error, True)
            else:
                due = now_us() + int(self.config.backoff.delay(attempt) * 1_000_000)
                call = protocol.retry_call(keys, self.consumer, c, env, attempt, due, str(exc))
                lost = self.queue.call("retry", call)[1]
                self._count(lost, "retried")
            return
        finished = now_us()
        done = protocol.Done(c, env.id, env.name, max(started - env.ready_us, 0), finished - started)
        lost = self.queue.call("ack", protocol.ack_call(keys, self.consumer, [done]))[1]
        self._count(lost, "completed")
        self._ended(c, env.id, lost)

    def _dead(self, keys, c, job_id, name, attempts, error, failed_run) -> None:
        call = protocol.dead_letter_call(keys, self.consumer, c, job_id, name, attempts, error, failed_run)
        lost = self.queue.call("dead_letter", call)[1]
        self._count(lost, "dead_lettered")
        self._ended(c, job_id, lost)

    def _ended(self, c: protocol.Claimed, job_id: str, lost: list) -> None:
        """Removes the `live` record of a job this worker ended (unless
        another worker held it by then). Best effort: a failure is logged."""
        if c.partition not in self._live or not job_id or lost:
            return
        try:
            self.queue.client.hdel(self.queue.partitions[c.partition].live, job_id)
        except Exception as exc:
            log.warning("streamq: could not remove the live record of job %s: %s", job_id, exc)

    def _count(self, lost: list, outcome: str) -> None:
        with self._lock:
            if lost:
                self.outcomes.lost += 1
            else:
                setattr(self.outcomes, outcome, getattr(self.outcomes, outcome) + 1)

    # ---- leases, delayed jobs, stalled jobs ----

    def _maintenance(self, executor: ThreadPoolExecutor) -> None:
        beat = self.config.lease / 3
        next_beat = next_reclaim = time.monotonic()
        try:
            while not self._stopping.wait(self.config.promote_interval):
                for keys in self.queue.partitions:
                    self.queue.call("promote", protocol.promote_call(keys))
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + beat
                if now >= next_reclaim:
                    self._reclaim(executor)
                    next_reclaim = now + self.config.reclaim_interval
        except Exception:
            log.exception("streamq: the maintenance loop failed; stopping")
            self.stop()

    def _held_by_partition(self) -> dict:
        with self._lock:
            held = list(self._held)
        by_partition: dict = {}
        for partition, priority, entry_id in held:
            by_partition.setdefault(partition, []).append((priority, entry_id))
        return by_partition

    def _heartbeat(self) -> None:
        for partition, held in self._held_by_partition().items():
            keys = self.queue.partitions[partition]
            _, _lost, stop = self.queue.call(
                "heartbeat", protocol.heartbeat_call(keys, self.consumer, held)
            )
            with self._lock:
                # Each as its stop request's member: "<priority index>:<entry id>".
                for member in stop or []:
                    priority, _, entry_id = protocol._text(member).partition(":")
                    job = self._running.get((partition, int(priority), entry_id))
                    if job is not None:
                        job.stopped.set()

    def _reclaim(self, executor: ThreadPoolExecutor) -> None:
        lease_ms = int(self.config.lease * 1000)
        for partition, keys in enumerate(self.queue.partitions):
            for priority in range(1, 5):
                cursor = "0-0"
                while True:
                    with self._lock:
                        room = self._room()
                    if room <= 0:
                        return
                    reply = self.queue.call("reclaim", protocol.reclaim_call(
                        keys, self.consumer, priority, lease_ms, cursor, room))
                    cursor, jobs, deleted = protocol.parse_reclaim(partition, priority, reply)
                    if deleted:
                        log.error("streamq: %d jobs of %s were deleted from Redis while pending "
                                  "(lost): %s", len(deleted), keys.streams[priority - 1], deleted)
                    self.outcomes.reclaimed += len(jobs)
                    self._dispatch(jobs, executor)
                    if cursor == "0-0":
                        break

    def _hand_back(self) -> None:
        for partition, held in self._held_by_partition().items():
            keys = self.queue.partitions[partition]
            self.queue.call("release", protocol.release_call(keys, self.consumer, held))


def _key(c: protocol.Claimed) -> tuple:
    """A held job's key: its partition, priority index and entry id."""
    return (c.partition, c.priority, c.entry_id)

"""The same client on asyncio (redis.asyncio): `Queue` and `Worker` with the
sync ones' behaviour, handlers as coroutines."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from typing import Any, Awaitable, Callable, Iterable, Optional

import redis.asyncio as aioredis
from redis import ResponseError

from . import ledger, protocol
from .envelope import DEFAULT_MAX_PAYLOAD_BYTES, DecodeError, Envelope, now_us
from .errors import PermanentError, WrongKeyType
from .keys import GROUP, PRIORITIES, QueueKeys
from .queue import (SCRIPTS, Job, QueueSettings, check_server, enqueue_commands, finish_batch,
                    partitions_from, plan_batch, server_version)
from .worker import JobContext, Outcomes, WorkerConfig, default_consumer_name, warn_live_records

log = logging.getLogger("streamq")


class Queue:
    """One queue, used from asyncio."""

    def __init__(self, client: aioredis.Redis, settings: QueueSettings, partitions: int):
        self.client = client
        self.settings = settings
        self.partitions = [QueueKeys(settings.prefix, settings.name, i) for i in range(partitions)]
        self.scripts = {name: client.register_script(protocol.lua(name)) for name in SCRIPTS}
        # Per partition: this handle's acknowledged jobs and the epoch it saw.
        self.ledgers = [ledger.Ledger() for _ in range(partitions)]
        self._round_robin = itertools.count(random.randrange(1 << 16))
        self._groups_ready = False

    @classmethod
    async def open(cls, url: str, name: str, *, prefix: str = "streamq",
                   max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                   compress_above: Optional[int] = None, max_backlog: int = 0) -> "Queue":
        """As the sync `Queue.open`."""
        client = aioredis.Redis.from_url(url)
        check_server(*server_version(await client.execute_command("HELLO")))
        layout = await client.hgetall(QueueKeys(prefix, name).layout)
        settings = QueueSettings(name, prefix, max_payload_bytes, compress_above, max_backlog)
        return cls(client, settings, partitions_from(layout))

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, script: str, keys_and_args: tuple, client: Any = None) -> Any:
        keys, args = keys_and_args
        return await self.scripts[script](keys=keys, args=args, client=client or self.client)

    async def ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for keys in self.partitions:
            found = [protocol._text(await self.client.type(k)) for k, _ in keys.typed()]
            for (key, expected), kind in zip(keys.typed(), found):
                if kind not in ("none", expected):
                    raise WrongKeyType(f"key {key} holds a {kind}, not a {expected}")
            for stream, kind in zip(keys.streams, found):
                if kind == "stream" and any(
                    protocol._text(g["name"]) == GROUP for g in await self.client.xinfo_groups(stream)
                ):
                    continue
                try:
                    await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
        self._groups_ready = True

    async def enqueue(self, payload: Any, **options: Any) -> str:
        return (await self.enqueue_batch([Job(payload, **options)]))[0]

    async def enqueue_batch(self, jobs: Iterable[Any], **defaults: Any) -> list:
        """As the sync `Queue.enqueue_batch`: one pipelined round trip."""
        jobs = [j if isinstance(j, Job) else Job(j, **defaults) for j in jobs]
        if not jobs:
            return []
        await self.ensure_groups()
        calls = plan_batch(self.settings, jobs, len(self.partitions), self._round_robin)
        commands, named = enqueue_commands(self.settings, self.partitions, self.ledgers, calls)
        pipe = self.client.pipeline(transaction=False)
        for keys_and_args in commands:
            await self.call("enqueue", keys_and_args, client=pipe)
        replies = await pipe.execute(raise_on_error=False)
        ids, rolled_back, error = finish_batch(calls, replies, len(jobs), named, self.ledgers)
        await self._report_rolled_back(rolled_back)
        if error is not None:
            raise error
        return ids

    async def _report_rolled_back(self, rolled_back: dict) -> None:
        """As the sync queue's `report_rolled_back`: logged, counted, best effort."""
        for partition, lost in rolled_back.items():
            keys = self.partitions[partition]
            ledger.log_rolled_back(keys, lost)
            try:
                pipe = self.client.pipeline(transaction=False)
                for command in ledger.report_commands(keys, lost, self.settings.events_cap,
                                                      protocol.now_ms()):
                    pipe.execute_command(*command)
                await pipe.execute()
            except Exception as exc:
                ledger.log_report_failed(keys, exc)

    async def stats(self) -> protocol.Stats:
        stats = protocol.Stats()
        for keys in self.partitions:
            pipe = self.client.pipeline(transaction=False)
            for command, key in protocol.stats_commands():
                {"XINFO_GROUPS": pipe.xinfo_groups, "XLEN": pipe.xlen, "ZCARD": pipe.zcard,
                 "HGETALL": pipe.hgetall}[command](key(keys))
            replies = await pipe.execute(raise_on_error=False)
            protocol.add_stats(stats, [None if isinstance(r, Exception) else r for r in replies])
        return stats


class Worker:
    """Runs `await handler(job)` for the queue's jobs until `stop()`."""

    def __init__(self, queue: Queue, handler: Callable[[JobContext], Awaitable[Any]],
                 config: Optional[WorkerConfig] = None):
        self.queue, self.handler = queue, handler
        self.config = config or WorkerConfig()
        self.consumer = self.config.consumer or default_consumer_name()
        self.outcomes = Outcomes()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        # Keyed by (partition, priority index, entry id): each priority's
        # stream numbers its entries itself, so ids repeat across priorities.
        self._held: set = set()
        self._tasks: dict = {}
        self._live: set = set()  # partitions with a `live` hash, as the sync worker's

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()

    async def run(self) -> Outcomes:
        await self.queue.ensure_groups()
        self._live = {p for p, keys in enumerate(self.queue.partitions)
                      if await self.queue.client.exists(keys.live)}
        if self._live:
            warn_live_records(self.queue.settings.name)
        loops = [asyncio.create_task(self._fetch_loop(p)) for p in range(len(self.queue.partitions))]
        loops.append(asyncio.create_task(self._maintenance()))
        await self._stopping.wait()
        await asyncio.gather(*loops, return_exceptions=True)
        running = list(self._tasks.values())
        if running:
            await asyncio.wait(running, timeout=self.config.grace)
        for key, task in list(self._tasks.items()):
            task.cancel()
        for partition, entries in self._held_by_partition().items():
            keys = self.queue.partitions[partition]
            await self.queue.call("release", protocol.release_call(keys, self.consumer, entries))
        for keys in self.queue.partitions:
            await self.queue.call("retire_consumer", protocol.retire_call(keys, self.consumer))
        return self.outcomes

    def _room(self) -> int:
        return self.config.concurrency - len(self._held)

    async def _fetch_loop(self, partition: int) -> None:
        keys = self.queue.partitions[partition]
        block_ms = max(int(min(self.config.block, 1.0) * 1000), 1)
        blocking = aioredis.Redis(connection_pool=aioredis.ConnectionPool(
            **{**self.queue.client.connection_pool.connection_kwargs,
               "socket_timeout": block_ms / 1000 + 10}))
        try:
            while not self._stopping.is_set():
                while self._room() <= 0 and not self._stopping.is_set():
                    self._changed.clear()
                    await self._changed.wait()
                if self._stopping.is_set():
                    return
                reply = await self.queue.call("fetch", protocol.fetch_call(keys, self.consumer, self._room()))
                status, jobs, last, wait_ms = protocol.parse_fetch(partition, reply)
                if status != protocol.OK:
                    try:
                        await asyncio.wait_for(self._stopping.wait(), wait_ms / 1000)
                    except asyncio.TimeoutError:
                        pass
                    continue
                self._dispatch(jobs)
                if last is not None:
                    await blocking.xread(dict(zip(keys.streams, last)), count=1, block=block_ms)
        except Exception:
            log.exception("streamq: the fetch loop of partition %d failed; stopping", partition)
            self.stop()
        finally:
            await blocking.aclose()

    def _dispatch(self, jobs: list) -> None:
        for c in jobs:
            key = (c.partition, c.priority, c.entry_id)
            self._held.add(key)
            self._tasks[key] = asyncio.create_task(self._execute(c))

    async def _execute(self, c: protocol.Claimed) -> None:
        key = (c.partition, c.priority, c.entry_id)
        try:
            await self._run_one(self.queue.partitions[c.partition], c)
        except asyncio.CancelledError:
            return  # stopped after the grace period: handed back by run()
        except Exception:
            log.exception("streamq: finishing job entry %s failed; its lease will expire", c.entry_id)
        self._held.discard(key)
        self._tasks.pop(key, None)
        self._changed.set()

    async def _run_one(self, keys: QueueKeys, c: protocol.Claimed) -> None:
        try:
            if c.envelope is None:
                raise DecodeError("the stream entry has no envelope")
            env = Envelope.decode(c.envelope)
        except DecodeError as exc:
            return await self._dead(keys, c, "", "", 0, f"unreadable job: {exc}", False)
        if c.deliveries > self.config.max_deliveries:
            return await self._dead(keys, c, env.id, env.name, env.attempt + 1,
                                    f"delivered {c.deliveries} times without finishing (max "
                                    f"{self.config.max_deliveries}): each worker holding it died or hung",
                                    False)
        try:
            payload = env.payload_value(self.queue.settings.max_payload_bytes)
        except DecodeError as exc:
            return await self._dead(keys, c, env.id, env.name, env.attempt, f"unreadable payload: {exc}", False)
        attempt = env.attempt + 1
        job = JobContext(env.id, env.name, payload, attempt, env.max_attempts, PRIORITIES[c.priority - 1])
        started = now_us()
        try:
            await self.handler(job)
        except PermanentError as exc:
            return await self._dead(keys, c, env.id, env.name, attempt, str(exc), True)
        except Exception as exc:  # the handler's failure, whatever its type
            if attempt >= env.max_attempts:
                error = f"failed {attempt} of {env.max_attempts} attempts, last: {exc}"
                return await self._dead(keys, c, env.id, env.name, attempt, error, True)
            due = now_us() + int(self.config.backoff.delay(attempt) * 1_000_000)
            call = protocol.retry_call(keys, self.consumer, c, env, attempt, due, str(exc))
            return self._count((await self.queue.call("retry", call))[1], "retried")
        done = protocol.Done(c, env.id, env.name, max(started - env.ready_us, 0), now_us() - started)
        lost = (await self.queue.call("ack", protocol.ack_call(keys, self.consumer, [done])))[1]
        self._count(lost, "completed")
        await self._ended(c, env.id, lost)

    async def _dead(self, keys, c, job_id, name, attempts, error, failed_run) -> None:
        call = protocol.dead_letter_call(keys, self.consumer, c, job_id, name, attempts, error, failed_run)
        lost = (await self.queue.call("dead_letter", call))[1]
        self._count(lost, "dead_lettered")
        await self._ended(c, job_id, lost)

    async def _ended(self, c: protocol.Claimed, job_id: str, lost: list) -> None:
        """As the sync worker's: removes an ended job's `live` record."""
        if c.partition not in self._live or not job_id or lost:
            return
        try:
            await self.queue.client.hdel(self.queue.partitions[c.partition].live, job_id)
        except Exception as exc:
            log.warning("streamq: could not remove the live record of job %s: %s", job_id, exc)

    def _count(self, lost: list, outcome: str) -> None:
        if lost:
            self.outcomes.lost += 1
        else:
            setattr(self.outcomes, outcome, getattr(self.outcomes, outcome) + 1)

    async def _maintenance(self) -> None:
        next_beat = next_reclaim = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.config.promote_interval)
                    return
                except asyncio.TimeoutError:
                    pass
                for keys in self.queue.partitions:
                    await self.queue.call("promote", protocol.promote_call(keys))
                now = time.monotonic()
                if now >= next_beat:
                    await self._heartbeat()
                    next_beat = now + self.config.lease / 3
                if now >= next_reclaim:
                    await self._reclaim()
                    next_reclaim = now + self.config.reclaim_interval
        except Exception:
            log.exception("streamq: the maintenance loop failed; stopping")
            self.stop()

    def _held_by_partition(self) -> dict:
        held: dict = {}
        for partition, priority, entry_id in self._held:
            held.setdefault(partition, []).append((priority, entry_id))
        return held

    async def _heartbeat(self) -> None:
        for partition, entries in self._held_by_partition().items():
            keys = self.queue.partitions[partition]
            await self.queue.call("heartbeat", protocol.heartbeat_call(keys, self.consumer, entries))

    async def _reclaim(self) -> None:
        lease_ms = int(self.config.lease * 1000)
        for partition, keys in enumerate(self.queue.partitions):
            for priority in range(1, 5):
                cursor = "0-0"
                while self._room() > 0:
                    reply = await self.queue.call("reclaim", protocol.reclaim_call(
                        keys, self.consumer, priority, lease_ms, cursor, self._room()))
                    cursor, jobs, deleted = protocol.parse_reclaim(partition, priority, reply)
                    if deleted:
                        log.error("streamq: %d jobs were deleted from Redis while pending (lost): %s",
                                  len(deleted), deleted)
                    self.outcomes.reclaimed += len(jobs)
                    self._dispatch(jobs)
                    if cursor == "0-0":
                        break

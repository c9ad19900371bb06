"""The Python client against a private redis-server: enqueue, work, retry,
dead-letter, reclaim, stop, and the refusals."""

import threading
import time

import pytest
import redis

import streamq
from streamq import protocol
from streamq.envelope import Envelope
from conftest import eventually


def start(worker):
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def fast(**overrides):
    settings = dict(concurrency=1, lease=30.0, block=0.2, promote_interval=0.02,
                    reclaim_interval=0.05, grace=5.0, backoff=streamq.Backoff(0.01, 0.05, False))
    settings.update(overrides)
    return streamq.WorkerConfig(**settings)


def test_jobs_run_once_most_urgent_first(server):
    queue = streamq.Queue.open(server.url, "jobs")
    priorities = ["low", "medium", "high", "critical"]
    ids = queue.enqueue_batch([streamq.Job({"n": i}, priority=priorities[i % 4]) for i in range(40)])
    assert len(set(ids)) == 40
    assert queue.stats().waiting == 40
    seen = []
    worker = streamq.Worker(queue, lambda job: seen.append((job.priority, job.payload["n"])), fast())
    thread = start(worker)
    eventually("40 jobs done", lambda: len(seen) == 40)
    worker.stop()
    thread.join()
    assert sorted(n for _, n in seen) == list(range(40)), "each exactly once"
    ranks = [streamq.PRIORITIES.index(p) for p, _ in seen]
    assert ranks == sorted(ranks), "most urgent first"
    stats = queue.stats()
    assert (stats.total("completed"), stats.waiting, stats.in_flight) == (40, 0, 0)


def test_a_failing_job_is_retried_then_dead_lettered_with_its_error(server):
    queue = streamq.Queue.open(server.url, "jobs")
    job_id = queue.enqueue({"x": 1}, name="flaky", attempts=3)
    attempts = []

    def handler(job):
        attempts.append(job.attempt)
        raise RuntimeError("disk on fire")

    worker = streamq.Worker(queue, handler, fast())
    thread = start(worker)
    eventually("the dead letter", lambda: queue.stats().dead_letters == 1)
    worker.stop()
    thread.join()
    assert attempts == [1, 2, 3]
    [letter] = queue.dead_letters()
    assert letter["job"] == job_id
    assert letter["error"] == "failed 3 of 3 attempts, last: disk on fire"
    assert queue.stats().total("retried") == 2


def test_a_permanent_error_dead_letters_at_once(server):
    queue = streamq.Queue.open(server.url, "jobs")
    queue.enqueue(1, attempts=5)

    def handler(job):
        raise streamq.PermanentError("bad input")

    worker = streamq.Worker(queue, handler, fast())
    thread = start(worker)
    eventually("the dead letter", lambda: queue.stats().dead_letters == 1)
    worker.stop()
    thread.join()
    assert queue.dead_letters()[0]["error"] == "bad input"


def test_a_stalled_job_is_reclaimed_by_another_worker(server):
    queue = streamq.Queue.open(server.url, "jobs")
    job_id = queue.enqueue("stalled")
    # A worker that claimed the job and died: it never renews its lease.
    keys = queue.partitions[0]
    reply = queue.call("fetch", protocol.fetch_call(keys, "dead-worker", 1))
    assert len(reply[1]) == 3
    seen = []
    worker = streamq.Worker(queue, lambda job: seen.append(job.id), fast(lease=0.3))
    thread = start(worker)
    eventually("the reclaimed job to run", lambda: seen == [job_id])
    worker.stop()
    thread.join()
    assert queue.stats().total("reclaimed") == 1
    assert queue.stats().total("completed") == 1


def test_stop_finishes_the_running_job_and_hands_nothing_back_twice(server):
    queue = streamq.Queue.open(server.url, "jobs")
    queue.enqueue_batch(range(3))
    started, release = threading.Event(), threading.Event()
    done = []

    def handler(job):
        started.set()
        release.wait(10)
        done.append(job.payload)

    worker = streamq.Worker(queue, handler, fast())
    thread = start(worker)
    assert started.wait(10)
    worker.stop()
    release.set()
    thread.join()
    assert len(done) == 1, "the running job finished; no other started"
    stats = queue.stats()
    assert (stats.waiting, stats.in_flight, stats.total("completed")) == (2, 0, 1)


def test_compressed_payloads_and_idempotency_keys(server):
    queue = streamq.Queue.open(server.url, "jobs", compress_above=256)
    big = {"text": "x" * 4096}
    first = queue.enqueue(big, idempotency_key="alert-1")
    again = queue.enqueue({"other": 1}, idempotency_key="alert-1")
    assert first == again, "a duplicate gets the first job's id"
    entries = queue.client.xrange(queue.partitions[0].streams[2])
    assert len(entries) == 1
    envelope = Envelope.decode(entries[0][1][b"e"])
    assert envelope.compressed and len(envelope.payload) < 4096
    assert envelope.payload_value() == big


def test_refusals_are_typed(server):
    with pytest.raises(streamq.InvalidName):
        streamq.Queue.open(server.url, "bad name")
    queue = streamq.Queue.open(server.url, "jobs", max_payload_bytes=100)
    with pytest.raises(streamq.UnknownPriority):
        queue.enqueue(1, priority="urgent")
    with pytest.raises(streamq.PayloadTooLarge):
        queue.enqueue("x" * 200)
    client = redis.Redis(port=server.port)
    client.set("streamq:{taken}:high", "a string")
    with pytest.raises(streamq.WrongKeyType):
        streamq.Queue.open(server.url, "taken").enqueue(1)
    client.hset("streamq:{future}:layout", mapping={"partitions": 2, "version": 2})
    with pytest.raises(streamq.UnknownLayout):
        streamq.Queue.open(server.url, "future")
    full = streamq.Queue.open(server.url, "small", max_backlog=2)
    full.enqueue_batch([1, 2])
    with pytest.raises(streamq.QueueFull):
        full.enqueue(3)
    assert full.stats().waiting == 2, "nothing half-written"


def test_partitioned_queues_route_by_key(server):
    client = redis.Redis(port=server.port)
    client.hset("streamq:{tenants}:layout", mapping={"partitions": 4, "version": 1})
    queue = streamq.Queue.open(server.url, "tenants")
    assert len(queue.partitions) == 4
    queue.enqueue_batch([streamq.Job(i, partition_key="acme") for i in range(5)])
    where = streamq.partition_of("acme", 4)
    lengths = [client.xlen(k.streams[2]) for k in queue.partitions]
    assert lengths[where] == 5 and sum(lengths) == 5
    seen = []
    worker = streamq.Worker(queue, lambda job: seen.append(job.payload), fast())
    thread = start(worker)
    eventually("every partition's jobs done", lambda: len(seen) == 5)
    worker.stop()
    thread.join()
    assert sorted(seen) == list(range(5))


def test_the_asyncio_client_does_the_same(server):
    import asyncio

    import streamq.aio

    async def scenario():
        queue = await streamq.aio.Queue.open(server.url, "jobs", compress_above=64)
        ids = await queue.enqueue_batch(
            [streamq.Job({"n": i, "pad": "y" * 100}, priority=streamq.PRIORITIES[i % 4]) for i in range(12)]
            + [streamq.Job({"n": 99}, name="bad", attempts=2)]
        )
        assert len(set(ids)) == 13
        seen = []

        async def handler(job):
            if job.name == "bad":
                raise ValueError("no")
            seen.append((job.priority, job.payload["n"]))

        worker = streamq.aio.Worker(queue, handler, fast())
        run = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while len(seen) < 12 or (await queue.stats()).dead_letters < 1:
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)
        worker.stop()
        await run
        ranks = [streamq.PRIORITIES.index(p) for p, _ in seen]
        assert ranks == sorted(ranks)
        assert sorted(n for _, n in seen) == list(range(12))
        stats = await queue.stats()
        assert (stats.total("completed"), stats.dead_letters, stats.in_flight) == (12, 1, 0)
        await queue.close()

    asyncio.run(scenario())


def test_held_jobs_with_the_same_entry_id_in_two_priorities_keep_their_leases(server):
    # Each priority's stream numbers its entries itself: one batch gives
    # critical and high entries of the same ids. Finishing a critical job
    # must not stop the lease of its high twin, nor may any lease lapse.
    queue = streamq.Queue.open(server.url, "twins")
    jobs = [streamq.Job(i, priority=p) for i in range(20) for p in ("critical", "high")]
    queue.enqueue_batch(jobs)
    keys = queue.partitions[0]
    critical_ids = {e[0] for e in queue.client.xrange(keys.streams[0])}
    high_ids = {e[0] for e in queue.client.xrange(keys.streams[1])}
    assert critical_ids & high_ids, "the batch should give both streams the same ids"
    release = threading.Event()
    seen = []

    def handler(job):
        seen.append(job.id)
        if job.priority == "high":
            release.wait(30)

    worker = streamq.Worker(queue, handler, fast(concurrency=40, lease=0.9))
    thread = start(worker)
    eventually("the critical jobs done", lambda: queue.stats().total("completed") == 20)
    acked = time.monotonic()

    def renewed_since_the_acks():
        pending = queue.client.xpending_range(keys.streams[1], protocol.GROUP, "-", "+", 100)
        since_ms = (time.monotonic() - acked) * 1000
        return len(pending) == 20 and all(
            p["time_since_delivered"] < since_ms and p["times_delivered"] == 1 for p in pending)

    eventually("every high job renewed since the acks", renewed_since_the_acks)
    release.set()
    eventually("all done", lambda: queue.stats().total("completed") == 40)
    worker.stop()
    thread.join()
    assert sorted(seen) == sorted(set(seen)), "no job ran twice"


# Producers that track jobs (the Rust crate's `track_jobs`) write a record per
# job into the `live` hash; only the worker that ends a job removes it, so a
# worker that finds the hash at start removes the records of the jobs it ends
# (docs/protocol.md, section 6). A retried job has not ended: its record stays.
OTHER_JOB = ("0190b2a0-0000-7000-8000-000000000001", "3 1-0 elsewhere")


def tracked_jobs():
    return [streamq.Job("ok", name="done"), streamq.Job("bad", name="dead", attempts=1),
            streamq.Job("bad", name="later", attempts=2)]


def write_live_records(server, keys, ids):
    """Writes the records a tracking producer would have written for `ids`
    (medium jobs, waiting in their stream), and one of a job this worker
    never sees; returns a function reading the `live` hash back."""
    client = redis.Redis(port=server.port)
    entries = [entry.decode() for entry, _ in client.xrange(keys.streams[2])]
    names = [job.name for job in tracked_jobs()]
    records = {job_id: f"3 {entry} {name}" for job_id, entry, name in zip(ids, entries, names)}
    client.hset(keys.live, mapping={**records, OTHER_JOB[0]: OTHER_JOB[1]})
    return lambda: {k.decode(): v.decode() for k, v in client.hgetall(keys.live).items()}


def fail_unless_done(job):
    if job.name != "done":
        raise RuntimeError("no")


def test_a_worker_removes_the_live_records_of_the_jobs_it_ends(server, caplog):
    queue = streamq.Queue.open(server.url, "tracked")
    done, dead, later = queue.enqueue_batch(tracked_jobs())
    live = write_live_records(server, queue.partitions[0], [done, dead, later])
    record_of_later = live()[later]
    worker = streamq.Worker(queue, fail_unless_done, fast(backoff=streamq.Backoff(60.0, 60.0, False)))
    thread = start(worker)
    eventually("one job completed, one dead-lettered, one retried", lambda: (
        worker.outcomes.completed, worker.outcomes.dead_lettered, worker.outcomes.retried) == (1, 1, 1))
    worker.stop()
    thread.join()
    assert live() == {later: record_of_later, OTHER_JOB[0]: OTHER_JOB[1]}, \
        "the ended jobs' records are gone, no other"
    assert "removes the records of the jobs it ends" in caplog.text


def test_the_asyncio_worker_removes_the_live_records_of_the_jobs_it_ends(server, caplog):
    import asyncio

    import streamq.aio

    async def scenario():
        queue = await streamq.aio.Queue.open(server.url, "tracked")
        done, dead, later = await queue.enqueue_batch(tracked_jobs())
        live = write_live_records(server, queue.partitions[0], [done, dead, later])

        async def handler(job):
            fail_unless_done(job)

        worker = streamq.aio.Worker(queue, handler, fast(backoff=streamq.Backoff(60.0, 60.0, False)))
        run = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while (worker.outcomes.completed, worker.outcomes.dead_lettered, worker.outcomes.retried) != (1, 1, 1):
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)
        worker.stop()
        await run
        await queue.close()
        assert set(live()) == {later, OTHER_JOB[0]}

    asyncio.run(scenario())
    assert "removes the records of the jobs it ends" in caplog.text


def test_a_failed_live_record_removal_is_logged_and_the_job_stays_completed(server, caplog):
    queue = streamq.Queue.open(server.url, "tracked")
    job_id = queue.enqueue("ok")
    client = redis.Redis(port=server.port)
    client.hset(queue.partitions[0].live, job_id, "3 1-0 ")
    runs = []

    def handler(job):
        runs.append(job.id)
        client.set(queue.partitions[0].live, "not a hash")  # HDEL now fails

    worker = streamq.Worker(queue, handler, fast())
    thread = start(worker)
    eventually("the job completed", lambda: queue.stats().total("completed") == 1)
    eventually("the failure logged", lambda: "could not remove the live record" in caplog.text)
    worker.stop()
    thread.join()
    assert runs == [job_id]
    assert (worker.outcomes.completed, worker.outcomes.lost) == (1, 0)
    assert queue.stats().in_flight == 0

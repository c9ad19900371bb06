"""Loss accounting (docs/protocol.md, "Loss accounting"): the ledger on its
own, as the Rust unit tests of src/producer/ledger.rs; then against a private
redis-server whose sequence is rewritten the way a failover leaves it."""

import asyncio
import logging
import time

import redis

import streamq
import streamq.aio
from streamq.keys import QueueKeys
from streamq.ledger import RECENT_JOBS, Ledger, Numbered, RolledBack, report_commands

HIGH, LOW = 2, 4


def ids(n):
    return [f"job-{i}" for i in range(n)]


def reply(epoch, first, kept):
    return Numbered(epoch, first, kept)


def add(ledger, numbered, jobs):
    named = ledger.epoch()
    return ledger.record(named, numbered, [(HIGH, job_id) for job_id in jobs])


# The ledger on its own (the Rust crate's unit tests, one for one).


def test_a_new_epoch_names_the_jobs_numbered_after_what_it_kept():
    ledger = Ledger()
    jobs = ids(5)
    assert add(ledger, reply("a/1", 1, -1), jobs[:3]) is None
    assert add(ledger, reply("a/1", 4, -1), jobs[3:]) is None
    # The new server had numbers up to 3: jobs 4 and 5 are gone.
    lost = add(ledger, reply("b/2", 4, 3), [])
    assert lost == RolledBack([(HIGH, jobs[3]), (HIGH, jobs[4])], 0)
    assert ledger.epoch() == "b/2"


def test_a_new_epoch_that_kept_everything_reports_nothing():
    ledger = Ledger()
    add(ledger, reply("a/1", 1, -1), ids(3))
    assert add(ledger, reply("b/2", 4, 3), ["job-3"]) is None
    # Still judged later: a next epoch that kept 3 loses job 4 alone.
    assert add(ledger, reply("c/3", 5, 3), []) == RolledBack([(HIGH, "job-3")], 0)


def test_a_deleted_sequence_is_not_a_loss():
    ledger = Ledger()
    add(ledger, reply("a/1", 1, -1), ids(3))
    assert add(ledger, reply("a/9", 1, -2), ids(1)) is None
    # Nothing from before the deletion is judged later.
    assert add(ledger, reply("b/10", 2, 1), []) is None
    assert add(ledger, reply("c/11", 2, 0), []) == RolledBack([(HIGH, "job-0")], 0), \
        "only the job added after the deletion"


def test_a_late_reply_from_the_old_epoch_is_judged_by_what_it_kept():
    ledger = Ledger()
    add(ledger, reply("a/1", 1, -1), ids(2))
    named = ledger.epoch()
    assert add(ledger, reply("b/2", 3, 1), []) is not None
    late = ids(2)
    lost = ledger.record(named, reply("a/1", 3, -1), [(LOW, job_id) for job_id in late])
    assert lost is not None and len(lost.jobs) == 2
    assert ledger.epoch() == "b/2", "a late reply does not move the ledger back"


def test_forgotten_jobs_are_counted_when_rolled_back():
    ledger = Ledger()
    many = ids(RECENT_JOBS + 10)
    add(ledger, reply("a/1", 1, -1), many)
    # Kept up to 5: 10 forgotten numbers (1..=10) of which 5 lost.
    lost = add(ledger, reply("b/2", 6, 5), [])
    assert lost.unnamed == 5
    assert len(lost.jobs) == RECENT_JOBS


def test_no_epochs_no_accounting():
    ledger = Ledger()
    assert add(ledger, reply("", 1, -1), ids(2)) is None
    assert ledger.epoch() == ""
    # Jobs added without epochs are never judged; later ones are.
    assert add(ledger, reply("a/1", 3, -1), ["later"]) is None
    assert add(ledger, reply("b/2", 4, 0), []) == RolledBack([(HIGH, "later")], 0)


def test_the_report_counts_per_priority_and_unnamed_jobs_as_low():
    keys = QueueKeys("streamq", "jobs")
    lost = [RolledBack([(1, "a"), (HIGH, "b"), (HIGH, "c")], 0), RolledBack([], 3)]
    assert report_commands(keys, lost, 0, 7) == [
        ("HINCRBY", keys.stats, "rolled_back:critical", 1),
        ("HINCRBY", keys.stats, "rolled_back:high", 2),
        ("HINCRBY", keys.stats, "rolled_back:low", 3),
    ]
    events = [c for c in report_commands(keys, lost, 500, 7) if c[0] == "XADD"]
    assert events == [
        ("XADD", keys.events, "MAXLEN", "~", 500, "*", "ev", "rolled_back", "job", job_id,
         "p", p, "at", 7)
        for job_id, p in (("a", "critical"), ("b", "high"), ("c", "high"))
    ]


# Against a redis-server. A failover's trace in the sequence: the promoted
# replica (another replication id) had the numbers up to `kept`, opened its
# epoch at kept + 1 and wrote nothing of ours; the real server then finds an
# epoch it did not write and opens its own, so the reply tells the producer
# that its epoch kept only up to `kept`.


def fail_over(raw, keys, kept):
    """Rewrites the partition's sequence as a failover to a server that had
    numbers up to `kept` would; returns the epoch that was current."""
    seq = raw.hgetall(keys.seq)
    old = seq["epoch"]
    replid = raw.info("replication")["master_replid"]
    assert old.startswith(replid + "/"), "the server opened the epoch the producer knows"
    other = ("0" if replid[0] != "0" else "1") * 40
    promoted = f"{other}/{int(old.split('/')[1]) + 1}"
    raw.hset(keys.seq, mapping={"n": kept, "epoch": promoted,
                                "epochs": f"{seq['epochs']}{promoted} {kept + 1};"})
    # The epoch the real server opens next is `<its replid>/<now ms>`: a
    # later millisecond than the one it opened before.
    time.sleep(0.005)
    return old


def rolled_back(counters):
    return {k: v for k, v in counters.items() if k.startswith("rolled_back:") and v}


def events(raw, keys, ev):
    return [(f["job"], f["p"]) for _, f in raw.xrange(keys.events) if f["ev"] == ev]


def test_jobs_a_new_epoch_never_had_are_reported(server, caplog):
    queue = streamq.Queue.open(server.url, "failover")
    queue.settings.events_cap = 1000
    keys = queue.partitions[0]
    raw = redis.Redis(port=server.port, decode_responses=True)
    priorities = ["critical", "high", "medium", "low", "high"]
    jobs = queue.enqueue_batch([streamq.Job(i, priority=p) for i, p in enumerate(priorities)])
    assert raw.hget(keys.seq, "n") == "5", "numbers 1..5"
    old = fail_over(raw, keys, kept=2)

    with caplog.at_level(logging.ERROR, logger="streamq"):
        after = queue.enqueue("after", priority="critical")

    epoch = raw.hget(keys.seq, "epoch")
    assert epoch not in (old, "") and queue.ledgers[0].epoch() == epoch
    assert raw.hget(keys.seq, "n") == "3", "the new epoch numbered the job 3"
    assert rolled_back(queue.stats().counters) == {
        "rolled_back:medium": 1, "rolled_back:low": 1, "rolled_back:high": 1}
    assert queue.stats().total("rolled_back") == 3
    assert events(raw, keys, "rolled_back") == list(zip(jobs[2:], priorities[2:]))
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "3 acknowledged jobs lost" in message
    assert all(job in message for job in jobs[2:])
    assert not any(job in message for job in jobs[:2] + [after]), "only the jobs numbered above kept"

    # Judged once: later enqueues in the new epoch report nothing more.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="streamq"):
        queue.enqueue_batch(range(3))
    assert not caplog.records
    assert queue.stats().total("rolled_back") == 3
    assert len(events(raw, keys, "rolled_back")) == 3
    queue.close()


def test_a_failover_that_kept_everything_and_a_deleted_sequence_report_nothing(server, caplog):
    queue = streamq.Queue.open(server.url, "kept")
    keys = queue.partitions[0]
    raw = redis.Redis(port=server.port, decode_responses=True)
    queue.enqueue_batch(range(4))
    with caplog.at_level(logging.ERROR, logger="streamq"):
        fail_over(raw, keys, kept=4)
        queue.enqueue("after a failover that lost nothing")
        # Obliterate deletes the sequence with the jobs: not a loss.
        raw.delete(keys.seq)
        time.sleep(0.005)
        kept = queue.enqueue("after obliterate")
        assert raw.hget(keys.seq, "n") == "1"
        assert not caplog.records
        assert queue.stats().total("rolled_back") == 0
        # What comes after is judged: a failover that keeps job 1 of the new
        # sequence loses the next two, and none of the jobs before it.
        lost = queue.enqueue_batch(["lost", "too"])
        fail_over(raw, keys, kept=1)
        queue.enqueue("after")
    [record] = caplog.records
    assert "2 acknowledged jobs lost" in record.getMessage()
    assert all(job in record.getMessage() for job in lost) and kept not in record.getMessage()
    assert rolled_back(queue.stats().counters) == {"rolled_back:medium": 2}
    queue.close()


def test_a_report_that_fails_is_logged_and_the_enqueue_succeeds(server, caplog):
    queue = streamq.Queue.open(server.url, "best-effort")
    keys = queue.partitions[0]
    raw = redis.Redis(port=server.port, decode_responses=True)
    jobs = queue.enqueue_batch([streamq.Job(i, priority="low") for i in range(3)])
    fail_over(raw, keys, kept=1)
    raw.hset(keys.stats, "rolled_back:low", "not a number")
    with caplog.at_level(logging.ERROR, logger="streamq"):
        after = queue.enqueue("after")
    assert raw.xlen(keys.streams[2]) == 1 and after
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "2 acknowledged jobs lost" in messages[0] and all(j in messages[0] for j in jobs[1:])
    assert "could not count the lost jobs" in messages[1]
    queue.close()


def test_the_asyncio_client_reports_per_partition(server, caplog):
    raw = redis.Redis(port=server.port, decode_responses=True)
    raw.hset("streamq:{tenants}:layout", mapping={"partitions": 3, "version": 1})

    async def scenario():
        queue = await streamq.aio.Queue.open(server.url, "tenants")
        queue.settings.events_cap = 100
        where = streamq.partition_of("acme", 3)
        elsewhere = next(p for p in range(3) if p != where)
        other_key = next(k for k in (f"t{i}" for i in range(100))
                         if streamq.partition_of(k, 3) == elsewhere)
        acme = await queue.enqueue_batch(
            [streamq.Job(i, partition_key="acme", priority="medium") for i in range(4)])
        await queue.enqueue_batch([streamq.Job(i, partition_key=other_key) for i in range(4)])
        for p in (where, elsewhere):
            assert raw.hget(queue.partitions[p].seq, "n") == "4", "one sequence per partition"
        fail_over(raw, queue.partitions[where], kept=1)
        with caplog.at_level(logging.ERROR, logger="streamq"):
            await queue.enqueue_batch([
                streamq.Job("a", partition_key="acme"), streamq.Job("b", partition_key=other_key)])
        stats = await queue.stats()
        assert rolled_back(stats.counters) == {"rolled_back:medium": 3}
        counted = raw.hget(queue.partitions[where].stats, "rolled_back:medium")
        assert counted == "3", "counted on the partition that lost them"
        assert events(raw, queue.partitions[where], "rolled_back") == [(j, "medium") for j in acme[1:]]
        assert events(raw, queue.partitions[elsewhere], "rolled_back") == []
        [record] = caplog.records
        assert all(j in record.getMessage() for j in acme[1:])
        await queue.close()

    asyncio.run(scenario())

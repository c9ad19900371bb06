"""The interop driver: produces or consumes jobs for tests/interop.rs and
benches/clients.sh. One JSON line per event on stdout, flushed at once.

  produce --redis URL --queue Q --count N [--first S] [--batch B] [--pad BYTES]
          [--compress-above BYTES] [--fail SEQ,..] [--hang SEQ,..] [--attempts A]
  consume --redis URL --queue Q [--concurrency C] [--lease-ms MS] [--backoff-ms MS]
          [--expect-done N] [--expect-failures M] [--mode sync|async]

Payload: {"seq", "origin", "fail", "hang", "pad"}; name "interop"; priority
of job `seq` is critical, high, medium, low by `seq % 4`.
"""

import argparse
import asyncio
import json
import signal
import sys
import threading
import time

import streamq
import streamq.aio

PRIORITIES = ["critical", "high", "medium", "low"]


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def seqs(text):
    return {int(s) for s in text.split(",") if s} if text else set()


def produce(args):
    queue = streamq.Queue.open(args.redis, args.queue, compress_above=args.compress_above)
    fail, hang = seqs(args.fail), seqs(args.hang)
    jobs = [
        streamq.Job(
            {"seq": s, "origin": "python", "fail": s in fail, "hang": s in hang, "pad": "x" * args.pad},
            priority=PRIORITIES[s % 4], name="interop", attempts=args.attempts,
        )
        for s in range(args.first, args.first + args.count)
    ]
    started = time.perf_counter()
    ids = []
    for i in range(0, len(jobs), args.batch):
        ids += queue.enqueue_batch(jobs[i : i + args.batch])
    seconds = time.perf_counter() - started
    for job, job_id in zip(jobs, ids):
        emit(seq=job.payload["seq"], id=job_id)
    emit(event="produced", count=len(ids), seconds=seconds)


class Counter:
    def __init__(self, args, stop):
        self.args, self.stop, self.lock = args, stop, threading.Lock()
        self.done = self.failed = 0

    def add(self, done=0, failed=0):
        with self.lock:
            self.done += done
            self.failed += failed
            if self.done >= self.args.expect_done and self.failed >= self.args.expect_failures:
                self.stop()


def handle(job, counter, block):
    p = job.payload
    if p.get("hang"):
        emit(event="started", seq=p["seq"], id=job.id)
        block()
    if p.get("fail"):
        emit(event="failed", seq=p["seq"], id=job.id, attempt=job.attempt - 1)
        counter.add(failed=1)
        raise RuntimeError(f"interop failure seq={p['seq']}")
    emit(event="done", seq=p["seq"], id=job.id, priority=job.priority, attempt=job.attempt - 1,
         origin=p.get("origin"))
    counter.add(done=1)


def config(args):
    return streamq.WorkerConfig(
        concurrency=args.concurrency, lease=args.lease_ms / 1000, block=1.0,
        backoff=streamq.Backoff(args.backoff_ms / 1000, 60.0, False),
        promote_interval=0.02, reclaim_interval=0.2,
    )


def consume_sync(args):
    queue = streamq.Queue.open(args.redis, args.queue)
    worker = None
    counter = Counter(args, lambda: worker.stop())
    worker = streamq.Worker(queue, lambda job: handle(job, counter, threading.Event().wait), config(args))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    if args.expect_done == 0 and args.expect_failures == 0:
        worker.stop()
    worker.run()


async def consume_async(args):
    queue = await streamq.aio.Queue.open(args.redis, args.queue)
    worker = None
    counter = Counter(args, lambda: worker.stop())

    async def handler(job):
        if job.payload.get("hang"):
            emit(event="started", seq=job.payload["seq"], id=job.id)
            await asyncio.Event().wait()
        handle(job, counter, lambda: None)

    worker = streamq.aio.Worker(queue, handler, config(args))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    await worker.run()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["produce", "consume"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--compress-above", type=int)
    parser.add_argument("--fail", default="")
    parser.add_argument("--hang", default="")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--lease-ms", type=int, default=30000)
    parser.add_argument("--backoff-ms", type=int, default=50)
    parser.add_argument("--expect-done", type=int, default=0)
    parser.add_argument("--expect-failures", type=int, default=0)
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    args = parser.parse_args()
    if args.command == "produce":
        produce(args)
    elif args.mode == "async":
        asyncio.run(consume_async(args))
    else:
        consume_sync(args)


if __name__ == "__main__":
    main()

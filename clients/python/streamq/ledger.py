"""Which acknowledged enqueues a failover rolled back (docs/protocol.md,
"Loss accounting"; the Rust crate's src/producer/ledger.rs).

Redis replicates asynchronously: a master can acknowledge an enqueue and fail
before its replica has it. `enqueue.lua` numbers every job it adds (one
sequence per partition) and names the epoch: the server writing the
sequence. A server that did not write the current epoch (a promoted replica,
a restarted master, the node a slot moved to) opens a new one and records the
first number it did not inherit. Each call names the epoch the producer last
saw, and the reply says up to which number that epoch survived, so the
producer knows which of its own recent jobs the new server never had. It
keeps the last `RECENT_JOBS` numbered jobs per partition for that; older
ones are counted, not named.

The ledger itself is pure (no I/O); `report_commands` says what to send and
the sync and asyncio queues send it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .keys import PRIORITIES, QueueKeys

log = logging.getLogger("streamq")

#: Acknowledged jobs remembered per partition, to name the rolled back ones.
RECENT_JOBS = 16_384
#: Runs of forgotten numbers kept per partition (a producer alone on a
#: partition needs one).
FORGOTTEN_RUNS = 4_096
#: Closed epochs remembered (the server's history keeps as many).
RETIRED_EPOCHS = 8
#: Job ids named in the error logged per report (the count is always whole).
LOGGED_IDS = 100


@dataclass
class Numbered:
    """The epoch part of an `enqueue` reply."""

    #: The current epoch; empty when the server has no epochs (`INFO` refused).
    epoch: str
    #: The number of the first job added; the rest follow in call order.
    first: int
    #: Up to which number the epoch the call named survived: -1 when it named
    #: the current one (or none), 0 when that epoch is no longer in the
    #: history, -2 when the sequence was deleted (obliterate).
    kept: int


@dataclass
class RolledBack:
    """What a new epoch took away from this producer."""

    #: The jobs, as (priority index 1..4, job id).
    jobs: list = field(default_factory=list)
    #: Rolled back jobs too old to be named (beyond `RECENT_JOBS`).
    unnamed: int = 0


class Ledger:
    """One partition's record of its producer's recent jobs. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = ""
        # Jobs acknowledged in the epoch, (number, priority, id), at most RECENT_JOBS.
        self._recent: deque = deque()
        # The numbers of older jobs of the epoch, as runs [first, count], at
        # most FORGOTTEN_RUNS: enough to count them if they are rolled back.
        self._forgotten: deque = deque()
        # Epochs this producer saw closed, (epoch, last surviving number), for
        # calls that named one and were answered after it closed.
        self._retired: deque = deque()

    def epoch(self) -> str:
        """The epoch to name in the next call ("" before the first)."""
        with self._lock:
            return self._epoch

    def record(self, named: str, numbered: Numbered, added: Iterable) -> Optional[RolledBack]:
        """Records the jobs one call added, as (priority, id) in call order
        (duplicates left out), and returns what a new epoch rolled back, if
        anything. `named` is the epoch the call named."""
        if not numbered.epoch:
            return None
        with self._lock:
            rolled_back = None
            if self._epoch != numbered.epoch:
                if named == self._epoch:
                    rolled_back = self._open(numbered.epoch, numbered.kept)
                else:
                    kept = next((k for e, k in self._retired if e == named), None)
                    if kept is not None:
                        # A call named an epoch another call already closed:
                        # its own jobs are judged against what that epoch kept.
                        lost = RolledBack()
                        for number, (priority, job_id) in enumerate(added, numbered.first):
                            if number > kept:
                                lost.jobs.append((priority, job_id))
                        return lost if lost.jobs else None
            for number, (priority, job_id) in enumerate(added, numbered.first):
                self._recent.append((number, priority, job_id))
            while len(self._recent) > RECENT_JOBS:
                self._forget(self._recent.popleft()[0])
            return rolled_back

    def _open(self, epoch: str, kept: int) -> Optional[RolledBack]:
        """Moves to `epoch`, which kept the old one's numbers up to `kept`."""
        old, self._epoch = self._epoch, epoch
        if not old or kept == -1:
            return None
        recent, self._recent = self._recent, deque()
        forgotten, self._forgotten = self._forgotten, deque()
        if kept == -2:
            # The sequence was deleted on purpose (obliterate): so were the jobs.
            return None
        kept = max(kept, 0)
        self._retired.append((old, kept))
        while len(self._retired) > RETIRED_EPOCHS:
            self._retired.popleft()
        lost = RolledBack()
        for number, priority, job_id in recent:
            if number > kept:
                lost.jobs.append((priority, job_id))
            else:
                self._recent.append((number, priority, job_id))
        for first, count in forgotten:
            last = first + count - 1
            if last > kept:
                lost.unnamed += last - max(kept, first - 1)
            else:
                self._forgotten.append([first, count])
        return lost if lost.jobs or lost.unnamed else None

    def _forget(self, number: int) -> None:
        """Keeps `number` as part of a run."""
        if self._forgotten:
            run = self._forgotten[-1]
            if run[0] + run[1] == number:
                run[1] += 1
                return
        self._forgotten.append([number, 1])
        while len(self._forgotten) > FORGOTTEN_RUNS:
            self._forgotten.popleft()


def report_commands(keys: QueueKeys, rolled_back: list, events_cap: int, now_ms: int) -> list:
    """The commands that count what new epochs rolled back on the partition
    of `keys`: `HINCRBY stats rolled_back:<priority>` per priority, and, when
    the queue keeps events (`events_cap` > 0), one `rolled_back` event per
    named job. Unnamed jobs have no priority left: they count as `low`."""
    per_priority = [0, 0, 0, 0]
    named = [job for lost in rolled_back for job in lost.jobs]
    for priority, _ in named:
        per_priority[priority - 1] += 1
    per_priority[3] += sum(lost.unnamed for lost in rolled_back)
    commands: list = [
        ("HINCRBY", keys.stats, f"rolled_back:{name}", n)
        for name, n in zip(PRIORITIES, per_priority) if n > 0
    ]
    if events_cap > 0:
        commands += [
            ("XADD", keys.events, "MAXLEN", "~", events_cap, "*", "ev", "rolled_back",
             "job", job_id, "p", PRIORITIES[priority - 1], "at", now_ms)
            for priority, job_id in named
        ]
    return commands


def log_rolled_back(keys: QueueKeys, rolled_back: list) -> None:
    """The error naming the jobs new epochs rolled back on a partition."""
    named = [job_id for lost in rolled_back for _, job_id in lost.jobs]
    total = len(named) + sum(lost.unnamed for lost in rolled_back)
    log.error(
        "streamq: %d acknowledged jobs lost on queue %s, partition %d: the server now holding "
        "this partition never had them (a failover after asynchronous replication, or a "
        "restart); jobs that had already run are among them. Job ids%s: %s",
        total, keys.queue, keys.index,
        f" (the first {LOGGED_IDS})" if len(named) > LOGGED_IDS else "", named[:LOGGED_IDS],
    )


def log_report_failed(keys: QueueKeys, error: BaseException) -> None:
    log.error("streamq: could not count the lost jobs of queue %s, partition %d in Redis: %s",
              keys.queue, keys.index, error)

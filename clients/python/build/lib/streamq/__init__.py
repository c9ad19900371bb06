"""streamq for Python: enqueue to and work a streamq queue (Redis Streams,
strict priorities, at-least-once) from Python, beside Rust producers and
workers, with the same scripts (docs/protocol.md)."""

from .errors import (
    InvalidName,
    JobFailed,
    PayloadTooLarge,
    PermanentError,
    QueueFull,
    StreamqError,
    UnexpectedReply,
    UnknownLayout,
    UnknownPriority,
    UnsupportedServer,
    WrongKeyType,
)
from .keys import PRIORITIES, QueueKeys, partition_of
from .protocol import Backoff, Stats
from .queue import Job, Queue
from .worker import JobContext, Worker, WorkerConfig

__all__ = [
    "Backoff", "InvalidName", "Job", "JobContext", "JobFailed", "PRIORITIES", "PayloadTooLarge",
    "PermanentError", "Queue", "QueueFull", "QueueKeys", "Stats", "StreamqError",
    "UnexpectedReply", "UnknownLayout", "UnknownPriority", "UnsupportedServer", "Worker",
    "WorkerConfig", "WrongKeyType", "partition_of",
]

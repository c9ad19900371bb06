"""Typed errors: every failure a caller can act on has its own class."""


class StreamqError(Exception):
    """Base class of every error this client raises."""


class InvalidName(StreamqError):
    """A queue name or prefix that is empty, too long, or holds braces,
    whitespace or control characters."""


class UnknownPriority(StreamqError):
    """A priority other than critical, high, medium or low."""


class UnsupportedServer(StreamqError):
    """Redis older than 7.0 (or Valkey older than 7.2)."""


class UnknownLayout(StreamqError):
    """The queue's layout record has a version this client does not know:
    using it could put jobs where no worker looks."""


class WrongKeyType(StreamqError):
    """A key of the queue holds another type: another program uses the name."""


class PayloadTooLarge(StreamqError):
    """An encoded payload or envelope over the queue's limit."""


class QueueFull(StreamqError):
    """The queue's backlog bound would be exceeded; nothing was enqueued."""

    def __init__(self, backlog: int, limit: int):
        super().__init__(f"queue full: {backlog} jobs waiting or delayed, the limit is {limit}")
        self.backlog = backlog
        self.limit = limit


class UnexpectedReply(StreamqError):
    """A script answered something this client does not understand."""


class JobFailed(Exception):
    """Raise from a handler to fail the job with this message (any other
    exception does the same, with its text)."""


class PermanentError(JobFailed):
    """Raise from a handler to dead-letter the job at once, whatever
    attempts are left."""

//! The error types. Every failure a caller can see is a variant here; what
//! Redis answers becomes one of them in `protocol::reply`.

use std::time::Duration;

use crate::job_id::JobId;

/// Everything that can go wrong in streamq.
///
/// Messages are short and lowercase; [`Error::is_retryable`] tells whether
/// trying the same call again may succeed.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue name or key prefix is not usable in a key name.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// `"queue name"` or `"key prefix"`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A priority name that is not critical, high, medium or low.
    #[error("unknown priority {0:?}: expected critical, high, medium or low")]
    UnknownPriority(String),
    /// The encoded job is larger than the queue allows; nothing was sent.
    #[error("job is {size} bytes encoded, over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Encoded size of the job envelope.
        size: usize,
        /// The queue's `max_payload_bytes`.
        limit: usize,
    },
    /// The payload could not be encoded as MessagePack; nothing was sent.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// A job read from Redis could not be decoded.
    #[error("cannot decode job: {0}")]
    Decode(String),
    /// The queue holds as many jobs as its `max_backlog` allows; nothing was added.
    #[error("queue is full: {backlog} jobs waiting or in flight, limit {limit}")]
    QueueFull {
        /// Jobs in the queue's streams when the enqueue was refused.
        backlog: u64,
        /// The configured bound.
        limit: u64,
    },
    /// Some script calls of a batch were applied and some were not.
    #[error("batch partly enqueued ({} jobs): {source}", enqueued.len())]
    PartialBatch {
        /// The ids that were enqueued.
        enqueued: Vec<JobId>,
        /// Why the rest were not.
        source: Box<Error>,
    },
    /// The worker no longer owns the job: it was reclaimed by another worker
    /// after its lease ran out, and only the new owner may finish it.
    #[error("job is owned by another worker now")]
    OwnershipLost,
    /// The server is older than streamq supports, or is not Redis or Valkey.
    #[error("unsupported server {server} {found}: streamq needs {required} or newer")]
    UnsupportedServer {
        /// `redis` or `valkey`, as the server calls itself.
        server: String,
        /// The version it reported.
        found: String,
        /// The oldest version streamq works with.
        required: &'static str,
    },
    /// A queue key exists with another type (a string where a stream belongs).
    #[error("{}", wrong_key_type(key, found, expected))]
    WrongKeyType {
        /// The key, or `"?"` when Redis did not say which (a script's
        /// `WRONGTYPE`; [`crate::Queue`] names the key where it can).
        key: String,
        /// The type found.
        found: String,
        /// The type streamq needs there.
        expected: &'static str,
    },
    /// Redis is at `maxmemory` and refuses writes; nothing was written.
    #[error("redis is out of memory: {0}")]
    OutOfMemory(String),
    /// The Redis user lacks a permission streamq needs (an ACL refusal).
    #[error("no permission: {0}")]
    NoPermission(String),
    /// Redis refused the connection's credentials: a password is needed
    /// (`NOAUTH`), or the user name or password is wrong (`WRONGPASS`).
    #[error("{}", if *.missing {
        "redis needs a password and none was given"
    } else {
        "redis refused the user name or password"
    })]
    Authentication {
        /// Whether no password was given at all (`NOAUTH`), rather than a
        /// wrong one.
        missing: bool,
    },
    /// A dead-letter (stream entry) id that is not of the form
    /// `<milliseconds>-<sequence>`; nothing was read or changed.
    #[error(
        "invalid dead-letter id {0:?}: expected <milliseconds>-<sequence>, such as 1732212345678-0, as `dlq list` prints it"
    )]
    InvalidEntryId(String),
    /// The queue is in use, so it was not obliterated: workers hold jobs
    /// in it or were active recently ([`crate::Queue::obliterate`]).
    /// Nothing was deleted.
    #[error(
        "queue is in use by {} consumers ({}): stop its workers first, or force",
        consumers.len(),
        consumers.join(", ")
    )]
    QueueInUse {
        /// The consumers that hold jobs or were active recently.
        consumers: Vec<String>,
    },
    /// A flow that cannot be created as given ([`crate::Flow`]): no
    /// children, an option a flow job cannot have, queues under different
    /// prefixes, or (on Redis Cluster) queues in different hash slots.
    /// Nothing was written.
    #[error("invalid flow: {0}")]
    InvalidFlow(String),
    /// The connection settings are unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A script answered in a shape streamq does not expect.
    #[error("unexpected reply from script {script}: {detail}")]
    UnexpectedReply {
        /// The script's name.
        script: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Starting a local redis-server failed.
    #[error("cannot start redis-server: {0}")]
    LocalServer(String),
    /// A worker set to run on a thread of its own
    /// ([`crate::WorkerConfig::own_thread`]) could not: the thread or its
    /// runtime could not be made, or the worker panicked there.
    #[error("cannot run the worker on a thread of its own: {0}")]
    WorkerThread(String),
    /// Redis cannot be reached or is not serving commands now: connection
    /// refused or dropped, a timeout, a server loading its data or failing
    /// over. Retryable.
    #[error("redis is unavailable: {0}")]
    Unavailable(redis::RedisError),
    /// Any other Redis error.
    #[error(transparent)]
    Redis(redis::RedisError),
    /// The queue is stored with another number of partitions than this
    /// handle was opened with (`QueueBuilder::partitions`); nothing was
    /// written. Open it without a count to adopt the stored one, or change
    /// the count with [`crate::Queue::set_partitions`].
    #[error("queue {queue:?} has {stored} partitions in Redis, not {requested}")]
    PartitionMismatch {
        /// The queue's name.
        queue: String,
        /// The count recorded in the queue's layout key.
        stored: u32,
        /// The count asked for.
        requested: u32,
    },
    /// The queue's layout record has a layout version this build does not
    /// know (written by a newer streamq or another client).
    #[error("queue {queue:?} has layout version {found:?}; this streamq reads version {known}")]
    UnknownLayout {
        /// The queue's name.
        queue: String,
        /// The version field found in the layout key.
        found: String,
        /// The version this build reads and writes.
        known: u32,
    },
    /// A replicated enqueue (`Durability::Replicated`) was applied on the
    /// master, but fewer replicas than asked confirmed it within the timeout.
    /// The jobs are enqueued (their ids are here) but a failover before the
    /// replicas catch up could lose them.
    #[error("enqueue confirmed by {reached} of {wanted} replicas within the timeout")]
    NotReplicated {
        /// The ids enqueued on the master.
        enqueued: Vec<JobId>,
        /// Replicas (with `WAITAOF`: replica fsyncs) that acknowledged.
        reached: u64,
        /// Replicas asked for.
        wanted: u64,
    },
}

fn wrong_key_type(key: &str, found: &str, expected: &str) -> String {
    if key == "?" {
        format!("a queue key holds a value of another type ({found}), expected a {expected}")
    } else {
        format!("key {key:?} holds a {found}, expected a {expected}")
    }
}

impl Error {
    /// Whether the same call may succeed if tried again later: an
    /// unavailable Redis, out-of-memory and a full queue are; invalid input,
    /// permissions and unsupported servers are not.
    ///
    /// An enqueue that failed with a retryable error may or may not have been
    /// applied (a timeout can hide a success); retrying it can add a duplicate,
    /// never lose a job.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::OutOfMemory(_) | Error::QueueFull { .. } | Error::Unavailable(_)
        )
    }
}

impl std::fmt::Debug for Error {
    /// The message; a partial batch shows how many ids it holds, not each one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::PartialBatch { enqueued, source } => f
                .debug_struct("PartialBatch")
                .field("enqueued", &enqueued.len())
                .field("source", source)
                .finish(),
            Error::Redis(e) => f.debug_tuple("Redis").field(e).finish(),
            Error::NotReplicated {
                enqueued,
                reached,
                wanted,
            } => f
                .debug_struct("NotReplicated")
                .field("enqueued", &enqueued.len())
                .field("reached", reached)
                .field("wanted", wanted)
                .finish(),
            Error::Unavailable(e) => f.debug_tuple("Unavailable").field(e).finish(),
            other => write!(f, "{other}"),
        }
    }
}

/// Settings that cannot work, found when a configuration is built. Lists every
/// violated constraint, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// Each violated constraint, in words.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub(crate) fn single(problem: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

/// Collects constraint violations while a configuration is checked.
#[derive(Debug, Default)]
pub(crate) struct ConfigCheck {
    problems: Vec<String>,
}

impl ConfigCheck {
    pub(crate) fn require(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }

    pub(crate) fn positive(&mut self, name: &str, value: usize) {
        self.require(value > 0, || format!("{name} must be at least 1"));
    }

    pub(crate) fn nonzero(&mut self, name: &str, value: Duration) {
        self.require(!value.is_zero(), || {
            format!("{name} must be longer than zero")
        });
    }

    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_list_every_problem() {
        let mut check = ConfigCheck::default();
        check.positive("concurrency", 0);
        check.nonzero("block", Duration::ZERO);
        check.positive("ack batch", 5);
        let err = check.finish().expect_err("two problems");
        assert_eq!(err.problems().len(), 2);
        assert_eq!(
            err.to_string(),
            "concurrency must be at least 1; block must be longer than zero"
        );
    }

    #[test]
    fn retryable_errors_are_told_apart() {
        assert!(Error::OutOfMemory(String::new()).is_retryable());
        assert!(!Error::PayloadTooLarge { size: 2, limit: 1 }.is_retryable());
    }
}

//! [`Queue`]: a handle on one named queue in one Redis, shared by producers,
//! workers and operators.

use std::sync::Arc;

use crate::error::ConfigCheck;
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::cluster::Conn;
use crate::protocol::connection::{RedisConfig, ServerInfo};
use crate::protocol::keys::{GROUP, QueueKeys};
use crate::protocol::{fields, reply};

/// A connected queue. Cheap to clone: clones share one connection, on which
/// concurrent calls are pipelined.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), streamq::Error> {
/// use streamq::{EnqueueOptions, Priority, Queue, RedisConfig};
///
/// let redis = RedisConfig::from_url("redis://127.0.0.1:6379")?;
/// let queue = Queue::builder("alerts").connect(&redis).await?;
/// let id = queue
///     .enqueue(&"disk full on db-1", &EnqueueOptions::new().priority(Priority::High))
///     .await?;
/// println!("enqueued {id}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    keys: QueueKeys,
    settings: QueueSettings,
    redis: RedisConfig,
    server: ServerInfo,
    conn: Conn,
    /// Whether this user may send `MULTI`/`EXEC` (probed at connect):
    /// plain enqueues then keep their envelopes out of Lua.
    transactions: bool,
    /// Set once this handle made sure the consumer groups exist (its first
    /// enqueue does).
    groups: tokio::sync::OnceCell<()>,
    /// The producer's per-handle state (its enqueue coalescer), made on
    /// first use.
    producer: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    /// Which partition this handle's keys are (0 for the logical queue).
    index: u32,
    /// The partitions of a queue of more than one; empty for one (the
    /// handle is then its only partition).
    parts: Vec<Queue>,
    /// Round-robin cursor for jobs without a partition key.
    next: std::sync::atomic::AtomicU64,
    /// Reopened for one worker on a thread of its own
    /// ([`Queue::reopen_for_worker`]): its connection is that worker's alone.
    private: bool,
}

/// Per-queue settings, fixed when the queue is opened.
#[derive(Debug, Clone)]
pub(crate) struct QueueSettings {
    pub(crate) max_payload_bytes: usize,
    pub(crate) max_backlog: Option<u64>,
    pub(crate) max_attempts: u32,
    pub(crate) max_dead_letters: Option<u64>,
    pub(crate) compress_above: Option<usize>,
    pub(crate) metrics: bool,
    pub(crate) tracking: Option<JobTracking>,
    pub(crate) results: Option<KeepResults>,
    pub(crate) events: Option<EventLog>,
    /// Set by the producer layer's `Durability` (kept as data here: the
    /// queue layer sits below it).
    pub(crate) durability: crate::durability::Durability,
}

/// The queue's event stream ([`QueueBuilder::events`]): what happened to
/// jobs, in order, readable by any process with [`Queue::events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventLog {
    /// About how many events the stream keeps; older ones are trimmed
    /// (`XADD ... MAXLEN ~`). Default: 10,000.
    pub max_len: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog { max_len: 10_000 }
    }
}

impl EventLog {
    /// Keep about `events` events.
    pub fn max_len(mut self, events: u64) -> EventLog {
        self.max_len = events;
        self
    }
}

impl QueueSettings {
    /// The events cap the scripts take: 0 when events are off.
    pub(crate) fn events_cap(&self) -> u64 {
        self.events.map_or(0, |e| e.max_len)
    }
}

/// How handlers' results are kept ([`QueueBuilder::keep_results`]). Every
/// field's doc ends with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepResults {
    /// How long a result stays readable after its job completed. Default: 24 h.
    pub ttl: std::time::Duration,
    /// The largest result kept, in bytes of MessagePack; a larger one is
    /// dropped with a warning (the job still completes). Default: 64 KiB.
    pub max_bytes: usize,
}

impl Default for KeepResults {
    fn default() -> Self {
        KeepResults {
            ttl: std::time::Duration::from_secs(24 * 3600),
            max_bytes: 64 * 1024,
        }
    }
}

impl KeepResults {
    /// Results readable for `ttl` after their job completed.
    pub fn ttl(mut self, ttl: std::time::Duration) -> KeepResults {
        self.ttl = ttl;
        self
    }

    /// Results of at most `bytes` kept.
    pub fn max_bytes(mut self, bytes: usize) -> KeepResults {
        self.max_bytes = bytes;
        self
    }
}

/// Per-job tracking: metadata, progress and logs readable by job id
/// ([`Queue::job`]). Every field's doc ends with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobTracking {
    /// How long a dead-lettered (or, with retention, completed) job's
    /// metadata stays readable after it finished. Default: 24 h.
    pub keep_finished: std::time::Duration,
    /// Keep this many completed jobs' metadata (the most recent); `0` drops
    /// a job's metadata as soon as it completes. Default: 0.
    pub keep_completed: u64,
    /// The longest a live job's progress and last error (its `job:<id>`
    /// hash) live without an update. A live job's record itself is one
    /// field of the queue's `live` hash, without a TTL: it goes when the
    /// job ends, is cancelled or drained, or the queue is obliterated (a
    /// worker that does not track still removes the records of the jobs
    /// it ends). Default: 7 days.
    pub keep_live: std::time::Duration,
}

impl Default for JobTracking {
    fn default() -> Self {
        JobTracking {
            keep_finished: std::time::Duration::from_secs(24 * 3600),
            keep_completed: 0,
            keep_live: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl JobTracking {
    /// Keep metadata of the last `count` completed jobs, each for at most
    /// `age` (like BullMQ's `removeOnComplete: { count, age }`).
    pub fn keep_completed(mut self, count: u64, age: std::time::Duration) -> JobTracking {
        self.keep_completed = count;
        self.keep_finished = age;
        self
    }
}

impl QueueSettings {
    pub(crate) fn payload_limits(&self) -> crate::protocol::envelope::PayloadLimits {
        crate::protocol::envelope::PayloadLimits {
            max_bytes: self.max_payload_bytes,
            compress_above: self.compress_above,
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("redis", &self.inner.redis)
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

/// Opens a [`Queue`] with non-default settings.
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    name: String,
    prefix: String,
    settings: QueueSettings,
    partitions: Option<u32>,
}

/// The default limit on one job's encoded size: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

impl QueueBuilder {
    /// The first part of every key name. Default: `streamq`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> QueueBuilder {
        self.prefix = prefix.into();
        self
    }

    /// The largest encoded job accepted, checked before any Redis call.
    /// Default: [`DEFAULT_MAX_PAYLOAD_BYTES`] (1 MiB).
    pub fn max_payload_bytes(mut self, bytes: usize) -> QueueBuilder {
        self.settings.max_payload_bytes = bytes;
        self
    }

    /// Refuse enqueues with [`Error::QueueFull`] once this many jobs are
    /// waiting or in flight. Default: no bound.
    pub fn max_backlog(mut self, jobs: u64) -> QueueBuilder {
        self.settings.max_backlog = Some(jobs);
        self
    }

    /// How many times a job may run before it is dead-lettered, unless the
    /// job says otherwise. Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> QueueBuilder {
        self.settings.max_attempts = attempts;
        self
    }

    /// Compress payloads larger than this many bytes (LZ4), when that makes
    /// them smaller. Readers decompress transparently, whatever their own
    /// setting. Default: no compression.
    pub fn compress_above(mut self, bytes: usize) -> QueueBuilder {
        self.settings.compress_above = Some(bytes);
        self
    }

    /// Keep counters and latency histograms per job name, besides the
    /// per-priority counters that are always kept. Costs a few hash updates
    /// per script call (see docs/benchmarks.md). Default: on.
    pub fn metrics(mut self, on: bool) -> QueueBuilder {
        self.settings.metrics = on;
        self
    }

    /// Track every job so it can be looked up by id ([`Queue::job`]), with
    /// progress and log lines from its handler. Costs Redis memory per job
    /// (see docs/benchmarks.md) and a pipelined write per started and
    /// finished batch. Default: off.
    pub fn track_jobs(mut self, tracking: JobTracking) -> QueueBuilder {
        self.settings.tracking = Some(tracking);
        self
    }

    /// Keep what handlers return ([`crate::Handler`]'s `R`) as each job's
    /// result, readable by id ([`Queue::job_result`], or awaited with
    /// [`Queue::wait_for_result`]). Results are written atomically with the
    /// job's acknowledgement. Workers decide: set it on the queue handle the
    /// workers use. Default: results are not kept.
    pub fn keep_results(mut self, policy: KeepResults) -> QueueBuilder {
        self.settings.results = Some(policy);
        self
    }

    /// Record what happens to jobs in the queue's event stream: enqueued,
    /// started, progress, completed (with the result when kept), failed,
    /// retried, dead-lettered and reclaimed. Any process can follow it with
    /// [`Queue::events`]. Costs one stream entry per event (see
    /// docs/benchmarks.md). Producers and workers of a queue should agree.
    /// Default: off.
    pub fn events(mut self, log: EventLog) -> QueueBuilder {
        self.settings.events = Some(log);
        self
    }

    /// Split the queue into `count` partitions, each its own key set under
    /// its own hash tag (so each lives in one cluster slot), with jobs
    /// routed by [`crate::EnqueueOptions::partition_key`]. 1 is an ordinary
    /// queue, with the same key names. The count is recorded in the queue's
    /// layout key on first use; opening with another count then fails with
    /// [`Error::PartitionMismatch`]. Default: the recorded count, or 1.
    pub fn partitions(mut self, count: u32) -> QueueBuilder {
        self.partitions = Some(count);
        self
    }

    /// What an enqueue's `Ok` waits for: the master alone (the default),
    /// or also replicas (`WAIT`) or append-only files (`WAITAOF`); see
    /// [`crate::Durability`] and `docs/guarantees.md`.
    pub fn durability(mut self, durability: crate::durability::Durability) -> QueueBuilder {
        self.settings.durability = durability;
        self
    }

    /// Keep about this many dead letters, trimming the oldest. Default: no
    /// bound; dead letters are never trimmed.
    pub fn max_dead_letters(mut self, entries: u64) -> QueueBuilder {
        self.settings.max_dead_letters = Some(entries);
        self
    }

    /// Validates the settings, connects, checks the server version and the
    /// types of the queue's keys. Writes nothing: a queue that does not
    /// exist yet reads as empty, the first enqueue creates its streams, and
    /// workers create the consumer group when they start.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] and [`Error::Config`] before any connection is
    /// made; [`Error::UnsupportedServer`] below Redis 7.0;
    /// [`Error::WrongKeyType`] when a queue key holds something else;
    /// connection and permission errors as they come.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: setup is idempotent, so a dropped call can be repeated.
    pub async fn connect(self, redis: &RedisConfig) -> Result<Queue, Error> {
        let keys = QueueKeys::new(&self.prefix, &self.name)?;
        let mut check = ConfigCheck::default();
        check.positive("max payload bytes", self.settings.max_payload_bytes);
        check.require(self.settings.max_attempts >= 1, || {
            "max attempts must be at least 1".to_owned()
        });
        check.require(self.settings.max_backlog != Some(0), || {
            "max backlog must be at least 1".to_owned()
        });
        if let Some(events) = self.settings.events {
            check.require(events.max_len >= 1, || {
                "the event log must keep at least 1 event".to_owned()
            });
        }
        if let Some(results) = self.settings.results {
            check.positive("result max bytes", results.max_bytes);
            check.require(results.ttl >= std::time::Duration::from_millis(1), || {
                "result ttl must be at least 1 ms".to_owned()
            });
        }
        if let Some(n) = self.partitions {
            check.require(
                (1..=crate::protocol::partition::MAX_PARTITIONS).contains(&n),
                || {
                    format!(
                        "partitions must be 1 to {}",
                        crate::protocol::partition::MAX_PARTITIONS
                    )
                },
            );
        }
        check.finish()?;

        let (mut conn, redis) = redis.shared_connection().await?;
        let server = ServerInfo::detect(&mut conn).await?;
        let mut check = ConfigCheck::default();
        self.settings.durability.check(&server, &mut check);
        check.finish()?;
        crate::durability::probe(self.settings.durability, &mut conn).await?;
        let transactions = !conn.is_cluster() && transactions_allowed(&mut conn).await;
        let part = |index: u32, keys: QueueKeys, parts: Vec<Queue>| Queue {
            inner: Arc::new(Inner {
                name: self.name.clone(),
                keys,
                settings: self.settings.clone(),
                redis: redis.clone(),
                server: server.clone(),
                conn: conn.clone(),
                transactions,
                groups: tokio::sync::OnceCell::new(),
                producer: std::sync::OnceLock::new(),
                index,
                parts,
                next: std::sync::atomic::AtomicU64::new(fastrand::u64(..)),
                private: false,
            }),
        };
        let single = part(0, keys.clone(), Vec::new());
        let count = single.resolve_layout(self.partitions).await?;
        let queue = if count == 1 {
            single
        } else {
            let parts = (0..count)
                .map(|i| {
                    Ok(part(
                        i,
                        QueueKeys::partition(&self.prefix, &self.name, i)?,
                        Vec::new(),
                    ))
                })
                .collect::<Result<Vec<Queue>, Error>>()?;
            part(0, keys, parts)
        };
        for p in queue.partitions() {
            p.key_types().await?;
        }
        Ok(queue)
    }
}

impl Queue {
    /// Starts opening the queue `name` with default settings.
    pub fn builder(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder {
            name: name.into(),
            prefix: "streamq".to_owned(),
            settings: QueueSettings {
                max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
                max_backlog: None,
                max_attempts: 3,
                max_dead_letters: None,
                compress_above: None,
                metrics: true,
                tracking: None,
                results: None,
                events: None,
                durability: crate::durability::Durability::Acknowledged,
            },
            partitions: None,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The server the queue lives on, as detected at connect.
    pub fn server(&self) -> &ServerInfo {
        &self.inner.server
    }

    /// Whether the queue lives on a Redis Cluster (chosen with
    /// [`RedisConfig::cluster`] or detected at connect).
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// The stream key holding jobs of `priority`, for inspection with other tools.
    pub fn stream_key(&self, priority: Priority) -> &str {
        self.inner.keys.stream(priority)
    }

    /// The names of the queue's Redis keys, for inspection with other tools.
    pub fn keys(&self) -> &QueueKeys {
        &self.inner.keys
    }

    /// The queue's partitions, in index order: itself alone for a queue of
    /// one. Each is a handle on one partition's key set, sharing this
    /// handle's connection.
    pub(crate) fn partitions(&self) -> Vec<Queue> {
        if self.inner.parts.is_empty() {
            vec![self.clone()]
        } else {
            self.inner.parts.clone()
        }
    }

    /// How many partitions the queue has.
    pub fn partition_count(&self) -> u32 {
        u32::try_from(self.inner.parts.len().max(1)).unwrap_or(u32::MAX)
    }

    /// Which partition this handle's keys are: 0 for a logical queue.
    pub(crate) fn partition_index(&self) -> u32 {
        self.inner.index
    }

    /// The next partition for a job without a partition key (round-robin).
    pub(crate) fn next_partition(&self) -> u32 {
        let n = u64::from(self.partition_count());
        let at = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        u32::try_from(at % n).unwrap_or(0)
    }

    pub(crate) fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// The producer layer's state kept with this handle, made by `init` on
    /// first use; `None` if it was made with another type.
    pub(crate) fn producer_state<T: std::any::Any + Send + Sync>(
        &self,
        init: impl FnOnce() -> T,
    ) -> Option<&T> {
        self.inner
            .producer
            .get_or_init(|| Box::new(init()))
            .downcast_ref()
    }

    pub(crate) fn redis(&self) -> &RedisConfig {
        &self.inner.redis
    }

    /// A handle on the shared connection (clones are cheap and share it).
    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// A connection for one worker's claims and acks, apart from the
    /// queue's shared one: redis-rs reads every reply of a connection in
    /// one task, and at a few tens of thousands of 1 KiB jobs a second
    /// that task, shared by every worker of the process, held them all
    /// back (docs/benchmarks.md). On a cluster, when Redis will not take
    /// another connection, or on a handle reopened for one worker (whose
    /// shared connection is already the worker's own), the shared one.
    pub(crate) async fn worker_connection(&self) -> Conn {
        if self.inner.private || matches!(self.inner.conn, Conn::Cluster(_)) {
            return self.conn();
        }
        match self.inner.redis.connection_manager().await {
            Ok(manager) => Conn::Single(manager),
            Err(err) => {
                tracing::warn!(queue = self.name(), %err, "no connection of its own for the worker; it shares the queue's");
                self.conn()
            }
        }
    }

    /// The same queue over a new connection of its own, made on the calling
    /// runtime, for a worker on a thread of its own: redis-rs runs a
    /// connection's reads, and its reconnects, as tasks of the runtime that
    /// made or reconnected it, so the worker's connection must be made
    /// there. The handle's connection serves that worker alone, its claims
    /// and acks included ([`Queue::worker_connection`]).
    pub(crate) async fn reopen_for_worker(&self) -> Result<Queue, Error> {
        let (conn, _) = self.inner.redis.shared_connection().await?;
        let reopen = |of: &Inner, parts: Vec<Queue>| Queue {
            inner: Arc::new(Inner {
                name: of.name.clone(),
                keys: of.keys.clone(),
                settings: of.settings.clone(),
                redis: of.redis.clone(),
                server: of.server.clone(),
                conn: conn.clone(),
                transactions: of.transactions,
                groups: tokio::sync::OnceCell::new(),
                producer: std::sync::OnceLock::new(),
                index: of.index,
                parts,
                next: std::sync::atomic::AtomicU64::new(fastrand::u64(..)),
                private: true,
            }),
        };
        let parts = self
            .inner
            .parts
            .iter()
            .map(|part| reopen(&part.inner, Vec::new()))
            .collect();
        Ok(reopen(&self.inner, parts))
    }

    /// Whether `MULTI`/`EXEC` may be sent: not on a cluster, and allowed by
    /// the user's ACL (probed at connect).
    pub(crate) fn transactions(&self) -> bool {
        self.inner.transactions
    }

    /// The queue's fixed keys with the type each must have, in the order
    /// [`Queue::key_types`] reports them.
    pub(crate) fn typed_keys(&self) -> Vec<(&str, &'static str)> {
        let keys = self.keys();
        keys.streams()
            .iter()
            .map(|k| (k.as_str(), "stream"))
            .chain([
                (keys.stats(), "hash"),
                (keys.delayed(), "zset"),
                (keys.dead(), "stream"),
                (keys.latency(), "hash"),
                (keys.paused(), "string"),
            ])
            .collect()
    }

    /// Reads the type of every fixed queue key (one round trip, no writes)
    /// and checks it: `Ok(exists)` per key, in [`Queue::typed_keys`] order,
    /// or [`Error::WrongKeyType`] naming the first key that holds something
    /// else.
    pub(crate) async fn key_types(&self) -> Result<Vec<bool>, Error> {
        let expected = self.typed_keys();
        let mut pipe = redis::pipe();
        for (key, _) in &expected {
            pipe.cmd("TYPE").arg(*key);
        }
        let types: Vec<String> = pipe.query_async(&mut self.conn()).await?;
        check_types(&expected, &types)
    }

    /// The id of the newest entry of the stream `key`, if it has one.
    pub(crate) async fn last_entry_id(&self, key: &str) -> Result<Option<String>, Error> {
        let newest: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        Ok(newest.into_iter().next().map(|(id, _)| id))
    }

    /// The id of the newest entry of the stream `key`, or `0-0` when it
    /// has none (or does not exist): where a reader that wants only what
    /// comes next starts.
    pub(crate) async fn newest_entry_id(&self, key: &str) -> Result<String, Error> {
        Ok(self
            .last_entry_id(key)
            .await?
            .unwrap_or_else(|| "0-0".to_owned()))
    }

    /// Whether any of the queue's fixed keys exists: `false` for a name
    /// nothing was ever enqueued to (or a wrong prefix).
    ///
    /// # Errors
    ///
    /// Connection and permission errors; [`Error::WrongKeyType`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn exists(&self) -> Result<bool, Error> {
        Ok(self.key_types().await?.into_iter().any(|e| e))
    }

    /// Turns a `WRONGTYPE` that Redis reported without a key name (from a
    /// script) into one that names the key, when a key of the queue has the
    /// wrong type; any other error is returned as it is.
    pub(crate) async fn name_wrong_key(&self, err: Error) -> Error {
        match err {
            Error::WrongKeyType { ref key, .. } if key == "?" => match self.key_types().await {
                Err(named @ Error::WrongKeyType { .. }) => named,
                _ => err,
            },
            other => other,
        }
    }

    /// [`Queue::ensure_groups`], once per handle: before a producer's first
    /// enqueue, so that the groups exist whenever jobs do. A worker must be
    /// able to start on a queue that filled Redis before any worker ran, and
    /// Redis refuses `XGROUP CREATE` when full (Redis 8.2 even on a stream
    /// that exists).
    pub(crate) async fn ensure_groups_once(&self) -> Result<(), Error> {
        self.inner
            .groups
            .get_or_try_init(|| self.ensure_groups())
            .await
            .map(|_| ())
    }

    /// Checks every queue key's type, then creates the consumer group on each
    /// priority stream from its first entry. Run by producers before their
    /// first enqueue, by workers when they start and again when Redis says
    /// the group is gone; never by readers.
    pub(crate) async fn ensure_groups(&self) -> Result<(), Error> {
        let mut conn = self.conn();
        let exists = self.key_types().await?;
        for (key, exists) in self.keys().streams().iter().zip(exists) {
            // Creating is a write Redis refuses when full, even for a group
            // that exists; a worker must still start then, to drain.
            if exists && has_group(&mut conn, key).await? {
                continue;
            }
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Err(e) if reply::is_busygroup(&e) => {}
                other => other?,
            }
        }
        Ok(())
    }
}

/// Checks `TYPE` answers against the types expected: whether each key
/// exists, or the first mismatch as [`Error::WrongKeyType`].
pub(crate) fn check_types(
    expected: &[(&str, &'static str)],
    found: &[String],
) -> Result<Vec<bool>, Error> {
    expected
        .iter()
        .zip(found)
        .map(|((key, expected), found)| match found.as_str() {
            "none" => Ok(false),
            f if f == *expected => Ok(true),
            _ => Err(Error::WrongKeyType {
                key: (*key).to_owned(),
                found: found.clone(),
                expected,
            }),
        })
        .collect()
}

/// Whether the stream `key` has streamq's consumer group.
async fn has_group(conn: &mut Conn, key: &str) -> Result<bool, Error> {
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    Ok(fields::our_group(&groups).is_some())
}

/// Whether the user may open a transaction: an empty `MULTI`/`EXEC`. An ACL
/// that refuses `MULTI` would otherwise let the commands meant for the
/// transaction run one by one.
async fn transactions_allowed(conn: &mut Conn) -> bool {
    let replies: redis::RedisResult<Vec<redis::Value>> = redis::pipe()
        .cmd("MULTI")
        .cmd("EXEC")
        .ignore_errors()
        .query_async(conn)
        .await;
    matches!(
        replies.as_deref(),
        Ok([redis::Value::Okay, redis::Value::Array(_)])
    )
}

//! Every Redis key streamq uses is built here, and nowhere else.
//!
//! All keys of one queue share the hash tag `{queue}`, so a queue lives in one
//! Redis Cluster slot and its scripts may touch all of its keys:
//!
//! | key                           | type   | holds                                  |
//! |-------------------------------|--------|----------------------------------------|
//! | `<prefix>:{<queue>}:critical` | stream | jobs of that priority (also `high`, `medium`, `low`) |
//! | `<prefix>:{<queue>}:stats`    | hash   | counters kept by the scripts           |
//! | `<prefix>:{<queue>}:dead`     | stream | dead letters: failed jobs and their errors |
//! | `<prefix>:{<queue>}:delayed`  | zset   | jobs due later (retries, scheduled), scored by due ms |
//! | `<prefix>:{<queue>}:dedup:<key>` | string | the id of the job that took an idempotency key (with a TTL) |
//! | `<prefix>:{<queue>}:latency`  | hash   | latency histograms per job name, kept by `ack` |
//! | `<prefix>:{<queue>}:paused`   | string | present while the queue is paused |
//! | `<prefix>:{<queue>}:live`     | hash   | tracked jobs that have not ended: job id -> `<priority index> <where> <name>` (`protocol::live`) |
//! | `<prefix>:{<queue>}:job:<id>` | hash   | a tracked job's progress, last error, and its metadata once it ended (with `track_jobs`) |
//! | `<prefix>:{<queue>}:job:<id>:log` | list | a tracked job's log lines |
//! | `<prefix>:{<queue>}:completed` | zset  | ids of retained completed jobs, scored by finish ms |
//! | `<prefix>:{<queue>}:result:<id>` | string | a completed job's result, MessagePack (with `keep_results`) |
//! | `<prefix>:{<queue>}:events`   | stream | what happened to jobs, capped (with `events`) |
//! | `<prefix>:{<queue>}:rate`     | hash   | the queue's rate-limit window: `w` window index, `n` jobs started in it |
//! | `<prefix>:{<queue>}:rate:<group>` | hash | one rate group's window: `w`, `n`, `r` next reserved slot |
//! | `<prefix>:{<queue>}:schedules` | hash  | schedule id -> its definition (MessagePack) |
//! | `<prefix>:{<queue>}:schedule_due` | zset | schedule ids by next due time (Unix ms) |
//! | `<prefix>:{<queue>}:schedule_changes` | stream | one entry per schedule change, to wake schedulers |
//! | `<prefix>:{<queue>}:tick:<id>:<due>` | string | the job enqueued for one schedule tick (with a TTL) |
//! | `<prefix>:{<queue>}:stop`     | zset   | stop requests for active jobs: `<priority index>:<entry id>`, scored by request ms |
//! | `<prefix>:{<queue>}:history`  | stream | one snapshot of counters and lengths per step, the entry id is the step's start ms |
//! | `<prefix>:{<queue>}:notify:<name>` | string | the last dead-letter id a notifier has delivered |
//! | `<prefix>:{<queue>}:flow:<id>` | hash  | a flow parent waiting for its children: its envelope, pending count, state, and `c:<child id>` per settled child (with a TTL once the parent was released or failed) |
//! | `<prefix>:{<queue>}:layout`   | hash   | `partitions` (N) and `version` (1): a partitioned queue's layout |
//! | `<prefix>:{<queue>}:seq`      | hash   | the enqueue sequence and its epochs, kept by `enqueue`: `n` jobs numbered, `epoch` the current one, `epochs` the last 8 (`<epoch> <first number>;` each) |
//!
//! A queue of N > 1 partitions has this key set N times: partition 0 is the
//! set above, partition `i` the same names under the tag `{<queue>#<i>.<s>}`
//! (`protocol::partition`).

use crate::error::Error;
use crate::priority::Priority;

/// The consumer group every worker of a queue reads through.
pub(crate) const GROUP: &str = "streamq";

/// The longest queue name or prefix accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The key names of one queue, built once when the queue is opened.
///
/// Public so that operators' tools, tests and clients in other languages can
/// name a queue's keys without spelling them out by hand; streamq itself
/// builds every key here.
///
/// ```
/// use streamq::{Priority, QueueKeys};
///
/// let keys = QueueKeys::new("streamq", "alerts")?;
/// assert_eq!(keys.stream(Priority::High), "streamq:{alerts}:high");
/// assert_eq!(keys.dead(), "streamq:{alerts}:dead");
/// # Ok::<(), streamq::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    streams: [String; 4],
    stats: String,
    dead: String,
    delayed: String,
    latency: String,
    paused: String,
    rate: String,
    schedules: String,
    schedule_due: String,
    schedule_changes: String,
    prefix: String,
    base: String,
}

impl QueueKeys {
    /// Validates `prefix` and `queue` and builds the queue's key names.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when either name is empty, longer than
    /// [`MAX_NAME_LEN`], or holds braces, whitespace or control characters.
    pub fn new(prefix: &str, queue: &str) -> Result<QueueKeys, Error> {
        QueueKeys::partition(prefix, queue, 0)
    }

    /// The key names of partition `index` of a partitioned queue: partition
    /// 0 is the queue's own key set ([`QueueKeys::new`]); partition `i > 0`
    /// lives under the hash tag `{<queue>#<i>.<s>}` (see
    /// `docs/design.md`, "Partitions", for how `s` is chosen).
    ///
    /// # Errors
    ///
    /// As [`QueueKeys::new`].
    pub fn partition(prefix: &str, queue: &str, index: u32) -> Result<QueueKeys, Error> {
        validate_name("queue name", queue)?;
        validate_name("key prefix", prefix)?;
        let tag = crate::protocol::partition::tag(queue, index);
        let base = format!("{prefix}:{{{tag}}}");
        Ok(QueueKeys {
            streams: Priority::ALL.map(|p| format!("{base}:{}", p.as_str())),
            stats: format!("{base}:stats"),
            dead: format!("{base}:dead"),
            delayed: format!("{base}:delayed"),
            latency: format!("{base}:latency"),
            paused: format!("{base}:paused"),
            rate: format!("{base}:rate"),
            schedules: format!("{base}:schedules"),
            schedule_due: format!("{base}:schedule_due"),
            schedule_changes: format!("{base}:schedule_changes"),
            prefix: prefix.to_owned(),
            base,
        })
    }

    /// The stream holding jobs of `priority`.
    pub fn stream(&self, priority: Priority) -> &str {
        &self.streams[priority.index()]
    }

    /// The four streams, most urgent first.
    pub fn streams(&self) -> &[String; 4] {
        &self.streams
    }

    /// The dead-letter stream.
    pub fn dead(&self) -> &str {
        &self.dead
    }

    /// The sorted set of jobs due later.
    pub fn delayed(&self) -> &str {
        &self.delayed
    }

    /// The latency histograms hash.
    pub fn latency(&self) -> &str {
        &self.latency
    }

    /// The pause flag.
    pub fn paused(&self) -> &str {
        &self.paused
    }

    /// The queue-wide rate-limit window (a hash: `w`, `n`).
    pub fn rate(&self) -> &str {
        &self.rate
    }

    /// One rate group's window (a hash: `w`, `n`, `r`).
    pub fn rate_group(&self, group: &str) -> String {
        format!("{}:rate:{group}", self.base)
    }

    /// Schedule definitions by id (a hash).
    pub fn schedules(&self) -> &str {
        &self.schedules
    }

    /// Schedule ids by next due time (a sorted set).
    pub fn schedule_due(&self) -> &str {
        &self.schedule_due
    }

    /// The stream that wakes schedulers when a schedule changes.
    pub fn schedule_changes(&self) -> &str {
        &self.schedule_changes
    }

    /// The key recording the job enqueued for one tick of a schedule.
    pub fn schedule_tick(&self, id: &str, due_ms: u64) -> String {
        format!("{}:tick:{id}:{due_ms}", self.base)
    }

    /// Tracked jobs that have not ended, one field each: a record far
    /// smaller than a key of its own per job.
    pub fn live(&self) -> String {
        format!("{}:live", self.base)
    }

    /// A tracked job's metadata hash, from its first start on.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.base)
    }

    /// A tracked job's log list.
    pub fn job_log(&self, id: &str) -> String {
        format!("{}:job:{id}:log", self.base)
    }

    /// The index of retained completed jobs.
    pub fn completed(&self) -> String {
        format!("{}:completed", self.base)
    }

    /// The event stream.
    pub fn events(&self) -> String {
        format!("{}:events", self.base)
    }

    /// A completed job's result.
    pub fn result(&self, id: &str) -> String {
        format!("{}:result:{id}", self.base)
    }

    /// Stop requests for active jobs ([`crate::Queue::cancel`]): members
    /// `<priority index>:<entry id>`, scored by when they were asked for.
    pub fn stop_requests(&self) -> String {
        format!("{}:stop", self.base)
    }

    /// The key recording which job took an idempotency key.
    pub fn dedup(&self, idempotency_key: &str) -> String {
        format!("{}:dedup:{idempotency_key}", self.base)
    }

    /// The history stream: one snapshot per step, shared by every process.
    pub fn history(&self) -> String {
        format!("{}:history", self.base)
    }

    /// A dead-letter notifier's position: the id of the last dead letter
    /// it delivered (`streamq notify --name <name>`).
    pub fn notifier(&self, name: &str) -> String {
        format!("{}:notify:{name}", self.base)
    }

    /// A flow's record, kept under its parent's queue: the parent waiting
    /// for its children, and what each child ended with.
    pub fn flow(&self, parent_id: &str) -> String {
        format!("{}:flow:{parent_id}", self.base)
    }

    /// The keys of another queue under the same prefix (a flow's parent or
    /// children).
    pub(crate) fn sibling(&self, queue: &str) -> Result<QueueKeys, Error> {
        QueueKeys::new(&self.prefix, queue)
    }

    /// The layout record (a hash: `partitions`, `version`), kept in
    /// partition 0 only: how many partitions the queue has.
    pub fn layout(&self) -> String {
        format!("{}:layout", self.base)
    }

    /// The enqueue sequence (a hash: `n`, `epoch`, `epochs`): each job added
    /// takes the next number, and each server that writes it opens an epoch,
    /// so producers learn which of their jobs a failover rolled back.
    pub fn sequence(&self) -> String {
        format!("{}:seq", self.base)
    }

    /// The counters hash.
    pub fn stats(&self) -> &str {
        &self.stats
    }

    /// A glob matching every key of the queue, for ACL key patterns
    /// (`~<pattern>`) and `SCAN MATCH`.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.base)
    }

    /// [`QueueKeys::pattern`] with the glob characters of the names escaped
    /// (`*`, `?`, `[`, `]`, `\\`), so that `SCAN MATCH` with it never matches
    /// another queue's keys (a queue named `a*` must not match `ab`).
    pub(crate) fn literal_pattern(&self) -> String {
        let mut escaped = String::with_capacity(self.base.len() + 4);
        for c in self.base.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push_str(":*");
        escaped
    }

    /// Whether `key` is one of this queue's keys (starts with
    /// `<prefix>:{<queue>}:`).
    pub(crate) fn owns(&self, key: &str) -> bool {
        key.strip_prefix(self.base.as_str())
            .is_some_and(|rest| rest.starts_with(':'))
    }
}

/// Checks a queue name or key prefix: 1 to [`MAX_NAME_LEN`] bytes, no braces
/// (they would break the hash tag), no whitespace or control characters.
/// Also used for names that end up in keys: rate groups, schedule ids.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "is {} bytes, the limit is {MAX_NAME_LEN}",
            name.len()
        ))
    } else {
        name.chars()
            .find(|c| matches!(c, '{' | '}') || c.is_whitespace() || c.is_control())
            .map(|c| {
                format!("contains {c:?}; braces, whitespace and control characters are not allowed")
            })
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_tables_in_docs_and_here_match_the_names_built() {
        let keys = QueueKeys::new("streamq", "q").expect("valid names");
        let built: [(&str, String); 17] = [
            ("stream", keys.stream(Priority::Critical).to_owned()),
            ("stream", keys.stream(Priority::High).to_owned()),
            ("stream", keys.stream(Priority::Medium).to_owned()),
            ("stream", keys.stream(Priority::Low).to_owned()),
            ("hash", keys.stats().to_owned()),
            ("zset", keys.delayed().to_owned()),
            ("stream", keys.dead().to_owned()),
            ("string", keys.dedup("<key>")),
            ("hash", keys.latency().to_owned()),
            ("string", keys.paused().to_owned()),
            ("hash", keys.live()),
            ("hash", keys.job("<id>")),
            ("list", keys.job_log("<id>")),
            ("zset", keys.completed()),
            ("zset", keys.stop_requests()),
            ("string", keys.notifier("<name>")),
            ("hash", keys.flow("<id>")),
        ];
        let design = include_str!("../../docs/design.md");
        let here = include_str!("keys.rs");
        for (kind, key) in built {
            let row = format!("| `{key}` | {kind} |");
            assert!(design.contains(&row), "docs/design.md lacks the row {row}");
            let generic = key.replacen("streamq:{q}", "<prefix>:{<queue>}", 1);
            if ["high", "medium", "low"]
                .iter()
                .any(|p| generic.ends_with(p))
            {
                continue; // one row here: "(also `high`, `medium`, `low`)"
            }
            let padded = here
                .lines()
                .any(|l| l.contains(&format!("`{generic}`")) && l.contains(&format!("| {kind}")));
            assert!(padded, "the table in keys.rs lacks {generic} ({kind})");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = QueueKeys::new("streamq", "alerts").expect("valid names");
        assert_eq!(keys.stream(Priority::Critical), "streamq:{alerts}:critical");
        assert_eq!(keys.stream(Priority::Low), "streamq:{alerts}:low");
        assert_eq!(keys.stats(), "streamq:{alerts}:stats");
        assert_eq!(keys.dead(), "streamq:{alerts}:dead");
        assert_eq!(keys.delayed(), "streamq:{alerts}:delayed");
        assert_eq!(keys.dedup("evt-1"), "streamq:{alerts}:dedup:evt-1");
        for key in keys
            .streams()
            .iter()
            .map(String::as_str)
            .chain([keys.stats(), keys.dead()])
        {
            assert!(key.contains("{alerts}"), "{key}");
        }
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        let long = "q".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            "a{b",
            "a}b",
            "with space",
            "tab\t",
            "nul\0",
            long.as_str(),
        ] {
            match QueueKeys::new("streamq", bad) {
                Err(Error::InvalidName { what, name, .. }) => {
                    assert_eq!(what, "queue name");
                    assert_eq!(name, bad);
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            QueueKeys::new("bad{prefix", "ok"),
            Err(Error::InvalidName {
                what: "key prefix",
                ..
            })
        ));
        assert!(QueueKeys::new("streamq", "alerts:eu-west.1").is_ok());
    }

    #[test]
    fn the_scan_pattern_matches_this_queue_only() {
        let keys = QueueKeys::new("sq", "a*[x]?").expect("valid names");
        assert_eq!(keys.literal_pattern(), r"sq:{a\*\[x\]\?}:*");
        assert!(keys.owns("sq:{a*[x]?}:stats"));
        assert!(!keys.owns("sq:{a*[x]?}x"));
        assert!(!keys.owns("sq:{ab}:stats"));
    }
}

//! The inspector: a full picture of one queue for operators and dashboards.
//!
//! This module is off the hot path: workers and producers never call it. It
//! reads with a handful of commands per priority (`XLEN`, `XPENDING`,
//! `XINFO GROUPS`, `XINFO CONSUMERS`, one `XRANGE`), cheap enough to poll
//! every few seconds.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::Value;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::fields::{fields, number, our_group, text};
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::queue::{Queue, check_types};
use crate::time::now_ms;

/// One priority stream, as the inspector saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PriorityReport {
    /// Which stream.
    pub priority: Priority,
    /// Entries in the stream (waiting plus in flight).
    pub length: u64,
    /// Jobs not yet delivered (the group's lag).
    pub waiting: u64,
    /// Jobs delivered and not finished.
    pub in_flight: u64,
    /// How long the oldest waiting job has waited.
    pub oldest_waiting: Option<Duration>,
}

/// One consumer (worker) of the queue's group, over all priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerReport {
    /// Its name.
    pub name: String,
    /// Time since it last fetched or renewed a lease, the shortest over the
    /// priority streams.
    pub idle: Duration,
    /// Jobs it holds.
    pub pending: u64,
    /// Whether it fetched or renewed a lease within the thresholds'
    /// `consumer_timeout`. Running workers do one or the other every few
    /// seconds (an idle wait is at most the worker's block time, 5 s by
    /// default; heartbeats come every third of the lease), so a consumer
    /// idle longer is a worker that died or hangs. `streamq recover`
    /// removes such consumers once they hold no job.
    pub live: bool,
}

/// How a queue is doing, by the thresholds given to [`Queue::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Within every threshold.
    Healthy,
    /// Work is piling up: too many jobs waiting, or waiting too long.
    Backlogged(Vec<String>),
    /// Jobs are failing: more dead letters than allowed.
    Errors(Vec<String>),
    /// Jobs are waiting and no live consumer is there to run them (none at
    /// all, or all idle past the thresholds' `consumer_timeout`). Not
    /// reported while the queue is paused. When the queue is also
    /// backlogged, it is [`Health::Backlogged`] with this among its reasons.
    Stalled(Vec<String>),
    /// Redis could not be reached or read.
    Unavailable(String),
}

impl Health {
    /// `healthy`, `backlogged`, `errors`, `stalled` or `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Backlogged(_) => "backlogged",
            Health::Errors(_) => "errors",
            Health::Stalled(_) => "stalled",
            Health::Unavailable(_) => "unavailable",
        }
    }

    /// Why the queue is not healthy (empty when it is).
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Health::Healthy => Vec::new(),
            Health::Backlogged(r) | Health::Errors(r) | Health::Stalled(r) => r.clone(),
            Health::Unavailable(r) => vec![r.clone()],
        }
    }
}

/// When a queue stops being healthy. Every field's doc ends with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthThresholds {
    /// Backlogged above this many jobs waiting, over all priorities. Default: 10,000.
    pub max_waiting: u64,
    /// Backlogged when the oldest waiting job waited longer. Default: 60 s.
    pub max_oldest_waiting: Duration,
    /// Errors above this many dead letters. Default: 0.
    pub max_dead_letters: u64,
    /// A consumer idle longer than this is not live (see
    /// [`ConsumerReport::live`]); jobs waiting with no live consumer make
    /// the queue [`Health::Stalled`]. Default: 60 s.
    pub consumer_timeout: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            max_waiting: 10_000,
            max_oldest_waiting: Duration::from_secs(60),
            max_dead_letters: 0,
            consumer_timeout: Duration::from_secs(60),
        }
    }
}

impl HealthThresholds {
    /// Sets `max_waiting`.
    pub fn max_waiting(mut self, jobs: u64) -> HealthThresholds {
        self.max_waiting = jobs;
        self
    }

    /// Sets `max_oldest_waiting`.
    pub fn max_oldest_waiting(mut self, age: Duration) -> HealthThresholds {
        self.max_oldest_waiting = age;
        self
    }

    /// Sets `max_dead_letters`.
    pub fn max_dead_letters(mut self, letters: u64) -> HealthThresholds {
        self.max_dead_letters = letters;
        self
    }

    /// Sets `consumer_timeout`.
    pub fn consumer_timeout(mut self, idle: Duration) -> HealthThresholds {
        self.consumer_timeout = idle;
        self
    }
}

/// Everything the inspector knows about one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueReport {
    /// The queue's name.
    pub queue: String,
    /// Whether any of the queue's keys exists. `false` for a name nothing
    /// was ever enqueued to (or the wrong key prefix): everything reads as
    /// zero, and nothing was created by looking.
    pub exists: bool,
    /// Whether workers are told to stop fetching.
    pub paused: bool,
    /// One entry per priority, most urgent first.
    pub priorities: Vec<PriorityReport>,
    /// Consumers in the group, by name.
    pub consumers: Vec<ConsumerReport>,
    /// Jobs waiting for their time (retries, scheduled).
    pub delayed: u64,
    /// When the next delayed job is due, in Unix ms.
    pub next_due_ms: Option<u64>,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// The verdict.
    pub health: Health,
}

impl QueueReport {
    /// Jobs waiting over all priorities.
    pub fn waiting(&self) -> u64 {
        self.priorities.iter().map(|p| p.waiting).sum()
    }

    /// Jobs in flight over all priorities.
    pub fn in_flight(&self) -> u64 {
        self.priorities.iter().map(|p| p.in_flight).sum()
    }

    /// The longest any job has waited, over all priorities.
    pub fn oldest_waiting(&self) -> Option<Duration> {
        self.priorities
            .iter()
            .filter_map(|p| p.oldest_waiting)
            .max()
    }
}

impl Queue {
    /// Reads the queue's full state and judges its health. Two round trips.
    ///
    /// # Errors
    ///
    /// Connection and permission errors (see [`Queue::health`] for a call
    /// that turns them into [`Health::Unavailable`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn inspect(&self, thresholds: &HealthThresholds) -> Result<QueueReport, Error> {
        if let Some(parts) = self.split() {
            let each =
                crate::admin::partitions::each(&parts, |p| Box::pin(p.inspect_one(thresholds)))
                    .await?;
            if let Some(report) = crate::admin::partitions::merge_reports(each) {
                return Ok(report);
            }
        }
        self.inspect_one(thresholds).await
    }

    /// [`Queue::inspect`] on one partition (or a queue of one).
    async fn inspect_one(&self, thresholds: &HealthThresholds) -> Result<QueueReport, Error> {
        let keys = self.keys();
        let typed = self.typed_keys();
        // Errors come back per command: a stream without the group (no
        // worker ever started) reads as nothing in flight, never as a failure,
        // and nothing is created by looking.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (key, _) in &typed {
            pipe.cmd("TYPE").arg(*key);
        }
        for key in keys.streams() {
            pipe.cmd("XLEN").arg(key);
            pipe.cmd("XPENDING").arg(key).arg(GROUP);
            pipe.cmd("XINFO").arg("GROUPS").arg(key);
            pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(GROUP);
        }
        pipe.cmd("ZCARD").arg(keys.delayed());
        pipe.cmd("ZRANGE")
            .arg(keys.delayed())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        pipe.cmd("XLEN").arg(keys.dead());
        pipe.cmd("EXISTS").arg(keys.paused());
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn()).await?;
        let rest = replies.split_off(typed.len().min(replies.len()));
        let mut found = Vec::with_capacity(typed.len());
        for (value, (key, expected)) in replies.into_iter().zip(&typed) {
            let value = reply::pipeline_item(value, key, expected)?;
            found.push(redis::from_redis_value::<String>(value).unwrap_or_default());
        }
        let exists = check_types(&typed, &found)?;
        let mut replies = Vec::with_capacity(rest.len());
        for (i, value) in rest.into_iter().enumerate() {
            let key = keys
                .streams()
                .get(i / 4)
                .map_or(keys.dead(), String::as_str);
            // Where the stream or its group is missing, the reply means
            // "nothing".
            let stream_missing = i < 16 && !exists.get(i / 4).copied().unwrap_or(false);
            replies.push(if stream_missing || reply::is_nogroup_item(&value) {
                Value::Nil
            } else {
                reply::pipeline_item(value, key, "stream")?
            });
        }
        let (per_stream, rest) = replies.split_at(16.min(replies.len()));
        let count = |v: Option<&Value>| -> u64 {
            v.and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or(0)
        };

        let mut priorities = Vec::with_capacity(4);
        let mut consumers: BTreeMap<String, (Duration, u64)> = BTreeMap::new();
        let mut last_delivered = Vec::with_capacity(4);
        for (priority, chunk) in Priority::ALL.into_iter().zip(per_stream.chunks(4)) {
            let length = count(chunk.first());
            let in_flight = match chunk.get(1) {
                Some(Value::Array(summary)) => count(summary.first()),
                _ => 0,
            };
            let group = chunk.get(2).and_then(our_group).unwrap_or_default();
            let waiting = group
                .get("lag")
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or_else(|| length.saturating_sub(in_flight));
            last_delivered
                .push(text(&group, "last-delivered-id").unwrap_or_else(|| "0-0".to_owned()));
            if let Some(Value::Array(list)) = chunk.get(3) {
                for consumer in list.iter().filter_map(fields) {
                    let name = text(&consumer, "name").unwrap_or_default();
                    let idle = Duration::from_millis(number(&consumer, "idle"));
                    let pending = number(&consumer, "pending");
                    let entry = consumers.entry(name).or_insert((idle, 0));
                    entry.0 = entry.0.min(idle);
                    entry.1 += pending;
                }
            }
            priorities.push(PriorityReport {
                priority,
                length,
                waiting,
                in_flight,
                oldest_waiting: None,
            });
        }

        // The oldest waiting job is the first entry after the group's last
        // delivered id; its id carries its enqueue time.
        let mut pipe = redis::pipe();
        for (key, last) in keys.streams().iter().zip(&last_delivered) {
            pipe.cmd("XRANGE")
                .arg(key)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        let firsts: Vec<Vec<(String, HashMap<String, Value>)>> =
            pipe.query_async(&mut self.conn()).await?;
        let now = now_ms();
        for (report, first) in priorities.iter_mut().zip(firsts) {
            if report.waiting == 0 {
                continue;
            }
            report.oldest_waiting = first
                .first()
                .and_then(|(id, _)| id.split_once('-'))
                .and_then(|(ms, _)| ms.parse::<u64>().ok())
                .map(|ms| Duration::from_millis(now.saturating_sub(ms)));
        }

        let next_due_ms = match rest.get(1) {
            Some(Value::Array(pair)) => pair
                .get(1)
                .and_then(|v| redis::from_redis_value_ref::<f64>(v).ok())
                .map(|score| score as u64),
            _ => None,
        };
        let mut report = QueueReport {
            queue: self.name().to_owned(),
            exists: exists.iter().any(|e| *e),
            paused: count(rest.get(3)) == 1,
            priorities,
            consumers: consumers
                .into_iter()
                .map(|(name, (idle, pending))| ConsumerReport {
                    name,
                    idle,
                    pending,
                    live: idle <= thresholds.consumer_timeout,
                })
                .collect(),
            delayed: count(rest.first()),
            next_due_ms,
            dead_letters: count(rest.get(2)),
            health: Health::Healthy,
        };
        report.health = judge(&report, thresholds);
        Ok(report)
    }

    /// The queue's health: [`Queue::inspect`]'s verdict, or
    /// [`Health::Unavailable`] when Redis cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn health(&self, thresholds: &HealthThresholds) -> Health {
        match self.inspect(thresholds).await {
            Ok(report) => report.health,
            Err(err) => Health::Unavailable(err.to_string()),
        }
    }
}

fn judge(report: &QueueReport, t: &HealthThresholds) -> Health {
    if report.dead_letters > t.max_dead_letters {
        return Health::Errors(vec![format!(
            "{} dead letters (threshold {})",
            report.dead_letters, t.max_dead_letters
        )]);
    }
    let mut reasons = Vec::new();
    if report.waiting() > t.max_waiting {
        reasons.push(format!(
            "{} jobs waiting (threshold {})",
            report.waiting(),
            t.max_waiting
        ));
    }
    if let Some(oldest) = report
        .oldest_waiting()
        .filter(|o| *o > t.max_oldest_waiting)
    {
        reasons.push(format!(
            "oldest job waited {:.1} s (threshold {:.1} s)",
            oldest.as_secs_f64(),
            t.max_oldest_waiting.as_secs_f64()
        ));
    }
    let stalled =
        report.waiting() > 0 && !report.paused && !report.consumers.iter().any(|c| c.live);
    if stalled {
        let gone = report.consumers.len();
        reasons.push(if gone == 0 {
            format!("{} jobs waiting and no consumer", report.waiting())
        } else {
            format!(
                "{} jobs waiting and no live consumer ({gone} idle longer than {:.0} s)",
                report.waiting(),
                t.consumer_timeout.as_secs_f64()
            )
        });
    }
    // Backlogged takes precedence (its reasons then include the missing
    // consumer); stalled alone means work waits with nobody to do it.
    match (reasons.len(), stalled) {
        (0, _) => Health::Healthy,
        (1, true) => Health::Stalled(reasons),
        _ => Health::Backlogged(reasons),
    }
}

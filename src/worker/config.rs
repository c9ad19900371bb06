//! [`WorkerConfig`] and [`RetryBackoff`]: how a worker runs and retries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::capped_exponential;
use crate::error::{ConfigCheck, ConfigError};
use crate::job_id::JobId;
use crate::priority::Priority;

use super::limit::RateLimit;

/// A job that was moved to the dead letters, as told to
/// [`WorkerConfig::on_dead_letter`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLettered {
    /// The job's id (empty when its envelope could not be read).
    pub job_id: JobId,
    /// The priority stream it came from.
    pub priority: Priority,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub error: String,
}

type DeadLetterHook = Arc<dyn Fn(&DeadLettered) + Send + Sync>;

/// How a worker runs. Every setter's doc ends with its default.
#[derive(Clone)]
pub struct WorkerConfig {
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) block: Duration,
    pub(crate) ack_batch: usize,
    pub(crate) consumer: Option<String>,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: bool,
    pub(crate) reclaim_interval: Duration,
    pub(crate) promote_interval: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) backoff: RetryBackoff,
    pub(crate) on_dead_letter: Option<DeadLetterHook>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) group_rate_limit: Option<RateLimit>,
    pub(crate) own_thread: bool,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("block", &self.block)
            .field("ack_batch", &self.ack_batch)
            .field("consumer", &self.consumer)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("reclaim_interval", &self.reclaim_interval)
            .field("promote_interval", &self.promote_interval)
            .field("max_deliveries", &self.max_deliveries)
            .field("backoff", &self.backoff)
            .field("on_dead_letter", &self.on_dead_letter.is_some())
            .field("shutdown_grace", &self.shutdown_grace)
            .field("rate_limit", &self.rate_limit)
            .field("group_rate_limit", &self.group_rate_limit)
            .field("own_thread", &self.own_thread)
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            prefetch: 16,
            block: Duration::from_secs(5),
            ack_batch: 256,
            consumer: None,
            lease: Duration::from_secs(30),
            heartbeat: true,
            reclaim_interval: Duration::from_secs(5),
            promote_interval: Duration::from_millis(250),
            max_deliveries: 5,
            backoff: RetryBackoff::default(),
            on_dead_letter: None,
            shutdown_grace: Duration::from_secs(30),
            rate_limit: None,
            group_rate_limit: None,
            own_thread: false,
        }
    }
}

impl WorkerConfig {
    /// The default configuration.
    pub fn new() -> WorkerConfig {
        WorkerConfig::default()
    }

    /// How many jobs run at once. Default: 16.
    pub fn concurrency(mut self, jobs: usize) -> WorkerConfig {
        self.concurrency = jobs;
        self
    }

    /// How many claimed jobs may wait for a free slot beyond those running.
    /// More keeps slots busy across fetch round trips; fewer lets a newly
    /// arrived urgent job overtake sooner. Default: 16.
    pub fn prefetch(mut self, jobs: usize) -> WorkerConfig {
        self.prefetch = jobs;
        self
    }

    /// The longest one idle wait for new jobs blocks. Default: 5 s.
    pub fn block(mut self, block: Duration) -> WorkerConfig {
        self.block = block;
        self
    }

    /// The most completed jobs acknowledged in one script call. Default: 256.
    pub fn ack_batch(mut self, jobs: usize) -> WorkerConfig {
        self.ack_batch = jobs;
        self
    }

    /// The consumer name in the group. Must be unique among live workers.
    /// Default: host name, process id and a random suffix.
    pub fn consumer_name(mut self, name: impl Into<String>) -> WorkerConfig {
        self.consumer = Some(name.into());
        self
    }

    /// How long a claimed job may go without a heartbeat before another
    /// worker may reclaim it (its worker is presumed dead). Workers of one
    /// queue should agree on it. Default: 30 s.
    pub fn lease(mut self, lease: Duration) -> WorkerConfig {
        self.lease = lease;
        self
    }

    /// Renew the lease of every claimed job every third of the lease, so a
    /// long job is never reclaimed while its worker lives. Turn off only to
    /// demonstrate what it prevents. Default: on.
    pub fn heartbeat(mut self, on: bool) -> WorkerConfig {
        self.heartbeat = on;
        self
    }

    /// How often to look for jobs whose lease ran out. Default: 5 s.
    pub fn reclaim_interval(mut self, interval: Duration) -> WorkerConfig {
        self.reclaim_interval = interval;
        self
    }

    /// How often to move due delayed jobs (retries, scheduled jobs) into
    /// their streams; sooner when the next one is due sooner. Default: 250 ms.
    pub fn promote_interval(mut self, interval: Duration) -> WorkerConfig {
        self.promote_interval = interval;
        self
    }

    /// Dead-letter a job once it has been delivered this many times without
    /// finishing (each worker holding it died or hung): a poison message.
    /// Default: 5.
    pub fn max_deliveries(mut self, deliveries: u32) -> WorkerConfig {
        self.max_deliveries = deliveries;
        self
    }

    /// The delay before a retry. Default: [`RetryBackoff::default`].
    pub fn backoff(mut self, backoff: RetryBackoff) -> WorkerConfig {
        self.backoff = backoff;
        self
    }

    /// Called after each job this worker moves to the dead letters, for
    /// notifications. It runs on the worker's finishing task: keep it quick
    /// (hand slow work to a channel). Default: none.
    pub fn on_dead_letter(
        mut self,
        hook: impl Fn(&DeadLettered) + Send + Sync + 'static,
    ) -> WorkerConfig {
        self.on_dead_letter = Some(Arc::new(hook));
        self
    }

    /// How long running jobs may take to finish once shutdown starts. Jobs
    /// claimed but not started are handed back to the queue at once; running
    /// ones are asked to stop ([`crate::Job::stopped`]) and given this long;
    /// those still running then are dropped and handed back, so another
    /// worker runs them at once rather than after their lease. Default: 30 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> WorkerConfig {
        self.shutdown_grace = grace;
        self
    }

    /// Runs the worker, its handlers and its Redis connections on a thread
    /// of its own, on a single-threaded tokio runtime, rather than on the
    /// runtime that calls [`crate::Worker::run`].
    ///
    /// At a steady rate, where jobs arrive one at a time, a multi-threaded
    /// runtime wakes a second thread for about every job; on a thread of
    /// its own the worker spares those wake-ups, which lowers its CPU per
    /// job and its rare slow starts (`docs/sizing.md`, "Steady rates", has
    /// the figures). Flat out it costs nothing. Handlers share the one
    /// thread: this suits handlers that mostly wait (on the network, on
    /// Redis), not ones that compute for long; start a worker per core for
    /// more. What a handler spawns runs on that thread and ends with the
    /// worker. The worker connects again from its thread, with as many
    /// connections as it would use without. A connection the handler
    /// shares with the rest of the process (a [`crate::Queue`] it enqueues
    /// to, say) keeps working, but one that reconnects while called from
    /// the worker's thread runs there until the worker stops, and may then
    /// fail one call as unavailable before it reconnects. Default: off.
    pub fn own_thread(mut self, on: bool) -> WorkerConfig {
        self.own_thread = on;
        self
    }

    /// Start at most `limit.max()` jobs of the queue per window, counted
    /// in Redis across every worker and process that sets it (they should
    /// agree on it). The claim and the count are one script step; a worker
    /// that finds the window spent sleeps until the next one opens, without
    /// polling. Under a limit a worker claims only jobs it can start now
    /// (no prefetch), so a job's claim is its start. Reclaimed jobs (whose
    /// worker died) spent their token already and are not counted again.
    /// Default: no limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> WorkerConfig {
        self.rate_limit = Some(limit);
        self
    }

    /// Start at most `limit.max()` jobs per window for each rate group
    /// ([`crate::EnqueueOptions::rate_group`]), across every worker and
    /// process that sets it. A job whose group's window is spent goes back
    /// to the delayed set, due when its group's next window opens, without
    /// spending an attempt; other groups' jobs go on. Jobs without a group
    /// are not limited by it. Default: no limit.
    pub fn group_rate_limit(mut self, limit: RateLimit) -> WorkerConfig {
        self.group_rate_limit = Some(limit);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut check = ConfigCheck::default();
        check.positive("concurrency", self.concurrency);
        check.positive("ack batch", self.ack_batch);
        check.require(self.ack_batch <= 1000, || {
            format!("ack batch is {}, the most is 1000", self.ack_batch)
        });
        check.require(self.block >= Duration::from_millis(1), || {
            "block must be at least 1 ms".to_owned()
        });
        check.require(self.lease >= Duration::from_millis(100), || {
            "lease must be at least 100 ms".to_owned()
        });
        check.nonzero("reclaim interval", self.reclaim_interval);
        check.nonzero("promote interval", self.promote_interval);
        check.require(self.max_deliveries >= 1, || {
            "max deliveries must be at least 1".to_owned()
        });
        if let Some(name) = &self.consumer {
            check.require(
                !name.is_empty() && !name.chars().any(char::is_control),
                || format!("consumer name {name:?} must be non-empty text"),
            );
        }
        self.backoff.check(&mut check);
        if let Some(limit) = &self.rate_limit {
            limit.check("rate limit", &mut check);
        }
        if let Some(limit) = &self.group_rate_limit {
            limit.check("group rate limit", &mut check);
        }
        check.finish()
    }
}

/// How long to wait before retrying a failed job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryBackoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `base * 2^(attempt - 1)`, capped at `max`, then scaled by a random
    /// factor between 0.75 and 1.25 when `jitter` is on, so retries of jobs
    /// that failed together spread out.
    Exponential {
        /// The delay before the first retry.
        base: Duration,
        /// The longest delay.
        max: Duration,
        /// Spread delays by +-25%.
        jitter: bool,
    },
}

impl Default for RetryBackoff {
    /// Exponential from 2 s, capped at 1 h, with jitter.
    fn default() -> Self {
        RetryBackoff::Exponential {
            base: Duration::from_secs(2),
            max: Duration::from_secs(3600),
            jitter: true,
        }
    }
}

impl RetryBackoff {
    /// The delay before retrying after failed attempt `attempt` (1-based),
    /// given a random number in `[0, 1)` for the jitter.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        match *self {
            RetryBackoff::Fixed(delay) => delay,
            RetryBackoff::Exponential { base, max, jitter } => {
                let delay = capped_exponential(base, max, attempt.saturating_sub(1));
                if jitter {
                    delay.mul_f64(0.75 + 0.5 * random.clamp(0.0, 1.0))
                } else {
                    delay
                }
            }
        }
    }

    fn check(&self, check: &mut ConfigCheck) {
        if let RetryBackoff::Exponential { base, max, .. } = self {
            check.require(base <= max, || {
                format!("backoff base {base:?} is longer than its max {max:?}")
            });
        }
    }
}

/// A consumer name unique to this process: host, pid and a random suffix.
pub(super) fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 8..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_caps_and_jitters() {
        let backoff = RetryBackoff::Exponential {
            base: Duration::from_secs(2),
            max: Duration::from_secs(10),
            jitter: false,
        };
        let delays: Vec<u64> = (1..=5).map(|a| backoff.delay(a, 0.5).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 10, 10]);
        let jittered = RetryBackoff::default();
        assert_eq!(jittered.delay(1, 0.0), Duration::from_millis(1500));
        assert_eq!(jittered.delay(1, 1.0), Duration::from_millis(2500));
        assert_eq!(jittered.delay(200, 0.5), Duration::from_secs(3600));
        assert_eq!(
            RetryBackoff::Fixed(Duration::from_secs(3)).delay(9, 0.9),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn every_invalid_setting_is_reported() {
        let err = WorkerConfig::new()
            .concurrency(0)
            .lease(Duration::from_millis(5))
            .max_deliveries(0)
            .backoff(RetryBackoff::Exponential {
                base: Duration::from_secs(9),
                max: Duration::from_secs(1),
                jitter: true,
            })
            .validate()
            .expect_err("invalid");
        assert_eq!(err.problems().len(), 4, "{err}");
    }
}

//! [`HttpConfig`]: tokens, limits, batching and history settings.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::admin::inspect::HealthThresholds;
use crate::http::ServeError;

/// Settings of the HTTP server. Every setter's doc ends with its default.
#[derive(Clone)]
pub struct HttpConfig {
    pub(crate) token: Option<String>,
    pub(crate) ingest_token: Option<String>,
    pub(crate) read_only: bool,
    pub(crate) insecure: bool,
    pub(crate) body_limit: usize,
    pub(crate) batch_body_limit: usize,
    pub(crate) coalesce_jobs: usize,
    pub(crate) coalesce_wait: Duration,
    pub(crate) idempotency_ttl: Duration,
    pub(crate) thresholds: HealthThresholds,
    pub(crate) recover_idle: Duration,
    pub(crate) history_step: Option<Duration>,
    pub(crate) history_keep: Duration,
}

impl fmt::Debug for HttpConfig {
    /// Everything but the tokens' values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ingest_token", &self.ingest_token.as_ref().map(|_| "***"))
            .field("read_only", &self.read_only)
            .field("insecure", &self.insecure)
            .field("body_limit", &self.body_limit)
            .field("batch_body_limit", &self.batch_body_limit)
            .field("coalesce_jobs", &self.coalesce_jobs)
            .field("coalesce_wait", &self.coalesce_wait)
            .field("history_step", &self.history_step)
            .finish_non_exhaustive()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            ingest_token: None,
            read_only: false,
            insecure: false,
            body_limit: 1 << 20,
            batch_body_limit: 64 << 20,
            coalesce_jobs: 500,
            coalesce_wait: Duration::ZERO,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            thresholds: HealthThresholds::default(),
            recover_idle: Duration::from_secs(30),
            history_step: Some(Duration::from_secs(60)),
            history_keep: Duration::from_secs(24 * 3600),
        }
    }
}

/// The most jobs one coalesced enqueue carries: one script call's worth, so
/// that a coalesced enqueue is atomic.
pub const MAX_COALESCE_JOBS: usize = 1000;

/// The longest a coalescer may hold a job to fill its batch.
pub const MAX_COALESCE_WAIT: Duration = Duration::from_millis(100);

impl HttpConfig {
    /// The defaults.
    pub fn new() -> HttpConfig {
        HttpConfig::default()
    }

    /// The bearer token that guards the admin API (reads and writes) and the
    /// dashboard's actions. Without one, anyone who can reach the server may
    /// use them, which is why [`crate::http::serve`] refuses a non-loopback
    /// address without a token. Default: none.
    pub fn token(mut self, token: impl Into<String>) -> HttpConfig {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// A separate bearer token required on the ingestion endpoints (the
    /// admin token is accepted there too). Default: none; ingestion is open.
    pub fn ingest_token(mut self, token: impl Into<String>) -> HttpConfig {
        self.ingest_token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// Refuse every request that would change the queue (ingestion included)
    /// with `403`. Default: off.
    pub fn read_only(mut self, on: bool) -> HttpConfig {
        self.read_only = on;
        self
    }

    /// Let [`crate::http::serve`] listen on a non-loopback address without a
    /// token. Default: off.
    pub fn insecure(mut self, on: bool) -> HttpConfig {
        self.insecure = on;
        self
    }

    /// The largest body of a single-job request; larger ones get `413`.
    /// Default: 1 MiB.
    pub fn body_limit(mut self, bytes: usize) -> HttpConfig {
        self.body_limit = bytes.max(1);
        self
    }

    /// The largest body of a batch request. Default: 64 MiB.
    pub fn batch_body_limit(mut self, bytes: usize) -> HttpConfig {
        self.batch_body_limit = bytes.max(1);
        self
    }

    /// How the queue's enqueue coalescing fills a shared script call.
    pub(crate) fn fill(&self) -> crate::producer::Fill {
        crate::producer::Fill {
            max_jobs: self.coalesce_jobs,
            wait: self.coalesce_wait,
        }
    }

    /// Coalesce at most this many concurrent single-job requests into one
    /// enqueue, clamped to 1..=[`MAX_COALESCE_JOBS`]. Default: 500.
    pub fn coalesce_jobs(mut self, jobs: usize) -> HttpConfig {
        self.coalesce_jobs = jobs.clamp(1, MAX_COALESCE_JOBS);
        self
    }

    /// How long the caller leading a shared enqueue may wait for more
    /// requests to fill it once it holds a send slot, clamped to
    /// [`MAX_COALESCE_WAIT`]. With zero it sends what has arrived as soon
    /// as a send slot is free, which batches under load and adds no delay
    /// when idle. Default: zero.
    pub fn coalesce_wait(mut self, wait: Duration) -> HttpConfig {
        self.coalesce_wait = wait.min(MAX_COALESCE_WAIT);
        self
    }

    /// How long an alert's `id` (or a job's `idempotency_key`) keeps a
    /// second enqueue with the same key out. Default: 24 h.
    pub fn idempotency_ttl(mut self, ttl: Duration) -> HttpConfig {
        self.idempotency_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// When the health endpoint stops saying `healthy`. Default:
    /// [`HealthThresholds::default`].
    pub fn thresholds(mut self, thresholds: HealthThresholds) -> HttpConfig {
        self.thresholds = thresholds;
        self
    }

    /// What recover-stalled treats as stalled: in flight without a
    /// heartbeat this long. Use the workers' lease. Default: 30 s.
    pub fn recover_idle(mut self, idle: Duration) -> HttpConfig {
        self.recover_idle = idle;
        self
    }

    /// Record the queue's history every `step` (at least 1 s), keeping
    /// `keep` of it (at least one step); `None` records nothing (reading
    /// what others recorded still works). Default: every 60 s, for 24 h.
    pub fn history(mut self, step_keep: Option<(Duration, Duration)>) -> HttpConfig {
        match step_keep {
            Some((step, keep)) => {
                let step = step.max(Duration::from_secs(1));
                self.history_step = Some(step);
                self.history_keep = keep.max(step);
            }
            None => self.history_step = None,
        }
        self
    }

    /// The history step and how many steps to keep, when recording.
    pub(crate) fn history_settings(&self) -> Option<(Duration, u64)> {
        let step = self.history_step?;
        let steps = self.history_keep.as_millis() / step.as_millis().max(1);
        Some((step, u64::try_from(steps).unwrap_or(u64::MAX).max(1)))
    }

    /// The refusal to expose an unguarded admin API.
    pub(crate) fn check_exposure(&self, addr: SocketAddr) -> Result<(), ServeError> {
        if addr.ip().is_loopback() || self.token.is_some() || self.insecure {
            Ok(())
        } else {
            Err(ServeError::Exposed(addr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token_or_insecure() {
        let public: SocketAddr = ([0, 0, 0, 0], 8000).into();
        let local: SocketAddr = ([127, 0, 0, 1], 8000).into();
        let v6: SocketAddr = "[::1]:8000".parse().expect("addr");
        assert!(HttpConfig::new().check_exposure(local).is_ok());
        assert!(HttpConfig::new().check_exposure(v6).is_ok());
        assert!(matches!(
            HttpConfig::new().check_exposure(public),
            Err(ServeError::Exposed(_))
        ));
        assert!(HttpConfig::new().token("t").check_exposure(public).is_ok());
        assert!(
            HttpConfig::new()
                .insecure(true)
                .check_exposure(public)
                .is_ok()
        );
        // An empty token is no token.
        assert!(HttpConfig::new().token("").check_exposure(public).is_err());
    }

    #[test]
    fn bounds_are_clamped() {
        let c = HttpConfig::new()
            .coalesce_jobs(0)
            .coalesce_wait(Duration::from_secs(5))
            .history(Some((Duration::ZERO, Duration::ZERO)));
        assert_eq!(c.coalesce_jobs, 1);
        assert_eq!(c.coalesce_wait, MAX_COALESCE_WAIT);
        assert_eq!(c.history_settings(), Some((Duration::from_secs(1), 1)));
        assert_eq!(HttpConfig::new().coalesce_jobs(5000).coalesce_jobs, 1000);
        assert_eq!(
            HttpConfig::new().history_settings(),
            Some((Duration::from_secs(60), 1440))
        );
        assert!(!format!("{:?}", HttpConfig::new().token("s3cret")).contains("s3cret"));
    }
}

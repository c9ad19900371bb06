//! Rate limits: [`RateLimit`], the per-group admission of claimed jobs
//! (`rate_groups` script), and putting a job back when its handler reports
//! that a downstream rate-limited it (`defer` script).
//!
//! The queue-wide limit lives in the `fetch` script itself: a claim and the
//! token it spends are one step. A per-group limit needs each job's group,
//! which only Rust reads (scripts never decode envelopes), so it is a second
//! atomic step right after the claim: each claimed job of a limited group
//! either spends its group's token or goes back to the delayed set, due when
//! its group's next window opens, its attempt count unchanged. Other groups'
//! jobs are never held behind it.

use std::time::Duration;

use redis::Value;
use tokio_util::sync::CancellationToken;

use super::fetch::Claimed;
use super::finish::{Finished, Outcome};
use super::lease::Holdings;
use crate::backoff::Backoff;
use crate::error::{ConfigCheck, Error};
use crate::protocol::envelope::Envelope;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::{COMMON_KEYS, ScriptCall, scripts};
use crate::queue::Queue;
use crate::time::{micros, millis, now_ms, now_us};

/// At most `max` jobs started per `period`, across every worker and process
/// that applies it: a fixed window, counted in Redis.
///
/// Windows are aligned to multiples of `period` on the Unix clock (the
/// workers' clocks: keep them in sync). Within each window at most `max`
/// jobs are claimed; a window boundary may let `2 * max` start within one
/// `period` (the end of one window and the start of the next). For a
/// tighter bound over any sliding `period`, halve both: `max / 2` per
/// `period / 2` allows at most `1.5 * max` in any `period`. See
/// docs/design.md, "Rate limits".
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use streamq::{RateLimit, WorkerConfig};
///
/// // 100 jobs a second for the whole queue, 5 a second per tenant.
/// let config = WorkerConfig::new()
///     .rate_limit(RateLimit::new(100, Duration::from_secs(1)))
///     .group_rate_limit(RateLimit::new(5, Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    max: u32,
    period: Duration,
}

impl RateLimit {
    /// At most `max` jobs started per `period`. Checked when the worker is
    /// built: `max` at least 1, `period` at least 1 ms.
    pub fn new(max: u32, period: Duration) -> RateLimit {
        RateLimit { max, period }
    }

    /// The jobs allowed per window.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The window's length.
    pub fn period(&self) -> Duration {
        self.period
    }

    pub(crate) fn period_ms(&self) -> u64 {
        millis(self.period)
    }

    pub(crate) fn check(&self, what: &str, check: &mut ConfigCheck) {
        check.require(self.max >= 1, || {
            format!("{what} must allow at least 1 job")
        });
        check.require(self.period >= Duration::from_millis(1), || {
            format!("{what} period must be at least 1 ms")
        });
    }
}

/// Applies a per-group limit to freshly claimed (and held) jobs: returns
/// those that may start now. Jobs held back are released (they are back in
/// the delayed set); so are jobs no longer ours. Jobs without a group pass.
///
/// A Redis error is retried with backoff until `shutdown`; the jobs stay
/// held and leased meanwhile. On shutdown they are released unstarted, and
/// reclaimed by another worker once their lease runs out.
pub(super) async fn admit(
    queue: &Queue,
    consumer: &str,
    limit: RateLimit,
    jobs: Vec<Claimed>,
    holdings: &Holdings,
    shutdown: &CancellationToken,
) -> Vec<Claimed> {
    let (grouped, mut free): (Vec<(Claimed, String)>, Vec<Claimed>) = {
        let mut grouped = Vec::new();
        let mut free = Vec::new();
        for job in jobs {
            match group_of(&job) {
                Some(group) => grouped.push((job, group)),
                None => free.push(job),
            }
        }
        (grouped, free)
    };
    if grouped.is_empty() {
        return free;
    }
    let mut backoff = Backoff::redis();
    let (now, lost, deferred) = loop {
        let now = now_ms();
        let call = rate_groups_call(queue, consumer, limit, &grouped, now);
        let result = match call.invoke::<Value, _>(&mut queue.conn()).await {
            Ok(reply) => parse_rate_groups(reply),
            Err(err) => Err(Error::from(err)),
        };
        match result {
            Ok((lost, deferred)) => break (now, lost, deferred),
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(queue = queue.name(), %err, retry_in = ?delay, "applying group rate limits failed");
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        for (job, _) in &grouped {
                            holdings.forget(job.priority, &job.entry_id);
                        }
                        return free;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    for (mut job, group) in grouped {
        if lost.contains(&job.entry_id) || deferred.contains(&job.entry_id) {
            holdings.forget(job.priority, &job.entry_id);
            tracing::debug!(
                queue = queue.name(),
                entry = job.entry_id,
                group,
                "held back by its group's rate limit"
            );
        } else {
            // Its token was spent now: that is when the limit counts it.
            job.claimed_ms = now;
            free.push(job);
        }
    }
    free
}

/// The job's rate group, read from its envelope; `None` when it has none
/// (or the envelope does not decode: the worker dead-letters it later).
fn group_of(job: &Claimed) -> Option<String> {
    let envelope = Envelope::decode(job.envelope.as_deref()?).ok()?;
    envelope.group.map(std::borrow::Cow::into_owned)
}

fn rate_groups_call(
    queue: &Queue,
    consumer: &str,
    limit: RateLimit,
    jobs: &[(Claimed, String)],
    now: u64,
) -> ScriptCall {
    let keys = queue.keys();
    let mut extra = vec![keys.delayed().to_owned()];
    let mut indexes = Vec::with_capacity(jobs.len());
    for (_, group) in jobs {
        let key = keys.rate_group(group);
        let at = match extra.iter().position(|k| *k == key) {
            Some(at) => at,
            None => {
                extra.push(key);
                extra.len() - 1
            }
        };
        indexes.push(COMMON_KEYS + at + 1);
    }
    let mut call = scripts().rate_groups.call(keys, &extra);
    call.arg(GROUP)
        .arg(consumer)
        .arg(now)
        .arg(limit.max)
        .arg(limit.period_ms());
    for ((job, _), index) in jobs.iter().zip(indexes) {
        call.arg(job.priority.lua_index())
            .arg(&job.entry_id)
            .arg(index)
            .arg(job.envelope.as_deref().unwrap_or_default());
    }
    call
}

/// `rate_groups`'s reply: the lost entry ids and the deferred ones.
fn parse_rate_groups(reply: Value) -> Result<(Vec<String>, Vec<String>), Error> {
    let mut body = reply::done(&scripts().rate_groups, reply)?;
    let lost = body.lost()?;
    let mut pairs = body.array()?;
    let mut deferred = Vec::with_capacity(pairs.len() / 2);
    while !pairs.is_empty() {
        deferred.push(pairs.text()?);
        let _due = pairs.int()?;
    }
    Ok((lost, deferred))
}

/// The outcome of a run whose handler reported a downstream rate limit:
/// back in the delayed set after `after`, attempt count unchanged.
pub(super) fn deferred_outcome(claimed: &Claimed, after: Duration, job_id: &str) -> Outcome {
    let due_us = now_us().saturating_add(micros(after));
    let envelope = claimed
        .envelope
        .as_deref()
        .ok_or_else(|| Error::Decode("no envelope".to_owned()))
        .and_then(Envelope::decode)
        .and_then(|mut envelope| {
            envelope.ready_us = due_us;
            envelope.encode(usize::MAX)
        });
    match envelope {
        Ok(envelope) => {
            tracing::info!(job = job_id, retry_in = ?after, "rate-limited by a downstream; will run again without spending an attempt");
            Outcome::Defer {
                envelope,
                due_ms: due_us / 1000,
            }
        }
        Err(e) => Outcome::Dead {
            job_id: job_id.to_owned(),
            attempts: 0,
            error: format!("rate-limited, and cannot schedule the next run: {e}"),
            failed_run: false,
        },
    }
}

/// The fenced `defer` call for a finished job.
pub(super) fn defer_call(
    queue: &Queue,
    consumer: &str,
    job: &Finished,
    envelope: &[u8],
    due_ms: u64,
) -> ScriptCall {
    let keys = queue.keys();
    let mut call = scripts().defer.call(keys, &[keys.delayed()]);
    call.arg(GROUP)
        .arg(consumer)
        .arg(&job.entry_id)
        .arg(job.priority.lua_index())
        .arg(due_ms)
        .arg(envelope);
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        let mut check = ConfigCheck::default();
        RateLimit::new(0, Duration::ZERO).check("rate limit", &mut check);
        RateLimit::new(5, Duration::from_secs(1)).check("group rate limit", &mut check);
        let err = check.finish().expect_err("two problems");
        assert_eq!(err.problems().len(), 2, "{err}");
    }

    #[test]
    fn rate_groups_replies_parse() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Int(0),
            Value::Array(vec![bulk("1-0")]),
            Value::Array(vec![
                bulk("2-0"),
                Value::Int(1000),
                bulk("3-0"),
                Value::Int(2000),
            ]),
        ]);
        let (lost, deferred) = parse_rate_groups(reply).expect("parses");
        assert_eq!(lost, ["1-0"]);
        assert_eq!(deferred, ["2-0", "3-0"]);
    }
}

//! Schedules in Redis: [`Schedule`] (what to enqueue, when), its stored
//! definition, and [`Queue::upsert_schedule`], [`Queue::remove_schedule`],
//! [`Queue::schedules`].

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::timing::{Ticks, Timing};
use crate::error::{ConfigCheck, Error};
use crate::priority::Priority;
use crate::protocol::envelope::encode_payload;
use crate::protocol::keys::validate_name;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::{millis, now_ms};

/// How many change entries the changes stream keeps (approximately).
const CHANGES_CAP: u64 = 100;

/// What a schedule does about ticks that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Skip them: a tick is run only while it is the latest one due; once a
    /// later tick has passed too, the missed ones make no job, and the
    /// schedule resumes at the next tick to come.
    #[default]
    Skip,
    /// Run once: however many ticks were missed, one job is enqueued for
    /// them all, then the schedule resumes at the next tick to come.
    RunOnce,
}

/// A repeatable job: what to enqueue and when. Saved with
/// [`Queue::upsert_schedule`]; a [`crate::Scheduler`] enqueues it, one job
/// per tick however many schedulers run.
///
/// # Examples
///
/// ```no_run
/// # async fn example(queue: streamq::Queue) -> Result<(), streamq::Error> {
/// use std::time::Duration;
/// use streamq::{CatchUp, Priority, Schedule};
///
/// let digest = Schedule::cron("daily-digest", "0 9 * * MON-FRI", "Europe/Paris")
///     .name("digest")
///     .catch_up(CatchUp::RunOnce);
/// queue.upsert_schedule(&digest, &"send the digest").await?;
///
/// let probe = Schedule::every("probe", Duration::from_secs(30)).priority(Priority::High);
/// queue.upsert_schedule(&probe, &"ping db-1").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    id: String,
    timing: Timing,
    catch_up: CatchUp,
    name: String,
    priority: Priority,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    rate_group: Option<String>,
}

impl Schedule {
    /// A schedule `id` ticking every `interval`, at the multiples of it
    /// since the Unix epoch ([`Timing::Every`]).
    pub fn every(id: impl Into<String>, interval: Duration) -> Schedule {
        Schedule::new(id.into(), Timing::Every(interval))
    }

    /// A schedule `id` ticking by a cron `expression` in `time_zone` (IANA
    /// name, e.g. `UTC`, `America/New_York`). Checked when saved.
    pub fn cron(
        id: impl Into<String>,
        expression: impl Into<String>,
        time_zone: impl Into<String>,
    ) -> Schedule {
        Schedule::new(
            id.into(),
            Timing::Cron {
                expression: expression.into(),
                time_zone: time_zone.into(),
            },
        )
    }

    fn new(id: String, timing: Timing) -> Schedule {
        Schedule {
            id,
            timing,
            catch_up: CatchUp::default(),
            name: String::new(),
            priority: Priority::default(),
            max_attempts: None,
            timeout: None,
            rate_group: None,
        }
    }

    /// What to do about ticks missed while no scheduler ran. Default:
    /// [`CatchUp::Skip`].
    pub fn catch_up(mut self, catch_up: CatchUp) -> Schedule {
        self.catch_up = catch_up;
        self
    }

    /// The name of each job. Default: empty.
    pub fn name(mut self, name: impl Into<String>) -> Schedule {
        self.name = name.into();
        self
    }

    /// The priority of each job. Default: [`Priority::Medium`].
    pub fn priority(mut self, priority: Priority) -> Schedule {
        self.priority = priority;
        self
    }

    /// How many times each job may run. Default: the queue's setting, as
    /// the scheduler's queue handle has it.
    pub fn max_attempts(mut self, attempts: u32) -> Schedule {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// How long one run of each job may take. Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Schedule {
        self.timeout = Some(timeout);
        self
    }

    /// The rate group of each job ([`crate::EnqueueOptions::rate_group`]).
    /// Default: none.
    pub fn rate_group(mut self, group: impl Into<String>) -> Schedule {
        self.rate_group = Some(group.into());
        self
    }

    /// The schedule's id, unique within its queue.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When it ticks.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// What it does about missed ticks.
    pub fn catch_up_policy(&self) -> CatchUp {
        self.catch_up
    }

    /// The name of each job ("" when none).
    pub fn job_name(&self) -> &str {
        &self.name
    }

    /// The priority of each job.
    pub fn job_priority(&self) -> Priority {
        self.priority
    }

    /// How many times each job may run, when the schedule says.
    pub fn job_max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// How long one run of each job may take, when the schedule says.
    pub fn job_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The rate group of each job, if any.
    pub fn job_rate_group(&self) -> Option<&str> {
        self.rate_group.as_deref()
    }
}

/// What [`Queue::upsert_schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upserted {
    /// Whether the schedule is new, changed, or was saved identical.
    pub change: ScheduleChange,
    /// Its next tick, Unix ms.
    pub next_due_ms: u64,
}

/// Whether an upsert created, changed or kept a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    /// No schedule had this id.
    Created,
    /// The schedule changed; its next tick was computed anew.
    Updated,
    /// The same definition was saved already; its next tick stays.
    Unchanged,
}

/// A saved schedule, as [`Queue::schedules`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule.
    pub schedule: Schedule,
    /// Its next tick, Unix ms (`None` when it has none, or is being
    /// removed).
    pub next_due_ms: Option<u64>,
}

/// A schedule as stored: MessagePack with field names, read only by Rust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Definition {
    pub(crate) v: u8,
    pub(crate) every_ms: Option<u64>,
    pub(crate) cron: Option<String>,
    pub(crate) tz: Option<String>,
    pub(crate) run_once: bool,
    pub(crate) name: String,
    pub(crate) priority: u8,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) rate_group: Option<String>,
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}

/// The definition layout this build writes; newer ones are refused.
const DEFINITION_VERSION: u8 = 1;

impl Definition {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Definition, Error> {
        let definition: Definition =
            rmp_serde::from_slice(bytes).map_err(|e| Error::Decode(format!("schedule: {e}")))?;
        if definition.v > DEFINITION_VERSION {
            return Err(Error::Decode(format!(
                "schedule definition version {} is newer than this build reads",
                definition.v
            )));
        }
        Ok(definition)
    }

    pub(crate) fn timing(&self) -> Timing {
        match (self.every_ms, &self.cron) {
            (Some(ms), _) => Timing::Every(Duration::from_millis(ms)),
            (None, cron) => Timing::Cron {
                expression: cron.clone().unwrap_or_default(),
                time_zone: self.tz.clone().unwrap_or_default(),
            },
        }
    }

    pub(crate) fn priority(&self) -> Priority {
        Priority::from_lua_index(i64::from(self.priority)).unwrap_or_default()
    }

    fn schedule(&self, id: String) -> Schedule {
        Schedule {
            id,
            timing: self.timing(),
            catch_up: if self.run_once {
                CatchUp::RunOnce
            } else {
                CatchUp::Skip
            },
            name: self.name.clone(),
            priority: self.priority(),
            max_attempts: self.max_attempts,
            timeout: self.timeout_ms.map(Duration::from_millis),
            rate_group: self.rate_group.clone(),
        }
    }
}

impl Schedule {
    /// Checks everything, listing every problem, and computes the ticks.
    fn check(&self, max_payload_bytes: usize, payload: &[u8]) -> Result<Ticks, Error> {
        let mut check = ConfigCheck::default();
        let id = validate_name("schedule id", &self.id);
        check.require(id.is_ok(), || {
            id.as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        });
        if let Some(group) = &self.rate_group {
            let group = validate_name("rate group", group);
            check.require(group.is_ok(), || {
                group
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            });
        }
        check.require(payload.len() <= max_payload_bytes, || {
            format!(
                "payload is {} bytes, over the limit of {max_payload_bytes}",
                payload.len()
            )
        });
        let ticks = self.timing.parse();
        if let Err(problems) = &ticks {
            for problem in problems {
                check.require(false, || problem.clone());
            }
        }
        check.finish()?;
        ticks.map_err(|problems| {
            Error::Config(crate::error::ConfigError::single(problems.join("; ")))
        })
    }

    fn definition(&self, payload: Vec<u8>) -> Definition {
        let (every_ms, cron, tz) = match &self.timing {
            Timing::Every(interval) => (Some(millis(*interval)), None, None),
            Timing::Cron {
                expression,
                time_zone,
            } => (None, Some(expression.clone()), Some(time_zone.clone())),
        };
        Definition {
            v: DEFINITION_VERSION,
            every_ms,
            cron,
            tz,
            run_once: self.catch_up == CatchUp::RunOnce,
            name: self.name.clone(),
            priority: self.priority.lua_index(),
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout.map(millis),
            rate_group: self.rate_group.clone(),
            payload,
        }
    }
}

impl Queue {
    /// Saves a schedule (adding it, or replacing the one with its id) with
    /// the payload every job of it carries, and wakes every running
    /// [`crate::Scheduler`]. Saving an identical schedule changes nothing
    /// (its next tick stays), so every process may upsert its schedules at
    /// start. A changed schedule's next tick is the first one after now.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem (an invalid id, cron
    /// expression or time zone, a payload over the queue's limit) before
    /// anything is sent; [`Error::Encode`]; Redis errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the save is one script call, applied whole or not at
    /// all, and repeating it is harmless.
    pub async fn upsert_schedule<T: serde::Serialize + ?Sized>(
        &self,
        schedule: &Schedule,
        payload: &T,
    ) -> Result<Upserted, Error> {
        let payload = encode_payload(payload)?;
        let ticks = schedule.check(self.settings().max_payload_bytes, &payload)?;
        let first_due = ticks.after(now_ms()).ok_or_else(|| {
            Error::Config(crate::error::ConfigError::single(format!(
                "schedule {:?} has no tick to come",
                schedule.id
            )))
        })?;
        let definition = rmp_serde::to_vec_named(&schedule.definition(payload))
            .map_err(|e| Error::Encode(e.to_string()))?;
        let keys = self.keys();
        let script = &scripts().schedule_upsert;
        let mut call = script.call(
            keys,
            &[
                keys.schedules(),
                keys.schedule_due(),
                keys.schedule_changes(),
            ],
        );
        call.arg(&schedule.id)
            .arg(definition)
            .arg(first_due)
            .arg(CHANGES_CAP);
        let mut body = reply::done(script, call.invoke(&mut self.conn()).await?)?;
        let change = match body.int()? {
            0 => ScheduleChange::Unchanged,
            1 => ScheduleChange::Created,
            _ => ScheduleChange::Updated,
        };
        let next_due_ms = u64::try_from(body.int()?).unwrap_or_default();
        Ok(Upserted {
            change,
            next_due_ms,
        })
    }

    /// Deletes the schedule `id`; returns whether it existed. A scheduler
    /// about to run one of its ticks finds the tick gone and enqueues
    /// nothing.
    ///
    /// # Errors
    ///
    /// Redis errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: one script call, and repeating it is harmless.
    pub async fn remove_schedule(&self, id: &str) -> Result<bool, Error> {
        let keys = self.keys();
        let script = &scripts().schedule_remove;
        let mut call = script.call(
            keys,
            &[
                keys.schedules(),
                keys.schedule_due(),
                keys.schedule_changes(),
            ],
        );
        call.arg(id).arg(CHANGES_CAP);
        let mut body = reply::done(script, call.invoke(&mut self.conn()).await?)?;
        Ok(body.int()? == 1)
    }

    /// Every saved schedule with its next tick, by id.
    ///
    /// # Errors
    ///
    /// Redis errors; [`Error::Decode`] for a definition written by a newer
    /// streamq.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: reads only.
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        let (definitions, due) = read_schedules(self).await?;
        let mut list = Vec::with_capacity(definitions.len());
        for (id, bytes) in definitions {
            let definition = Definition::decode(&bytes)?;
            let next_due_ms = due.get(&id).copied();
            list.push(ScheduleInfo {
                schedule: definition.schedule(id),
                next_due_ms,
            });
        }
        list.sort_by(|a, b| a.schedule.id.cmp(&b.schedule.id));
        Ok(list)
    }
}

/// Stored definitions by schedule id.
pub(crate) type Definitions = HashMap<String, Vec<u8>>;

/// Definitions by id, and due times (Unix ms) by id, in one round trip.
pub(crate) async fn read_schedules(
    queue: &Queue,
) -> Result<(Definitions, HashMap<String, u64>), Error> {
    let keys = queue.keys();
    let (definitions, due): (Definitions, Vec<(String, f64)>) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys.schedules())
        .cmd("ZRANGE")
        .arg(keys.schedule_due())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut queue.conn())
        .await?;
    let due = due
        .into_iter()
        .filter(|(_, score)| *score >= 0.0)
        .map(|(id, score)| (id, score as u64))
        .collect();
    Ok((definitions, due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip() {
        let schedule = Schedule::cron("digest", "0 9 * * *", "Europe/Paris")
            .name("digest")
            .priority(Priority::High)
            .catch_up(CatchUp::RunOnce)
            .timeout(Duration::from_secs(5))
            .rate_group("tenant-1");
        let bytes =
            rmp_serde::to_vec_named(&schedule.definition(vec![0xa1, b'x'])).expect("encodes");
        let back = Definition::decode(&bytes).expect("decodes");
        assert_eq!(back.schedule("digest".to_owned()), schedule);
        assert_eq!(back.payload, [0xa1, b'x']);
    }

    #[test]
    fn every_problem_is_listed() {
        let err = Schedule::cron("bad id", "99 * * * *", "Nowhere/City")
            .check(10, &[0; 20])
            .expect_err("invalid");
        let Error::Config(err) = err else {
            panic!("a config error: {err:?}")
        };
        assert_eq!(err.problems().len(), 4, "{err}");
    }
}

//! Repeatable and cron jobs: [`Schedule`] says what to enqueue and when,
//! [`Queue::upsert_schedule`](crate::Queue::upsert_schedule) and friends
//! keep schedules in Redis, and a [`Scheduler`] enqueues one job per tick
//! however many run.
//!
//! - `timing`: [`Timing`]: fixed intervals and cron expressions in a time
//!   zone; the next tick after a time.
//! - `store`: [`Schedule`], [`CatchUp`], the stored definition, and the
//!   queue's upsert, remove and list.
//! - `scheduler`: [`Scheduler`], its tick claim and its wait.

mod scheduler;
mod store;
mod timing;

pub use scheduler::{Scheduler, SchedulerReport};
pub use store::{CatchUp, Schedule, ScheduleChange, ScheduleInfo, Upserted};
pub use timing::Timing;

//! [`Webhook::run`]: dead letters from a [`DeadLetterWatcher`] to a
//! webhook, one message each within the rate limit and one summary for the
//! rest, the position saved only after the webhook accepted.

use std::collections::VecDeque;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::dead_letters::DeadLetter;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::notify::message::{letter_message, summary_message};
use crate::notify::pace::Pace;
use crate::notify::watcher::DeadLetterWatcher;
use crate::notify::webhook::{NotifyError, Webhook};

/// Dead letters read per round trip.
const BATCH: usize = 100;

/// The most dead letters one summary stands for; more make another.
const MAX_SUMMARY: usize = 10_000;

/// What [`Webhook::run`] posted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifyReport {
    /// Dead letters posted one message each.
    pub posted: u64,
    /// Summary messages posted.
    pub summaries: u64,
    /// Dead letters those summaries stood for.
    pub summarized: u64,
}

/// One message the webhook accepted, for [`Webhook::run_observed`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// One dead letter's own message.
    Letter {
        /// The dead letter's id.
        id: String,
        /// Its job's id.
        job_id: String,
        /// Tries it took.
        tries: u32,
    },
    /// A summary standing for `count` dead letters, `first` to `last`.
    Summary {
        /// How many.
        count: usize,
        /// The first one's id.
        first: String,
        /// The last one's id: the position now.
        last: String,
        /// Tries it took.
        tries: u32,
    },
}

impl Webhook {
    /// Posts each dead letter `watcher` reads to the webhook (the shape is
    /// in [`letter_message`]), within the rate limit, until `shutdown` is
    /// cancelled; see [`Webhook::run_observed`].
    ///
    /// # Errors
    ///
    /// As [`Webhook::run_observed`].
    ///
    /// # Cancel safety
    ///
    /// As [`Webhook::run_observed`].
    pub async fn run(
        &self,
        watcher: DeadLetterWatcher,
        shutdown: CancellationToken,
    ) -> Result<NotifyReport, NotifyError> {
        self.run_observed(watcher, shutdown, |_| {}).await
    }

    /// Posts each dead letter `watcher` reads to the webhook until
    /// `shutdown` is cancelled, calling `observe` after each message the
    /// webhook accepted. Each letter gets its own message while the minute's
    /// posts allow; when more letters wait than posts remain, the last post
    /// is a [`summary_message`] standing for all of them. The watcher's
    /// position is saved after each accepted message, so a restart never
    /// posts an accepted letter again, except one whose position could not
    /// be saved before the process ended (at most one message, or one
    /// summary). Redis errors that pass (a restart) are retried.
    ///
    /// # Errors
    ///
    /// [`NotifyError::Rejected`] or [`NotifyError::GaveUp`] when the webhook
    /// would not accept a message (that letter and those after it are not
    /// marked delivered: the next run starts with them);
    /// [`NotifyError::Redis`] for a Redis error that will not pass.
    ///
    /// # Cancel safety
    ///
    /// Cancel `shutdown` to stop: a post under way finishes (or gives up at
    /// its next pause) and its position is saved. Dropping the future loses
    /// nothing either: an unsaved letter is posted again by the next run.
    pub async fn run_observed(
        &self,
        mut watcher: DeadLetterWatcher,
        shutdown: CancellationToken,
        mut observe: impl FnMut(&Delivery),
    ) -> Result<NotifyReport, NotifyError> {
        let queue = watcher.queue().name().to_owned();
        let mut pace = Pace::new(self.max_per_minute);
        let mut report = NotifyReport::default();
        let mut backoff = Backoff::redis();
        let mut pending: VecDeque<DeadLetter> = VecDeque::new();
        loop {
            if pending.is_empty() {
                let read = tokio::select! {
                    () = shutdown.cancelled() => return Ok(report),
                    read = watcher.next_batch(BATCH) => read,
                };
                match read {
                    Ok(letters) => {
                        pending.extend(letters);
                        backoff.reset();
                    }
                    Err(e) => {
                        pause_after(e, &mut backoff, &shutdown).await?;
                        continue;
                    }
                }
            }
            let available = pace.available(Instant::now());
            if available == 0 {
                let free = pace.next_free(Instant::now());
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(report),
                    () = tokio::time::sleep_until(free) => {}
                }
                continue;
            }
            if pending.len() <= available || available > 1 {
                let Some(letter) = pending.front() else {
                    continue;
                };
                let message = letter_message(&queue, letter, self.preview_chars);
                let Some(tries) = self.post_until(&message, &shutdown).await? else {
                    return Ok(report);
                };
                pace.record(Instant::now());
                let id = letter.id.clone();
                let delivery = Delivery::Letter {
                    id: id.clone(),
                    job_id: letter.job_id.as_str().to_owned(),
                    tries,
                };
                pending.pop_front();
                report.posted += 1;
                if !save(&mut watcher, &id, &mut backoff, &shutdown).await? {
                    return Ok(report);
                }
                observe(&delivery);
            } else {
                // The minute's last post: one summary for every letter waiting.
                if pending.len() < MAX_SUMMARY {
                    if let Ok(more) = watcher.ready(MAX_SUMMARY - pending.len()).await {
                        pending.extend(more);
                    }
                }
                let letters: Vec<DeadLetter> = pending.drain(..).collect();
                let (Some(first), Some(last)) = (letters.first(), letters.last()) else {
                    continue;
                };
                let (first, last) = (first.id.clone(), last.id.clone());
                let message = summary_message(&queue, &letters, watcher.position());
                let Some(tries) = self.post_until(&message, &shutdown).await? else {
                    return Ok(report);
                };
                pace.record(Instant::now());
                report.summaries += 1;
                report.summarized += letters.len() as u64;
                if !save(&mut watcher, &last, &mut backoff, &shutdown).await? {
                    return Ok(report);
                }
                observe(&Delivery::Summary {
                    count: letters.len(),
                    first,
                    last,
                    tries,
                });
            }
        }
    }
}

/// Saves the position, trying again while Redis errors pass; `false` when
/// `shutdown` came first.
async fn save(
    watcher: &mut DeadLetterWatcher,
    id: &str,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<bool, NotifyError> {
    loop {
        match watcher.commit(id).await {
            Ok(()) => {
                backoff.reset();
                return Ok(true);
            }
            Err(e) => {
                pause_after(e, backoff, shutdown).await?;
                if shutdown.is_cancelled() {
                    return Ok(false);
                }
            }
        }
    }
}

/// After a Redis error: a pause when it may pass, the error when not.
async fn pause_after(
    err: Error,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<(), NotifyError> {
    if !err.is_retryable() {
        return Err(NotifyError::Redis(err));
    }
    let delay = backoff.next_delay();
    tracing::warn!(error = %err, ?delay, "dead-letter notifier: redis failed; trying again");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
    Ok(())
}

//! Dead-letter notifications: a hook that sees every dead letter of a queue
//! at least once, across restarts, and a ready-made notifier posting them
//! to a Slack-compatible webhook (`streamq notify` runs it).
//!
//! - `watcher`: [`DeadLetterWatcher`], the hook. It follows the queue's
//!   dead-letter stream from a position saved in Redis under its name, and
//!   [`DeadLetterWatcher::run`] calls your async function per letter,
//!   saving the position after each one it accepted.
//! - `webhook` (feature `notify`): [`Webhook`], posting JSON with bounded
//!   retries and backoff, honouring `Retry-After`, never showing its URL.
//! - `notifier` (feature `notify`): [`Webhook::run`], dead letters to the
//!   webhook within a rate limit, one summary for a burst beyond it.
//! - `message` (feature `notify`): the Slack-compatible message shapes.
//! - `pace` (feature `notify`): the posts-per-minute window.
//!
//! Why the dead-letter stream and not the event stream: the dead-letter
//! stream is written by every queue with default settings, holds the full
//! error and the payload, and is never trimmed, so a notifier that was
//! down for a day still sees every letter. The event stream
//! ([`crate::QueueBuilder::events`]) is off by default and capped. The
//! design and the message shapes are in docs/notify.md.

mod watcher;

#[cfg(feature = "notify")]
mod message;
#[cfg(feature = "notify")]
mod notifier;
#[cfg(feature = "notify")]
mod pace;
#[cfg(feature = "notify")]
mod webhook;

pub use watcher::{DeadLetterWatcher, WatchError, WatchFrom};

#[cfg(feature = "notify")]
pub use message::{letter_message, summary_message};
#[cfg(feature = "notify")]
pub use notifier::{Delivery, NotifyReport};
#[cfg(feature = "notify")]
pub use webhook::{NotifyError, Webhook};

/// docs/notify.md's examples, compiled as doctests.
#[cfg(all(doctest, feature = "notify"))]
#[doc = include_str!("../../docs/notify.md")]
struct NotifyDoctests;

//! Moving due delayed jobs (retries and scheduled jobs) into their streams.

use std::time::Duration;

use crate::error::Error;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::now_ms;

/// Jobs moved per script call.
pub(crate) const PROMOTE_LIMIT: usize = 1000;

/// What one promotion pass did.
#[derive(Debug)]
pub(crate) struct Promoted {
    pub(crate) moved: usize,
    /// How long until the earliest job still delayed is due, if any.
    pub(crate) next_due_in: Option<Duration>,
}

/// Moves up to [`PROMOTE_LIMIT`] due jobs. Safe to run from every worker at
/// once: each job moves exactly once.
pub(crate) async fn promote(queue: &Queue) -> Result<Promoted, Error> {
    let now = now_ms();
    let keys = queue.keys();
    let script = &scripts().promote;
    let mut call = script.call(keys, &[keys.delayed()]);
    call.arg(now).arg(PROMOTE_LIMIT);
    let mut body = reply::done(script, call.invoke(&mut queue.conn()).await?)?;
    let moved = body.count()?;
    let next_due_in = u64::try_from(body.int()?)
        .ok()
        .map(|due| Duration::from_millis(due.saturating_sub(now)));
    Ok(Promoted { moved, next_due_in })
}

//! Moving due delayed jobs (retries and scheduled jobs) into their streams.

use std::time::Duration;

use crate::envelope::now_ms;
use crate::scripts::scripts;
use crate::{Error, Queue};

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
    let mut call = scripts().promote.call(&queue.keys().streams_and_delayed());
    call.arg(now).arg(PROMOTE_LIMIT);
    let reply: (usize, i64) = call.invoke(&mut queue.conn()).await.map_err(Error::from)?;
    let next_due_in = u64::try_from(reply.1)
        .ok()
        .map(|due| Duration::from_millis(due.saturating_sub(now)));
    Ok(Promoted {
        moved: reply.0,
        next_due_in,
    })
}

//! Recovering stalled jobs on demand (an operator's `streamq recover`),
//! rather than waiting for a worker's reclaimer.

use std::time::Duration;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::millis;

/// What [`Queue::recover_stalled`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Stalled jobs put back in line as new waiting entries.
    pub recovered: u64,
    /// Pending entries Redis had deleted (lost; counted and cleared).
    pub lost: u64,
}

/// Entries recovered per script call.
const RECOVER_CHUNK: usize = 500;

impl Queue {
    /// Puts every job that has been in flight without a heartbeat for at
    /// least `min_idle` back in line, in every priority, now. Use the workers'
    /// lease: a job idle that long belongs to a dead or hung worker.
    ///
    /// # Errors
    ///
    /// Connection errors and [`Error::OutOfMemory`]; what was recovered
    /// before the error stays recovered.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each chunk is atomic; call again to finish.
    pub async fn recover_stalled(&self, min_idle: Duration) -> Result<Recovered, Error> {
        let mut total = Recovered::default();
        let min_idle_ms = millis(min_idle);
        for priority in Priority::ALL {
            loop {
                let script = &scripts().recover;
                let mut call = script.call(self.keys(), &[] as &[&str]);
                call.arg(GROUP)
                    .arg(priority.lua_index())
                    .arg(min_idle_ms)
                    .arg(RECOVER_CHUNK);
                let mut body = reply::done(script, call.invoke(&mut self.conn()).await?)?;
                let (recovered, lost, scanned) = (body.count()?, body.count()?, body.count()?);
                total.recovered += recovered as u64;
                total.lost += lost as u64;
                if scanned < RECOVER_CHUNK {
                    break;
                }
            }
        }
        Ok(total)
    }
}

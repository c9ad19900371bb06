//! Recovering stalled jobs on demand (an operator's `streamq recover`),
//! rather than waiting for a worker's reclaimer.

use std::time::Duration;

use crate::keys::GROUP;
use crate::scripts::scripts;
use crate::{Error, Priority, Queue};

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
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        for priority in Priority::ALL {
            loop {
                let keys = self.keys();
                let mut call = scripts()
                    .recover
                    .call(&[keys.stats(), keys.stream(priority)]);
                call.arg(GROUP)
                    .arg(min_idle_ms)
                    .arg(RECOVER_CHUNK)
                    .arg(priority.as_str());
                let (recovered, lost, scanned): (u64, u64, usize) =
                    call.invoke(&mut self.conn()).await?;
                total.recovered += recovered;
                total.lost += lost;
                if scanned < RECOVER_CHUNK {
                    break;
                }
            }
        }
        Ok(total)
    }
}

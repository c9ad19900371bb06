//! Recovering stalled jobs on demand (an operator's `streamq recover`),
//! rather than waiting for a worker's reclaimer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::Value;

use crate::admin::partitions;
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::fields;
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
        if let Some(parts) = self.split() {
            let each = partitions::each(&parts, |p| Box::pin(p.recover_one(min_idle))).await?;
            return Ok(each
                .into_iter()
                .fold(Recovered::default(), |sum, r| Recovered {
                    recovered: sum.recovered + r.recovered,
                    lost: sum.lost + r.lost,
                }));
        }
        self.recover_one(min_idle).await
    }

    /// [`Queue::recover_stalled`] on one partition (or a queue of one).
    async fn recover_one(&self, min_idle: Duration) -> Result<Recovered, Error> {
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
                let answer = match call.invoke(&mut self.conn()).await {
                    Ok(answer) => answer,
                    Err(err) => match Error::from(err) {
                        // No group on this stream: no worker ever ran, so
                        // nothing can be stalled there.
                        err if reply::is_nogroup(&err) => break,
                        err => return Err(err),
                    },
                };
                let mut body = reply::done(script, answer)?;
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

    /// Removes consumers that have been idle for at least `min_idle` and
    /// hold no job from the queue's consumer group, and returns their
    /// names. A consumer holding jobs is never removed (`XGROUP
    /// DELCONSUMER` would drop its pending entries): recover its jobs
    /// first. Use a time well above the workers' block time and lease (a
    /// running worker is never idle that long), such as a few minutes.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each removal is atomic and checks, inside Redis, that the
    /// consumer holds nothing.
    pub async fn prune_consumers(&self, min_idle: Duration) -> Result<Vec<String>, Error> {
        if let Some(parts) = self.split() {
            let each = partitions::each(&parts, |p| Box::pin(p.prune_one(min_idle))).await?;
            let removed: BTreeSet<String> = each.into_iter().flatten().collect();
            return Ok(removed.into_iter().collect());
        }
        self.prune_one(min_idle).await
    }

    /// [`Queue::prune_consumers`] on one partition (or a queue of one).
    async fn prune_one(&self, min_idle: Duration) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for (name, (idle, pending)) in self.consumer_summary().await? {
            if idle < min_idle || pending > 0 {
                continue;
            }
            let script = &scripts().retire_consumer;
            let mut call = script.call(self.keys(), &[] as &[&str]);
            call.arg(GROUP).arg(&name);
            let kept = reply::done(script, call.invoke(&mut self.conn()).await?)?.int()?;
            if kept == 0 {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Every consumer of the queue's group, over all priority streams: its
    /// least idle time and the jobs it holds. Streams or groups that do not
    /// exist count as having none.
    pub(crate) async fn consumer_summary(
        &self,
    ) -> Result<BTreeMap<String, (Duration, u64)>, Error> {
        let exists = self.key_types().await?;
        let mut consumers: BTreeMap<String, (Duration, u64)> = BTreeMap::new();
        for (key, exists) in self.keys().streams().iter().zip(exists) {
            if !exists {
                continue;
            }
            let list: Value = match redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(key)
                .arg(GROUP)
                .query_async(&mut self.conn())
                .await
            {
                Ok(list) => list,
                Err(err) => match Error::from(err) {
                    err if reply::is_nogroup(&err) => continue,
                    err => return Err(err),
                },
            };
            if let Value::Array(list) = list {
                for consumer in list.iter().filter_map(fields::fields) {
                    let name = fields::text(&consumer, "name").unwrap_or_default();
                    let idle = Duration::from_millis(fields::number(&consumer, "idle"));
                    let entry = consumers.entry(name).or_insert((idle, 0));
                    entry.0 = entry.0.min(idle);
                    entry.1 += fields::number(&consumer, "pending");
                }
            }
        }
        Ok(consumers)
    }
}

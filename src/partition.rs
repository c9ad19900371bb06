//! A queue's partitions: the layout record that makes every process agree
//! on their number, and changing that number.
//!
//! The layout key (`QueueKeys::layout`, in partition 0) is a hash with
//! `partitions` (N) and `version` (`LAYOUT_VERSION`, 1). It is absent for a
//! queue nobody opened with more than one partition: such a queue has one.
//! Clients in other languages read it, refuse a version they do not know,
//! and route as `protocol::partition` describes.

use redis::Value;

use crate::error::Error;
use crate::protocol::fields;
use crate::protocol::partition::{LAYOUT_VERSION, MAX_PARTITIONS};
use crate::queue::Queue;

/// What the layout key says: the partition count, if recorded.
async fn read_layout(queue: &Queue) -> Result<Option<u32>, Error> {
    let reply: Value = redis::cmd("HGETALL")
        .arg(queue.keys().layout())
        .query_async(&mut queue.conn())
        .await?;
    let layout = fields::fields(&reply).unwrap_or_default();
    let Some(count) = fields::text(&layout, "partitions") else {
        return Ok(None);
    };
    let version = fields::text(&layout, "version").unwrap_or_default();
    if version != LAYOUT_VERSION.to_string() {
        return Err(Error::UnknownLayout {
            queue: queue.name().to_owned(),
            found: version,
            known: LAYOUT_VERSION,
        });
    }
    match count.parse::<u32>() {
        Ok(n) if (1..=MAX_PARTITIONS).contains(&n) => Ok(Some(n)),
        _ => Err(Error::UnexpectedReply {
            script: "layout",
            detail: format!("partitions = {count:?}"),
        }),
    }
}

impl Queue {
    /// The partition count this handle uses: the recorded one, checked
    /// against `requested`; records `requested` when nothing is recorded
    /// and it is more than 1 (the first writer wins a race).
    pub(crate) async fn resolve_layout(&self, requested: Option<u32>) -> Result<u32, Error> {
        let stored = read_layout(self).await?;
        let stored = match (stored, requested) {
            (None, Some(n)) if n > 1 => {
                let _: Value = redis::pipe()
                    .cmd("HSETNX")
                    .arg(self.keys().layout())
                    .arg("partitions")
                    .arg(n)
                    .cmd("HSETNX")
                    .arg(self.keys().layout())
                    .arg("version")
                    .arg(LAYOUT_VERSION)
                    .query_async(&mut self.conn())
                    .await?;
                read_layout(self).await?
            }
            (stored, _) => stored,
        };
        let count = stored.unwrap_or(1);
        match requested {
            Some(n) if n != count => Err(Error::PartitionMismatch {
                queue: self.name().to_owned(),
                stored: count,
                requested: n,
            }),
            _ => Ok(count),
        }
    }

    /// Records a new partition count for the queue. Handles opened before
    /// keep the count they opened with: reopen producers and workers (see
    /// `docs/guarantees.md`, "Changing the number of partitions", for the
    /// procedure that loses no job). Shrinking does not move jobs: let
    /// workers on the old count empty the partitions beyond the new count
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a count of 0 or over 1024; connection errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: one write.
    pub async fn set_partitions(&self, count: u32) -> Result<(), Error> {
        let mut check = crate::error::ConfigCheck::default();
        check.require((1..=MAX_PARTITIONS).contains(&count), || {
            format!("partitions must be 1 to {MAX_PARTITIONS}")
        });
        check.finish()?;
        let _: Value = redis::cmd("HSET")
            .arg(self.keys().layout())
            .arg("partitions")
            .arg(count)
            .arg("version")
            .arg(LAYOUT_VERSION)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}

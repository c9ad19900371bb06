//! Deleting one dead letter, for an operator who has read it and decided it
//! will never run again.

use crate::error::Error;
use crate::queue::Queue;

impl Queue {
    /// Deletes the dead letter with this id. Returns `false` when no such
    /// letter exists (already requeued, deleted or purged).
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: one `XDEL`, applied or not.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool, Error> {
        if let Some(parts) = self.split() {
            let (id, p) = crate::admin::partitions::unqualify(id, parts.len())?;
            return parts[p].delete_dead_letter_one(id).await;
        }
        self.delete_dead_letter_one(id).await
    }

    /// [`Queue::delete_dead_letter`] on one partition (or a queue of one).
    async fn delete_dead_letter_one(&self, id: &str) -> Result<bool, Error> {
        let deleted: i64 = redis::cmd("XDEL")
            .arg(self.keys().dead())
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        Ok(deleted == 1)
    }
}

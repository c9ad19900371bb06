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
        let deleted: i64 = redis::cmd("XDEL")
            .arg(self.keys().dead())
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        Ok(deleted == 1)
    }
}

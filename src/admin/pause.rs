//! Pausing a queue: workers stop claiming jobs, producers keep enqueueing.
//! The flag lives in Redis, so every worker of the queue obeys it, and jobs
//! already claimed run to completion.

use crate::error::Error;
use crate::queue::Queue;

impl Queue {
    /// Pauses the queue: within one fetch cycle every worker stops claiming
    /// new jobs (and reclaiming stalled ones). Enqueueing goes on. A job
    /// that an idle worker's blocking read claims as the pause begins is
    /// held by that worker, unstarted, until the queue is resumed (or handed
    /// back when the worker stops).
    ///
    /// # Errors
    ///
    /// Connection, permission and out-of-memory errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: setting a flag is idempotent.
    pub async fn pause(&self) -> Result<(), Error> {
        if let Some(parts) = self.split() {
            crate::admin::partitions::each(&parts, |p| Box::pin(p.pause_one())).await?;
            return Ok(());
        }
        self.pause_one().await
    }

    /// [`Queue::pause`] on one partition (or a queue of one).
    async fn pause_one(&self) -> Result<(), Error> {
        let _: () = redis::cmd("SET")
            .arg(self.keys().paused())
            .arg(crate::time::now_ms())
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Resumes a paused queue.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: idempotent.
    pub async fn resume(&self) -> Result<(), Error> {
        if let Some(parts) = self.split() {
            crate::admin::partitions::each(&parts, |p| Box::pin(p.resume_one())).await?;
            return Ok(());
        }
        self.resume_one().await
    }

    /// [`Queue::resume`] on one partition (or a queue of one).
    async fn resume_one(&self) -> Result<(), Error> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys().paused())
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Whether the queue is paused.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn is_paused(&self) -> Result<bool, Error> {
        if let Some(parts) = self.split() {
            let each =
                crate::admin::partitions::each(&parts, |p| Box::pin(p.is_paused_one())).await?;
            return Ok(each.into_iter().any(|paused| paused));
        }
        self.is_paused_one().await
    }

    /// [`Queue::is_paused`] on one partition (or a queue of one).
    async fn is_paused_one(&self) -> Result<bool, Error> {
        Ok(redis::cmd("EXISTS")
            .arg(self.keys().paused())
            .query_async::<i64>(&mut self.conn())
            .await?
            == 1)
    }
}

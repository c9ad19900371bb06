//! Reading jobs' results: what handlers returned, kept when the workers'
//! queue keeps results ([`crate::QueueBuilder::keep_results`]).

use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::job_id::JobId;
use crate::queue::Queue;

impl Queue {
    /// The result of a completed job, if it was kept and has not expired.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the result does not decode as `R`; connection
    /// and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn job_result<R: DeserializeOwned>(&self, id: &JobId) -> Result<Option<R>, Error> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys().result(id.as_str()))
            .query_async(&mut self.conn())
            .await?;
        bytes
            .map(|bytes| {
                rmp_serde::from_slice(&bytes)
                    .map_err(|e| Error::Decode(format!("result of job {id}: {e}")))
            })
            .transpose()
    }

    /// Waits up to `timeout` for a job's result; `None` when none arrived in
    /// time (the job has not completed, failed, or its result is not kept).
    /// It polls, starting at 5 ms and backing off to 250 ms between reads.
    ///
    /// # Errors
    ///
    /// As [`Queue::job_result`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn wait_for_result<R: DeserializeOwned>(
        &self,
        id: &JobId,
        timeout: Duration,
    ) -> Result<Option<R>, Error> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
        loop {
            if let Some(result) = self.job_result(id).await? {
                return Ok(Some(result));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
        }
    }
}

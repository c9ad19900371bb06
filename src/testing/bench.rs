//! Entry points for the crate's own criterion benches. Not part of the
//! API: hidden from the docs, and free to change.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::job_id::JobId;
use crate::protocol::envelope::{Envelope, NewJob, PayloadLimits};
use crate::time::now_us;

/// Encodes `payload` into a job envelope, as [`crate::Batch::push`] does.
pub fn encode<T: Serialize + ?Sized>(
    payload: &T,
    compress_above: Option<usize>,
) -> Result<Vec<u8>, Error> {
    Envelope::encode_new(
        NewJob {
            id: &JobId::generate(),
            name: "bench",
            max_attempts: 3,
            timeout_ms: None,
            ready_us: now_us(),
            trace: None,
            group: None,
            parent: None,
        },
        payload,
        PayloadLimits {
            max_bytes: 1 << 20,
            compress_above,
        },
    )
}

/// Decodes an envelope and its payload, as a worker does.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    Envelope::decode(bytes)?.payload(1 << 20)
}

//! The job envelope: what one stream entry carries, as MessagePack.
//!
//! The envelope is a MessagePack array led by a schema version. The user's
//! payload is nested inside as opaque bytes (itself MessagePack with field
//! names), so a worker can read the job's id and attempt even when the payload
//! no longer decodes into the handler's type: such a job is poison, not lost.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::job_id::JobId;
use crate::time::now_us;

/// Bytes an envelope adds around its payload, at most (id, name, numbers).
pub(crate) const ENVELOPE_OVERHEAD: usize = 1024;

/// Size rules for payloads: the limit, and when to compress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PayloadLimits {
    pub(crate) max_bytes: usize,
    pub(crate) compress_above: Option<usize>,
}

/// The envelope schema this build writes. Readers accept this version and
/// older ones; a newer version is a decode error, never a guess.
pub(crate) const SCHEMA_VERSION: u8 = 1;

/// One job as stored in its stream entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope<'a> {
    pub(crate) version: u8,
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) name: Cow<'a, str>,
    /// Attempts already made before this delivery: 0 on the first run.
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    /// When the job was first enqueued, in Unix microseconds.
    pub(crate) enqueued_us: u64,
    /// When this attempt could start (enqueue, due time of a delay or
    /// retry), in Unix microseconds: the start of its wait.
    pub(crate) ready_us: u64,
    pub(crate) timeout_ms: Option<u64>,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) payload: Cow<'a, [u8]>,
    /// Whether `payload` is LZ4-compressed (with its size prepended).
    #[serde(default)]
    pub(crate) compressed: bool,
    /// The producer's W3C `traceparent`, so a consumer span can link to it.
    #[serde(default, borrow)]
    pub(crate) trace: Option<Cow<'a, str>>,
    /// The rate group the job counts against (per-group rate limits);
    /// written only when set, so envelopes without one stay 11 long.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<Cow<'a, str>>,
    /// The flow parent this job is a child of; written only when set (with
    /// `group` written as "" before it when the job has no group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<ParentRef>,
}

/// Which flow parent a child job settles when it completes or is
/// dead-lettered: the parent's queue (same prefix and Redis), its job id
/// (which names its flow record), its priority (the stream it is released
/// into) and what the child's failure does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ParentRef {
    pub(crate) queue: String,
    pub(crate) id: String,
    /// The parent's priority index, 1 = critical .. 4 = low.
    pub(crate) priority: u8,
    /// Whether the child's dead-lettering fails the parent (else it counts
    /// as done, its error recorded).
    pub(crate) fail_parent: bool,
}

/// What a new envelope says besides its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewJob<'a> {
    pub(crate) id: &'a JobId,
    pub(crate) name: &'a str,
    pub(crate) max_attempts: u32,
    pub(crate) timeout_ms: Option<u64>,
    /// When the job may start, Unix microseconds.
    pub(crate) ready_us: u64,
    pub(crate) trace: Option<&'a str>,
    pub(crate) group: Option<&'a str>,
    pub(crate) parent: Option<&'a ParentRef>,
}

impl<'a> Envelope<'a> {
    /// Encodes `payload` and wraps it in a new envelope, refusing anything
    /// whose encoded envelope exceeds `limit` bytes.
    pub(crate) fn encode_new<T: Serialize + ?Sized>(
        job: NewJob<'_>,
        payload: &T,
        limits: PayloadLimits,
    ) -> Result<Vec<u8>, Error> {
        with_scratch(|scratch| {
            rmp_serde::encode::write_named(scratch, payload)
                .map_err(|e| Error::Encode(e.to_string()))?;
            Envelope::encode_new_raw(job, scratch, limits)
        })
    }

    /// [`Envelope::encode_new`] for a payload already encoded (MessagePack
    /// with field names), as schedules keep it.
    pub(crate) fn encode_new_raw(
        job: NewJob<'_>,
        payload: &[u8],
        limits: PayloadLimits,
    ) -> Result<Vec<u8>, Error> {
        let limit = limits.max_bytes;
        if payload.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let (payload, compressed) = match limits.compress_above {
            Some(threshold) if payload.len() > threshold => {
                let packed = lz4_flex::compress_prepend_size(payload);
                if packed.len() < payload.len() {
                    (Cow::Owned(packed), true)
                } else {
                    (Cow::Borrowed(payload), false)
                }
            }
            _ => (Cow::Borrowed(payload), false),
        };
        Envelope {
            version: SCHEMA_VERSION,
            id: Cow::Borrowed(job.id.as_str()),
            name: Cow::Borrowed(job.name),
            attempt: 0,
            max_attempts: job.max_attempts,
            enqueued_us: now_us(),
            ready_us: job.ready_us,
            timeout_ms: job.timeout_ms,
            payload,
            compressed,
            trace: job.trace.map(Cow::Borrowed),
            group: job.group.map(Cow::Borrowed),
            parent: job.parent.cloned(),
        }
        .encode(limit.saturating_add(ENVELOPE_OVERHEAD))
    }

    /// Encodes this envelope, refusing it when larger than `limit` bytes.
    pub(crate) fn encode(&self, limit: usize) -> Result<Vec<u8>, Error> {
        // Sized once: growing a 1 KiB buffer by doubling cost a producer
        // more than the encoding itself (docs/benchmarks.md).
        let mut bytes = Vec::with_capacity(self.encoded_len_estimate());
        let encoded = if self.parent.is_some() && self.group.is_none() {
            // Fields are by position: `parent` needs `group` written before it.
            let placeholder = Envelope {
                group: Some(Cow::Borrowed("")),
                ..self.clone()
            };
            rmp_serde::encode::write(&mut bytes, &placeholder)
        } else {
            rmp_serde::encode::write(&mut bytes, self)
        };
        encoded.map_err(|e| Error::Encode(e.to_string()))?;
        if bytes.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        Ok(bytes)
    }

    /// At least this envelope's encoded size: its variable parts, plus the
    /// most its numbers, flags and length headers can take (under 80 bytes).
    fn encoded_len_estimate(&self) -> usize {
        let text = |s: &Option<Cow<'_, str>>| s.as_ref().map_or(0, |s| s.len());
        let parent = self
            .parent
            .as_ref()
            .map_or(0, |p| p.queue.len() + p.id.len() + 16);
        80 + self.id.len()
            + self.name.len()
            + self.payload.len()
            + text(&self.trace)
            + text(&self.group)
            + parent
    }

    /// Decodes an envelope, borrowing its strings and payload from `bytes`.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Envelope<'a>, Error> {
        let mut envelope: Envelope<'a> =
            rmp_serde::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        if envelope.group.as_deref() == Some("") {
            envelope.group = None;
        }
        if envelope.version > SCHEMA_VERSION {
            return Err(Error::Decode(format!(
                "envelope schema version {} is newer than this build reads ({SCHEMA_VERSION})",
                envelope.version
            )));
        }
        Ok(envelope)
    }

    /// Decodes the user's payload into `T`, decompressing it first if
    /// needed; a compressed payload claiming more than `limit` bytes is
    /// refused before anything is allocated.
    pub(crate) fn payload<T: DeserializeOwned>(&self, limit: usize) -> Result<T, Error> {
        if !self.compressed {
            return rmp_serde::from_slice(&self.payload).map_err(|e| Error::Decode(e.to_string()));
        }
        let (size, _) = lz4_flex::block::uncompressed_size(&self.payload)
            .map_err(|e| Error::Decode(format!("compressed payload: {e}")))?;
        if size > limit {
            return Err(Error::Decode(format!(
                "compressed payload expands to {size} bytes, over the limit of {limit}"
            )));
        }
        let bytes = lz4_flex::decompress_size_prepended(&self.payload)
            .map_err(|e| Error::Decode(format!("compressed payload: {e}")))?;
        rmp_serde::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// Encodes a user's value as a payload: MessagePack with field names.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(payload: &T) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(payload).map_err(|e| Error::Encode(e.to_string()))
}

/// The most a thread's scratch buffer keeps between payloads: larger ones
/// are encoded as well, into a buffer freed afterwards.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Runs `f` on this thread's empty scratch buffer, where a payload is
/// encoded before it is copied into its envelope: the buffer's capacity
/// carries over from one job to the next instead of being grown anew.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let out = f(&mut scratch);
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = Vec::new();
            }
            out
        }
        // Re-entered (a payload's Serialize enqueueing a job): a buffer of
        // its own.
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job<'a>(
        id: &'a JobId,
        name: &'a str,
        max_attempts: u32,
        timeout_ms: Option<u64>,
    ) -> NewJob<'a> {
        NewJob {
            id,
            name,
            max_attempts,
            timeout_ms,
            ready_us: now_us(),
            trace: Some("00-trace-span-01"),
            group: None,
            parent: None,
        }
    }

    fn limits(max_bytes: usize) -> PayloadLimits {
        PayloadLimits {
            max_bytes,
            compress_above: None,
        }
    }

    #[test]
    fn large_payloads_are_compressed_and_read_back_transparently() {
        let text = "disk usage above 90% on db-1; ".repeat(200);
        let limits = PayloadLimits {
            max_bytes: 1 << 20,
            compress_above: Some(512),
        };
        let bytes = Envelope::encode_new(new_job(&JobId::generate(), "", 1, None), &text, limits)
            .expect("encodes");
        assert!(
            bytes.len() < text.len() / 4,
            "{} bytes for {}",
            bytes.len(),
            text.len()
        );
        let envelope = Envelope::decode(&bytes).expect("decodes");
        assert!(envelope.compressed);
        assert_eq!(envelope.payload::<String>(1 << 20).expect("payload"), text);
        let err = envelope
            .payload::<String>(1000)
            .expect_err("over the limit");
        assert!(err.to_string().contains("over the limit"), "{err}");

        let small =
            Envelope::encode_new(new_job(&JobId::generate(), "", 1, None), &"short", limits)
                .expect("encodes");
        assert!(!Envelope::decode(&small).expect("decodes").compressed);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Alert {
        host: String,
        level: u8,
    }

    #[test]
    fn round_trips_with_borrowed_fields() {
        let alert = Alert {
            host: "db-1".into(),
            level: 3,
        };
        let id = JobId::generate();
        let bytes = Envelope::encode_new(
            new_job(&id, "page", 3, Some(60_000)),
            &alert,
            limits(1 << 20),
        )
        .expect("encodes");
        let envelope = Envelope::decode(&bytes).expect("decodes");
        assert!(matches!(envelope.id, Cow::Borrowed(_)));
        assert_eq!(envelope.id, id.as_str());
        assert_eq!(envelope.name, "page");
        assert_eq!((envelope.attempt, envelope.max_attempts), (0, 3));
        assert_eq!(envelope.timeout_ms, Some(60_000));
        assert!(envelope.enqueued_us > 1_600_000_000_000_000);
        assert_eq!(envelope.trace.as_deref(), Some("00-trace-span-01"));
        assert_eq!(envelope.payload::<Alert>(1 << 20).expect("payload"), alert);
    }

    #[test]
    fn a_flow_child_keeps_its_parent_through_a_retry_with_or_without_a_group() {
        let parent = ParentRef {
            queue: "reports".to_owned(),
            id: "parent-1".to_owned(),
            priority: 2,
            fail_parent: false,
        };
        for group in [None, Some("tenant-1")] {
            let id = JobId::generate();
            let job = NewJob {
                group,
                parent: Some(&parent),
                ..new_job(&id, "child", 3, None)
            };
            let bytes = Envelope::encode_new(job, &7u32, limits(1024)).expect("encodes");
            let mut envelope = Envelope::decode(&bytes).expect("decodes");
            assert_eq!(envelope.group.as_deref(), group);
            assert_eq!(envelope.parent.as_ref(), Some(&parent));
            // A retry re-encodes the decoded envelope.
            envelope.attempt = 1;
            let again = envelope.encode(1024).expect("encodes");
            let retried = Envelope::decode(&again).expect("decodes");
            assert_eq!(
                (retried.group.as_deref(), retried.parent.as_ref()),
                (group, Some(&parent))
            );
            assert_eq!(retried.payload::<u32>(1024).expect("payload"), 7);
        }
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let big = vec![7u8; 2048];
        let err =
            Envelope::encode_new(new_job(&JobId::generate(), "", 1, None), &big, limits(1024))
                .expect_err("too large");
        assert!(
            matches!(err, Error::PayloadTooLarge { limit: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_future_versions_are_decode_errors() {
        assert!(matches!(
            Envelope::decode(b"\xc1garbage"),
            Err(Error::Decode(_))
        ));
        let bytes =
            Envelope::encode_new(new_job(&JobId::generate(), "", 1, None), &1u8, limits(1024))
                .expect("encodes");
        let mut future = Envelope::decode(&bytes).expect("decodes");
        future.version = SCHEMA_VERSION + 1;
        let bytes = rmp_serde::to_vec(&future).expect("encodes");
        let err = Envelope::decode(&bytes).expect_err("newer schema");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn payload_of_the_wrong_shape_is_a_decode_error() {
        let bytes = Envelope::encode_new(
            new_job(&JobId::generate(), "", 1, None),
            &"text",
            limits(1024),
        )
        .expect("encodes");
        let envelope = Envelope::decode(&bytes).expect("decodes");
        assert!(matches!(
            envelope.payload::<Alert>(1024),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn the_layout_in_docs_design_md_is_the_encoded_layout() {
        let design = include_str!("../../docs/design.md");
        let documented: Vec<&str> = design
            .lines()
            .skip_while(|l| !l.starts_with("## The job envelope"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() > 3 && cells[1].parse::<usize>().is_ok()).then(|| cells[2])
            })
            .collect();
        assert_eq!(
            documented,
            [
                "version",
                "id",
                "name",
                "attempt",
                "max_attempts",
                "enqueued_us",
                "ready_us",
                "timeout_ms",
                "payload",
                "compressed",
                "trace",
                "group",
                "parent"
            ]
        );
        // Decode by position, with the documented types, as another
        // language's client would.
        type Layout = (
            u8,
            String,
            String,
            u32,
            u32,
            u64,
            u64,
            Option<u64>,
            serde_bytes::ByteBuf,
            bool,
            Option<String>,
            Option<String>,
        );
        let id = JobId::generate();
        let job = NewJob {
            group: Some("tenant-1"),
            ..new_job(&id, "page", 4, Some(250))
        };
        let bytes = Envelope::encode_new(job, &"x", limits(1024)).expect("encodes");
        let decoded: Layout = rmp_serde::from_slice(&bytes).expect("the documented layout");
        assert_eq!(decoded.0, SCHEMA_VERSION);
        assert_eq!(
            (decoded.1.as_str(), decoded.2.as_str()),
            (id.as_str(), "page")
        );
        assert_eq!((decoded.3, decoded.4, decoded.7), (0, 4, Some(250)));
        assert!(decoded.5 > 0 && decoded.6 > 0);
        let payload: String = rmp_serde::from_slice(&decoded.8).expect("payload is MessagePack");
        assert_eq!(payload, "x");
        assert_eq!(
            (decoded.9, decoded.10.as_deref()),
            (false, Some("00-trace-span-01"))
        );
        assert_eq!(decoded.11.as_deref(), Some("tenant-1"));

        // An older writer's shorter array (no compressed, no trace) still reads.
        let short = rmp_serde::to_vec(&(
            1u8,
            "id",
            "n",
            0u32,
            3u32,
            1u64,
            1u64,
            None::<u64>,
            serde_bytes::Bytes::new(b"\xa1x"),
        ))
        .expect("encodes");
        let envelope = Envelope::decode(&short).expect("shorter arrays decode");
        assert!(!envelope.compressed && envelope.trace.is_none());
    }
}

//! Flow children among the jobs a drain or an obliterate removes: each is
//! removed on its own with the `cancel` script, which settles its parent in
//! the same call (a parent waiting for a removed child would never run).
//! Scripts never decode envelopes, so finding them is Rust's part: the
//! waiting entries and delayed members are read and decoded, but only on a
//! queue that ever received a flow child (its `flow_children` counter), so
//! queues without flows pay one `HGET`.

use redis::Value;

use crate::admin::cancel::{Cancelled, Location, RemovedFrom, Why, member_job_id, stream_entries};
use crate::admin::remove::Drained;
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::envelope::Envelope;
use crate::queue::Queue;

/// Entries or delayed members read per call.
const CHUNK: usize = 500;

impl Queue {
    /// Removes the flow children that are waiting in a stream up to `upto`
    /// (one entry id per priority, `0-0` for none) or among the first
    /// `delayed` members of the delayed set, settling their parents. Jobs a
    /// worker holds are left alone. Returns what it removed.
    pub(crate) async fn drain_flow_children(
        &self,
        upto: &[String],
        delayed: u64,
    ) -> Result<Drained, Error> {
        let mut drained = Drained::default();
        let ever: Option<u64> = redis::cmd("HGET")
            .arg(self.keys().stats())
            .arg("flow_children")
            .query_async(&mut self.conn())
            .await?;
        if ever.unwrap_or(0) == 0 {
            return Ok(drained);
        }
        for (priority, upto) in Priority::ALL.into_iter().zip(upto) {
            if upto == "0-0" {
                continue;
            }
            let mut from = "-".to_owned();
            loop {
                let page: Value = redis::cmd("XRANGE")
                    .arg(self.keys().stream(priority))
                    .arg(&from)
                    .arg(upto)
                    .arg("COUNT")
                    .arg(CHUNK)
                    .query_async(&mut self.conn())
                    .await?;
                let entries = stream_entries(page);
                for (entry_id, envelope) in &entries {
                    let Some(id) = flow_child_id(envelope.as_deref()) else {
                        continue;
                    };
                    let at = Location::Entry {
                        priority,
                        entry_id: entry_id.clone(),
                    };
                    if removed(&self.remove_at(&id, &at, Why::Drained).await?) {
                        drained.waiting += 1;
                    }
                }
                match entries.last() {
                    Some((last, _)) if entries.len() == CHUNK => from = format!("({last}"),
                    _ => break,
                }
            }
        }
        // The first `end` members, from `start`; each removal shifts the
        // rest down by one.
        let (mut start, mut end) = (0, delayed);
        while start < end {
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(self.keys().delayed())
                .arg(start)
                .arg((start + CHUNK as u64).min(end) - 1)
                .query_async(&mut self.conn())
                .await?;
            if members.is_empty() {
                break;
            }
            start += members.len() as u64;
            for member in members {
                let Some((priority, id)) = member_job_id(&member) else {
                    continue;
                };
                if flow_child_id(member.get(1..)).is_none() {
                    continue;
                }
                let at = Location::Delayed {
                    priority,
                    due_ms: 0,
                    member,
                };
                if removed(&self.remove_at(&id, &at, Why::Drained).await?) {
                    drained.delayed += 1;
                    start -= 1;
                    end -= 1;
                }
            }
        }
        Ok(drained)
    }
}

/// The job id of an envelope that belongs to a flow parent.
fn flow_child_id(envelope: Option<&[u8]>) -> Option<String> {
    let envelope = Envelope::decode(envelope?).ok()?;
    envelope.parent.as_ref()?;
    Some(envelope.id.into_owned())
}

fn removed(outcome: &Option<Cancelled>) -> bool {
    matches!(
        outcome,
        Some(Cancelled::Removed {
            from: RemovedFrom::Waiting { .. } | RemovedFrom::Delayed { .. }
        })
    )
}

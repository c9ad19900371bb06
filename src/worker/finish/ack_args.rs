//! The arguments of one `ack` call after its first six (`lua/ack.lua`): three
//! per job, then each job name once with the batch's latency histograms and
//! sums for it, then the jobs' results and event details when there are any.
//! Summing here rather than in Lua keeps each job to three script arguments.

use std::collections::BTreeMap;

use super::{Finished, Outcome};
use crate::protocol::latency;
use crate::protocol::scripts::ScriptCall;

/// One job name's share of a batch.
#[derive(Default)]
struct NameSums<'a> {
    name: &'a str,
    reclaims: u64,
    wait_sum: u64,
    run_sum: u64,
    /// Runs per latency bucket.
    wait: BTreeMap<i32, u64>,
    run: BTreeMap<i32, u64>,
}

/// Appends the batch to `call`. `result_keys[j]`: the KEYS index of job
/// `j`'s result key, 0 for none. `details`: whether to send each job's id
/// and result (events are on, or a job has a result). `metrics`: whether
/// the queue keeps per-name figures; without them each name goes with zero
/// sums and empty histograms, which the script does not read.
pub(super) fn push(
    call: &mut ScriptCall,
    acks: &[Finished],
    result_keys: &[usize],
    details: bool,
    metrics: bool,
) {
    let mut names: Vec<NameSums> = Vec::new();
    let mut slot = 0;
    call.arg(acks.len());
    for f in acks {
        // Jobs of one name tend to come together: try the last one first.
        if names.get(slot).is_none_or(|n| n.name != f.name) {
            slot = match names.iter().position(|n| n.name == f.name) {
                Some(slot) => slot,
                None => {
                    names.push(NameSums {
                        name: &f.name,
                        ..NameSums::default()
                    });
                    names.len() - 1
                }
            };
        }
        let sums = &mut names[slot];
        if metrics {
            sums.add(f);
        }
        call.arg(f.priority.lua_index())
            .arg(&f.entry_id)
            .arg(slot + 1);
    }
    call.arg(names.len());
    for sums in &names {
        sums.push(call);
    }
    if details {
        for (f, result_key) in acks.iter().zip(result_keys) {
            let result = match &f.outcome {
                Outcome::Completed {
                    result: Some(bytes),
                } => bytes.as_slice(),
                _ => &[],
            };
            call.arg(&f.job_id).arg(result_key).arg(result);
        }
    }
}

impl NameSums<'_> {
    /// Counts one run of the batch.
    fn add(&mut self, f: &Finished) {
        self.reclaims += u64::from(f.deliveries.saturating_sub(1));
        self.wait_sum += f.wait_us;
        self.run_sum += f.run_us;
        *self.wait.entry(latency::bucket(f.wait_us)).or_default() += 1;
        *self.run.entry(latency::bucket(f.run_us)).or_default() += 1;
    }

    /// The name's arguments: name, reclaims, wait and run sums, then each
    /// histogram as its length and (bucket, runs) pairs.
    fn push(&self, call: &mut ScriptCall) {
        call.arg(self.name)
            .arg(self.reclaims)
            .arg(self.wait_sum)
            .arg(self.run_sum);
        for histogram in [&self.wait, &self.run] {
            call.arg(histogram.len());
            for (bucket, runs) in histogram {
                call.arg(bucket).arg(runs);
            }
        }
    }
}

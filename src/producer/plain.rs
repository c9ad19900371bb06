//! Enqueueing plain jobs without their envelopes passing through Lua.
//!
//! Redis's Lua hashes every byte of every string a script is handed
//! (docs/redis-lessons.md), and a 1 KiB envelope handed to `enqueue` as an
//! argument then goes back out through `redis.call('XADD', ...)`: about half
//! of what an enqueue costs Redis at saturation. A chunk of plain jobs goes
//! out instead as one `MULTI`/`EXEC`: an `enqueue` call that only counts and
//! numbers them (its `"added"` trailer), then one native `XADD` per job.
//! `EXEC` runs the block as one step, as a script would run.
//!
//! The script goes as `EVAL` with its source, never `EVALSHA`: inside a
//! transaction `NOSCRIPT` comes back only at `EXEC`, after the `XADD`s around
//! it ran, which would leave jobs uncounted and unnumbered.

use redis::{ErrorKind, Pipeline, RedisError, ServerErrorKind, Value};

use super::Pending;
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::cluster::Conn;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::now_ms;

/// The fewest jobs worth a transaction. `EVAL` makes Redis hash the
/// script's 8 KB source on every call (about 30 us here), where each 1 KiB
/// job kept out of Lua saves it about 2.5 us (docs/benchmarks.md, "Round
/// two, sixth sitting"): fewer jobs, and above all one job at a time at a
/// steady rate, go through the script by SHA1.
const MIN_JOBS: usize = 16;

/// Whether `jobs` may go out this way: at least [`MIN_JOBS`] of them, each
/// due now and without an idempotency key, on a queue that neither tracks
/// jobs, logs events nor bounds its backlog (the script could not refuse or
/// record jobs it never sees), over a connection that may send transactions
/// ([`Queue::transactions`]).
pub(super) fn applies(queue: &Queue, jobs: &[Pending]) -> bool {
    let settings = queue.settings();
    jobs.len() >= MIN_JOBS
        && queue.transactions()
        && settings.max_backlog.is_none()
        && settings.tracking.is_none()
        && settings.events_cap() == 0
        && jobs
            .iter()
            .all(|job| job.due_ms == 0 && job.idempotency.is_none())
}

/// Sends one chunk as a transaction; returns the `enqueue` call's reply,
/// read as the Lua path's is. Cancel safety: as [`super::Batch::send`].
pub(super) async fn send(
    queue: &Queue,
    mut conn: Conn,
    chunk: &[Pending],
    epoch: &str,
) -> Result<Value, Error> {
    let replies: Vec<Value> = transaction(queue, chunk, epoch)
        .query_async(&mut conn)
        .await
        .map_err(cause)?;
    let mut replies = replies.into_iter();
    let counted = replies.next().ok_or_else(|| short_reply(0))?;
    let counted = reply::pipeline_item(counted, queue.keys().sequence().as_str(), "hash")?;
    let mut added = 0;
    for (job, id) in chunk.iter().zip(replies) {
        reply::pipeline_item(id, queue.keys().stream(job.priority), "stream")?;
        added += 1;
    }
    if added < chunk.len() {
        return Err(short_reply(added));
    }
    Ok(counted)
}

fn transaction(queue: &Queue, chunk: &[Pending], epoch: &str) -> Pipeline {
    let keys = queue.keys();
    let extra = [keys.delayed().to_owned(), keys.events(), keys.sequence()];
    let mut count = scripts().enqueue.call(keys, &extra);
    count
        .arg(0) // no max backlog
        .arg(now_ms())
        .arg(u8::from(queue.settings().metrics))
        .arg(0) // not tracked
        .arg(0) // no events
        .arg(epoch)
        .arg("added");
    let mut groups: Vec<(Priority, &str, u64)> = Vec::new();
    for job in chunk {
        match groups
            .iter_mut()
            .find(|(p, name, _)| *p == job.priority && *name == job.name)
        {
            Some((_, _, n)) => *n += 1,
            None => groups.push((job.priority, &job.name, 1)),
        }
    }
    for (priority, name, n) in groups {
        count.arg(priority.lua_index()).arg(name).arg(n);
    }
    let mut pipe = redis::Pipeline::with_capacity(chunk.len() + 1);
    pipe.atomic().add_command(count.with_source());
    for job in chunk {
        // Sized up front: each argument would otherwise grow the command's
        // buffer, and a 1 KiB envelope grows it by reallocating.
        let stream = keys.stream(job.priority);
        let mut xadd = redis::Cmd::with_capacity(5, 8 + stream.len() + job.envelope.len());
        xadd.arg("XADD")
            .arg(stream)
            .arg("*")
            .arg("e")
            .arg(job.envelope.as_slice());
        pipe.add_command(xadd);
    }
    pipe
}

/// What refused a transaction: `EXECABORT` (nothing ran) wraps the errors
/// Redis gave the commands as they were queued (`OOM` when full), and the
/// first of those is the error the script alone would have met.
fn cause(err: RedisError) -> Error {
    if err.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) {
        let first = err
            .clone()
            .into_server_errors()
            .and_then(|errors| errors.first().map(|(_, e)| e.clone()));
        if let Some(first) = first {
            return Error::from(RedisError::from(first));
        }
    }
    Error::from(err)
}

fn short_reply(got: usize) -> Error {
    Error::UnexpectedReply {
        script: "enqueue",
        detail: format!("the transaction answered for {got} jobs"),
    }
}

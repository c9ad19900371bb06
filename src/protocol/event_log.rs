//! Writing to a queue's event stream from a client (the scripts write their
//! own events): the fields every event starts with.

use crate::protocol::keys::QueueKeys;

/// Adds `XADD <events> MAXLEN ~ <cap> * ev <kind> job <job>` to `pipe`; the
/// caller appends the event's own fields (`.arg(..)` on the result).
pub(crate) fn add<'a>(
    pipe: &'a mut redis::Pipeline,
    keys: &QueueKeys,
    cap: u64,
    kind: &str,
    job: &str,
) -> &'a mut redis::Pipeline {
    pipe.cmd("XADD")
        .arg(keys.events())
        .arg("MAXLEN")
        .arg("~")
        .arg(cap)
        .arg("*")
        .arg("ev")
        .arg(kind)
        .arg("job")
        .arg(job)
}

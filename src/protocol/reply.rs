//! The one place where what Redis answers becomes a typed result: script
//! replies by the contract in `lua/README.md`, and Redis error codes.
//!
//! Every script replies `{status, ...}`. Status 0 means the script did its
//! work and the rest is its body; any other status means it changed nothing,
//! and says why ([`status`]). Fenced scripts put the entry ids the caller no
//! longer owns in an array right after the status ([`Body::lost`]).
//!
//! Redis error codes are matched, never message texts, which differ between
//! versions and between Redis and Valkey.

use redis::{FromRedisValue, RedisError, Value};

use crate::error::Error;
use crate::protocol::scripts::Script;

/// The status codes scripts return first. The table in `lua/README.md`
/// lists which script returns which; a test checks the two agree.
pub(crate) mod status {
    /// Done as asked; the body follows.
    pub(crate) const OK: i64 = 0;
    /// Enqueue refused, nothing written: `{1, backlog, limit}`.
    pub(crate) const QUEUE_FULL: i64 = 1;
    /// Nothing claimed: the queue is paused. `{2}`.
    pub(crate) const PAUSED: i64 = 2;
    /// Nothing claimed: the rate limit is spent. `{3, wait ms}`.
    pub(crate) const RATE_LIMITED: i64 = 3;
    /// Nothing written: a schedule's due time is not the one expected
    /// (another scheduler took the tick, or the schedule changed). `{4}`.
    pub(crate) const STALE: i64 = 4;

    /// Every code with its name, as `lua/README.md` spells it.
    #[cfg(test)]
    pub(crate) const ALL: [(&str, i64); 5] = [
        ("OK", OK),
        ("QUEUE_FULL", QUEUE_FULL),
        ("PAUSED", PAUSED),
        ("RATE_LIMITED", RATE_LIMITED),
        ("STALE", STALE),
    ];
}

/// A script reply that is not an error.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Status 0: the script's body.
    Done(Body),
    /// The queue is paused (from `fetch` only).
    Paused,
    /// The rate limit is spent; tokens are due in this many ms (from
    /// `fetch` only).
    RateLimited(u64),
    /// The schedule's due time was not the one expected (from
    /// `schedule_tick` only).
    Stale,
}

/// Checks a script's status and returns its body, or the error its status
/// stands for.
pub(crate) fn check(script: &'static Script, reply: Value) -> Result<Reply, Error> {
    let mut body = Body::new(script.name, reply)?;
    match body.int()? {
        status::OK => Ok(Reply::Done(body)),
        status::QUEUE_FULL => Err(Error::QueueFull {
            backlog: body.int().and_then(|n| body.non_negative(n))?,
            limit: body.int().and_then(|n| body.non_negative(n))?,
        }),
        status::PAUSED => Ok(Reply::Paused),
        status::RATE_LIMITED => Ok(Reply::RateLimited(
            body.int().and_then(|n| body.non_negative(n))?,
        )),
        status::STALE => Ok(Reply::Stale),
        other => Err(body.unexpected(format!("unknown status {other}"))),
    }
}

/// The body of a script that never pauses: [`check`], with `Paused` an
/// unexpected reply.
pub(crate) fn done(script: &'static Script, reply: Value) -> Result<Body, Error> {
    match check(script, reply)? {
        Reply::Done(body) => Ok(body),
        other => Err(Error::UnexpectedReply {
            script: script.name,
            detail: format!("{other:?} from a script that cannot return it"),
        }),
    }
}

/// A reply's elements, read in order with typed getters. Any element of
/// the wrong shape is [`Error::UnexpectedReply`] naming the script.
#[derive(Debug)]
pub(crate) struct Body {
    script: &'static str,
    items: std::vec::IntoIter<Value>,
}

impl Body {
    fn new(script: &'static str, reply: Value) -> Result<Body, Error> {
        match reply {
            Value::Array(items) => Ok(Body {
                script,
                items: items.into_iter(),
            }),
            other => Err(Error::UnexpectedReply {
                script,
                detail: format!("not an array: {other:?}"),
            }),
        }
    }

    fn unexpected(&self, detail: String) -> Error {
        Error::UnexpectedReply {
            script: self.script,
            detail,
        }
    }

    fn non_negative(&self, n: i64) -> Result<u64, Error> {
        u64::try_from(n).map_err(|_| self.unexpected(format!("negative count {n}")))
    }

    fn next(&mut self) -> Result<Value, Error> {
        self.items
            .next()
            .ok_or_else(|| self.unexpected("reply ended early".to_owned()))
    }

    fn parse<T: FromRedisValue>(&mut self) -> Result<T, Error> {
        let value = self.next()?;
        redis::from_redis_value(value).map_err(|e| self.unexpected(e.to_string()))
    }

    /// The next element as an integer.
    pub(crate) fn int(&mut self) -> Result<i64, Error> {
        self.parse()
    }

    /// The next element as a count (a non-negative integer).
    pub(crate) fn count(&mut self) -> Result<usize, Error> {
        let n = self.int()?;
        usize::try_from(n).map_err(|_| self.unexpected(format!("negative count {n}")))
    }

    /// The next element as text.
    pub(crate) fn text(&mut self) -> Result<String, Error> {
        self.parse()
    }

    /// The next element as bytes, or `None` for Lua `false` (nil).
    pub(crate) fn optional_bytes(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.next()? {
            Value::BulkString(bytes) => Ok(Some(bytes)),
            Value::Nil | Value::Boolean(false) => Ok(None),
            other => Err(self.unexpected(format!("expected bytes or false, got {other:?}"))),
        }
    }

    /// The next element as a nested array, read the same way.
    pub(crate) fn array(&mut self) -> Result<Body, Error> {
        let value = self.next()?;
        Body::new(self.script, value)
    }

    /// The next element as an array of entry ids the caller no longer owns
    /// (the fencing report of `ack`, `heartbeat`, `retry`, `dead_letter`).
    pub(crate) fn lost(&mut self) -> Result<Vec<String>, Error> {
        let mut ids = self.array()?;
        let mut lost = Vec::with_capacity(ids.len());
        while !ids.is_empty() {
            lost.push(ids.text()?);
        }
        Ok(lost)
    }

    /// Elements not read yet.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether every element was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.len() == 0
    }
}

impl From<RedisError> for Error {
    /// Gives meaning to the codes streamq knows; anything else stays
    /// [`Error::Redis`].
    fn from(err: RedisError) -> Self {
        let detail = || match err.detail() {
            Some(detail) if !detail.is_empty() => detail.to_owned(),
            _ => err.to_string(),
        };
        match err.code() {
            Some("OOM") => Error::OutOfMemory(detail()),
            Some("NOPERM") => Error::NoPermission(detail()),
            Some("NOAUTH") => Error::Authentication { missing: true },
            Some("WRONGPASS") => Error::Authentication { missing: false },
            _ if err.kind() == redis::ErrorKind::AuthenticationFailed => {
                Error::Authentication { missing: false }
            }
            Some("WRONGTYPE") => Error::WrongKeyType {
                key: "?".to_owned(),
                found: "value of another type".to_owned(),
                expected: "stream",
            },
            _ if is_transient(&err) => Error::Unavailable(err),
            _ => Error::Redis(err),
        }
    }
}

/// Whether Redis could not be reached or is not serving now: a retry later
/// may succeed. A TLS handshake the server failed (an unknown issuer, say)
/// is an I/O error too, but no retry fixes it.
fn is_transient(err: &RedisError) -> bool {
    !is_tls_refusal(err) && err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
        )
}

/// Whether the error is a TLS failure (redis-rs keeps the `io::Error`
/// carrying the rustls error behind an `Arc` in its source).
fn is_tls_refusal(err: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let Some(source) = std::error::Error::source(err) else {
        return false;
    };
    let io = source
        .downcast_ref::<Shared>()
        .and_then(|shared| shared.downcast_ref::<std::io::Error>())
        .or_else(|| source.downcast_ref::<std::io::Error>());
    io.and_then(std::io::Error::get_ref)
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

/// One reply of a pipeline sent with `ignore_errors`: the value, or the
/// error Redis answered for that command, typed as [`From<RedisError>`]
/// does, except that `WRONGTYPE` names `key`.
pub(crate) fn pipeline_item(
    value: Value,
    key: &str,
    expected: &'static str,
) -> Result<Value, Error> {
    match value {
        Value::ServerError(err) => {
            let err = RedisError::from(err);
            match Error::from(err) {
                Error::WrongKeyType { found, .. } => Err(Error::WrongKeyType {
                    key: key.to_owned(),
                    found,
                    expected,
                }),
                other => Err(other),
            }
        }
        other => Ok(other),
    }
}

/// Whether a pipeline item is `NOGROUP`: the stream or its group does not
/// exist (yet): a queue nobody has worked on reads as empty.
pub(crate) fn is_nogroup_item(value: &Value) -> bool {
    matches!(value, Value::ServerError(err) if err.code() == "NOGROUP")
}

/// `NOSCRIPT`: the script is not in the server's cache; it did not run.
pub(crate) fn is_noscript(err: &RedisError) -> bool {
    err.code() == Some("NOSCRIPT")
}

/// `BUSYGROUP`: the consumer group exists already.
pub(crate) fn is_busygroup(err: &RedisError) -> bool {
    err.code() == Some("BUSYGROUP")
}

/// `NOGROUP`: a stream or its consumer group is gone (deleted by someone).
pub(crate) fn is_nogroup(err: &Error) -> bool {
    matches!(err, Error::Redis(e) if e.code() == Some("NOGROUP"))
}

/// `ERR unknown command`: a server without the command (`HELLO` before 6.0).
pub(crate) fn is_unknown_command(err: &RedisError) -> bool {
    err.code() == Some("ERR")
}

/// Whether a script was refused for touching keys of several hash slots
/// (Redis Cluster's `CROSSSLOT`): a flow whose queues are on different slots.
pub(crate) fn is_cross_slot(err: &RedisError) -> bool {
    err.code() == Some("CROSSSLOT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::scripts::scripts;

    fn reply(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn statuses_become_bodies_or_errors() {
        let s = scripts();
        let ok = check(&s.ack, reply(vec![Value::Int(0), Value::Array(vec![])]));
        assert!(matches!(ok, Ok(Reply::Done(ref body)) if body.len() == 1));
        let full = check(
            &s.enqueue,
            reply(vec![Value::Int(1), Value::Int(7), Value::Int(5)]),
        );
        assert!(matches!(
            full,
            Err(Error::QueueFull {
                backlog: 7,
                limit: 5
            })
        ));
        assert!(matches!(
            check(&s.fetch, reply(vec![Value::Int(2)])),
            Ok(Reply::Paused)
        ));
        assert!(matches!(
            check(&s.fetch, reply(vec![Value::Int(3), Value::Int(250)])),
            Ok(Reply::RateLimited(250))
        ));
        assert!(matches!(
            check(&s.schedule_tick, reply(vec![Value::Int(4)])),
            Ok(Reply::Stale)
        ));
        assert!(matches!(
            done(&s.ack, reply(vec![Value::Int(2)])),
            Err(Error::UnexpectedReply { script: "ack", .. })
        ));
        for bad in [Value::Int(0), reply(vec![]), reply(vec![Value::Int(9)])] {
            assert!(matches!(
                check(&s.retry, bad),
                Err(Error::UnexpectedReply {
                    script: "retry",
                    ..
                })
            ));
        }
    }

    #[test]
    fn lost_ids_and_nested_arrays_read_in_order() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let mut body = done(
            &scripts().dead_letter,
            reply(vec![
                Value::Int(0),
                Value::Array(vec![bulk("1-0"), bulk("2-0")]),
                Value::Boolean(false),
            ]),
        )
        .expect("ok status");
        assert_eq!(body.lost().expect("ids"), ["1-0", "2-0"]);
        assert_eq!(body.optional_bytes().expect("false"), None);
        assert!(body.is_empty());
        assert!(matches!(body.int(), Err(Error::UnexpectedReply { .. })));
    }

    #[test]
    fn redis_error_codes_become_typed_errors() {
        let server =
            |code: &str| redis::make_extension_error(code.to_owned(), Some("detail".to_owned()));
        assert!(matches!(Error::from(server("OOM")), Error::OutOfMemory(d) if d == "detail"));
        assert!(matches!(
            Error::from(server("NOPERM")),
            Error::NoPermission(_)
        ));
        assert!(matches!(
            Error::from(server("WRONGTYPE")),
            Error::WrongKeyType { .. }
        ));
        assert!(Error::from(server("LOADING")).is_retryable());
        assert!(matches!(
            Error::from(server("NOAUTH")),
            Error::Authentication { missing: true }
        ));
        assert!(matches!(
            Error::from(server("WRONGPASS")),
            Error::Authentication { missing: false }
        ));
        assert!(is_nogroup(&Error::from(server("NOGROUP"))));
        assert!(is_busygroup(&server("BUSYGROUP")));
        assert!(is_noscript(&server("NOSCRIPT")));
        let refused = Error::from(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(refused, Error::Unavailable(_)));
        assert!(refused.is_retryable());
        assert!(!Error::from(server("ERR")).is_retryable());
    }
}

//! The protocol layer: how a queue is laid out in Redis and how to talk to
//! it. Everything a client in another language re-implements lives here, and
//! nothing here knows about workers, producers or operators.
//!
//! - `connection`: [`RedisConfig`](connection::RedisConfig), server version
//!   and feature detection.
//! - `keys`: every key name of a queue, under one hash tag.
//! - `envelope`: the MessagePack job envelope stored in each stream entry.
//! - `scripts`: the Lua scripts in `lua/`, called by SHA1 with `NOSCRIPT`
//!   replay, alone or pipelined.
//! - `reply`: the one place where script replies and Redis error codes
//!   become typed errors ([`crate::Error`]).
//! - `fields`: reading field/value replies (`HELLO`, `XINFO`).
//! - `live`: the record of a tracked job that has not ended.
//! - `event_log`: the start of an event a client writes to the event stream.
//! - `latency`: the latency histogram's bucket scheme.
//! - `cluster`: one connection type for a single Redis and a Redis Cluster,
//!   and the cluster hash slot of a key.
//! - `partition`: where each partition of a queue lives (hash tags) and
//!   which partition a job goes to (the routing hash).

pub(crate) mod cluster;
pub(crate) mod connection;
pub(crate) mod envelope;
pub(crate) mod event_log;
pub(crate) mod fields;
pub(crate) mod keys;
pub(crate) mod latency;
pub(crate) mod live;
pub(crate) mod partition;
pub(crate) mod reply;
pub(crate) mod scripts;

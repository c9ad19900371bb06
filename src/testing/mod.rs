//! Tools for demos, benchmarks and tests: a private redis-server, and the
//! entry points the crate's own criterion benches use.

pub mod bench;
pub(crate) mod local_redis;
pub(crate) mod server_binary;

//! One connection type for a single Redis and a Redis Cluster: [`Conn`].
//!
//! On a single server it is redis-rs's self-reconnecting
//! `ConnectionManager`; on a cluster it is redis-rs's `cluster_async`
//! connection, which follows `MOVED`/`ASK` redirects, refreshes the slot map
//! after failovers and slot moves, and reconnects to nodes. Everything above
//! this module sends commands through [`Conn`] and never asks which it is:
//! every command and script of one queue partition names keys under one hash
//! tag, so the cluster connection routes it to the one node owning that slot
//! (pipelines included: redis-rs routes a pipeline by its first key).
//!
//! Cluster mode is chosen by [`crate::RedisConfig::cluster`], or detected at
//! connect: `INFO cluster` on the seed node answering `cluster_enabled:1`.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionInfo, Pipeline, RedisFuture, Value};

use crate::error::Error;

/// The number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone:
/// clones share the underlying connections, on which concurrent calls are
/// pipelined.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single server (or a cluster node reached directly), reconnecting.
    Single(ConnectionManager),
    /// One dedicated multiplexed connection, for blocking reads.
    Plain(MultiplexedConnection),
    /// A Redis Cluster: routed by key slot, following redirects.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Plain(_) => "Conn::Plain",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Whether this is a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Runs `cmd`, a command that names no key (`SCAN`), on the master
    /// holding `key`'s slot; on a single server, on it. redis-rs would send
    /// such a command to any node of a cluster.
    pub(crate) async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        cmd: Cmd,
    ) -> Result<T, Error> {
        let value = match self {
            Conn::Cluster(c) => {
                let route = Route::new(slot(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                c.route_command(cmd, routing).await?
            }
            conn => cmd.query_async::<Value>(conn).await?,
        };
        Ok(redis::from_redis_value(value).map_err(redis::RedisError::from)?)
    }
}

/// Whether the server behind `conn` runs in cluster mode (`INFO cluster`
/// says `cluster_enabled:1`). A server that refuses `INFO` (an ACL) is taken
/// for a single server: set [`crate::RedisConfig::cluster`] then.
pub(crate) async fn detect<C: ConnectionLike>(conn: &mut C) -> bool {
    let info: redis::RedisResult<String> =
        redis::cmd("INFO").arg("cluster").query_async(conn).await;
    info.is_ok_and(|text| text.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// A cluster connection seeded by `seed` (any node; the rest are found
/// through `CLUSTER SLOTS`).
pub(crate) async fn connect(
    seeds: &[ConnectionInfo],
    tls_root_cert: Option<&[u8]>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<ClusterConnection, Error> {
    let Some(seed) = seeds.first() else {
        return Err(crate::error::ConfigError::single("no cluster node to connect to").into());
    };
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout)
        .tcp_settings(seed.tcp_settings().clone())
        // A failover takes the cluster several seconds (node timeout plus
        // election): keep retrying through it rather than failing the call.
        .retries(12)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(root) = tls_root_cert {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root.to_vec()),
        });
    }
    let client = builder.build()?;
    let config = ClusterConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(response_timeout);
    Ok(client.get_async_connection_with_config(config).await?)
}

/// Every node of the cluster as a connection seed like `seed` (same
/// credentials and TLS, another address), from `CLUSTER NODES`: later
/// connections (blocking reads) then start even when the first seed died.
pub(crate) async fn all_nodes(conn: &mut Conn, seed: &ConnectionInfo) -> Vec<ConnectionInfo> {
    let text: String = match redis::cmd("CLUSTER").arg("NODES").query_async(conn).await {
        Ok(text) => text,
        Err(_) => return vec![seed.clone()],
    };
    let mut nodes = vec![seed.clone()];
    for line in text.lines() {
        let Some(addr) = line.split_whitespace().nth(1) else {
            continue;
        };
        let addr = addr.split('@').next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let (Ok(port), false) = (port.parse::<u16>(), host.is_empty()) else {
            continue;
        };
        let moved = match seed.addr() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(host.to_owned(), port),
        };
        if !nodes.iter().any(|n| *n.addr() == moved) {
            nodes.push(seed.clone().set_addr(moved));
        }
    }
    nodes
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// part between the first `{` and the next `}`, when not empty) or of the
/// whole key, modulo 16384.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("{}x"), slot("{}x"));
        assert_ne!(slot("{}x"), slot("x"));
    }
}

//! Enqueue durability: what an `Ok` from an enqueue means when a master
//! fails over. Redis replicates asynchronously, so by default an
//! acknowledged enqueue lives on the master alone for a moment; with
//! [`Durability::Replicated`] the enqueue also waits (`WAIT`) until that
//! many replicas have it, and with [`Durability::Persisted`] until it is in
//! the append-only file of the master and/or replicas (`WAITAOF`, Redis 7.2
//! and Valkey). `docs/guarantees.md` states what each mode promises.

use std::time::Duration;

use redis::Value;

use crate::error::{ConfigCheck, Error};
use crate::job_id::JobId;
use crate::protocol::connection::{ServerInfo, Version};
use crate::queue::Queue;
use crate::time::millis;

/// How durable an enqueue must be before it returns `Ok`
/// ([`crate::QueueBuilder::durability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Applied on the master (Redis' own acknowledgement). A failover right
    /// after can lose it. The default.
    #[default]
    Acknowledged,
    /// Applied on the master and acknowledged by at least `replicas`
    /// replicas within `timeout` (`WAIT`); otherwise
    /// [`Error::NotReplicated`].
    Replicated {
        /// Replicas that must have the jobs.
        replicas: u32,
        /// How long to wait for them.
        timeout: Duration,
    },
    /// Written to the append-only file of the master (when `local`) and of
    /// at least `replicas` replicas within `timeout` (`WAITAOF`; needs
    /// `appendonly yes` where asked); otherwise [`Error::NotReplicated`].
    Persisted {
        /// Whether the master's own AOF must have it (fsynced).
        local: bool,
        /// Replicas whose AOF must have it.
        replicas: u32,
        /// How long to wait.
        timeout: Duration,
    },
}

impl Durability {
    /// Checks the setting against the server: `WAITAOF` needs Redis 7.2
    /// (Valkey has it from its first release).
    pub(crate) fn check(&self, server: &ServerInfo, check: &mut ConfigCheck) {
        match *self {
            Durability::Acknowledged => {}
            Durability::Replicated { replicas, timeout }
            | Durability::Persisted {
                replicas, timeout, ..
            } => {
                check.require(timeout >= Duration::from_millis(1), || {
                    "durability timeout must be at least 1 ms".to_owned()
                });
                if let Durability::Persisted { local, .. } = *self {
                    check.require(local || replicas > 0, || {
                        "persisted durability needs local or at least 1 replica".to_owned()
                    });
                    check.require(
                        server.is_valkey() || server.version >= Version::new(7, 2, 0),
                        || {
                            format!(
                                "WAITAOF needs Redis 7.2 or Valkey; the server is {} {}",
                                server.server, server.version
                            )
                        },
                    );
                } else {
                    check.require(replicas > 0, || {
                        "replicated durability needs at least 1 replica".to_owned()
                    });
                }
            }
        }
    }
}

/// Asks the server once, at connect, whether `WAITAOF` can wait for its
/// own append-only file: with `appendonly no` it refuses every such wait,
/// and an enqueue that only found out afterwards could not say whether its
/// jobs were kept. Refused with a configuration error naming the cause.
pub(crate) async fn probe<C: redis::aio::ConnectionLike>(
    durability: Durability,
    conn: &mut C,
) -> Result<(), Error> {
    let Durability::Persisted { local: true, .. } = durability else {
        return Ok(());
    };
    let probe: redis::RedisResult<Value> = redis::cmd("WAITAOF")
        .arg(1)
        .arg(0)
        .arg(1)
        .query_async(conn)
        .await;
    match probe {
        Ok(_) => Ok(()),
        Err(err) if err.is_io_error() || err.is_timeout() => Err(err.into()),
        Err(err) => Err(crate::error::ConfigError::single(format!(
            "persisted durability with local: the server refused WAITAOF ({err}); \
             it needs appendonly yes"
        ))
        .into()),
    }
}

/// After `ids` were enqueued in `partition` (one partition: one node),
/// waits as `durability` asks. The wait goes in a pipeline behind a read of
/// the partition's key, so on a cluster it reaches the same node, on the
/// same connection, as the writes it waits for.
pub(crate) async fn wait(
    partition: &Queue,
    durability: Durability,
    ids: Vec<JobId>,
) -> Result<Vec<JobId>, Error> {
    let (wanted, reached) = match durability {
        Durability::Acknowledged => return Ok(ids),
        Durability::Replicated { replicas, timeout } => {
            let (_, reached): (Value, u64) = redis::pipe()
                .cmd("EXISTS")
                .arg(partition.keys().stats())
                .cmd("WAIT")
                .arg(replicas)
                .arg(millis(timeout).max(1))
                .query_async(&mut partition.conn())
                .await?;
            (u64::from(replicas), reached)
        }
        Durability::Persisted {
            local,
            replicas,
            timeout,
        } => {
            let (_, (got_local, reached)): (Value, (u64, u64)) = redis::pipe()
                .cmd("EXISTS")
                .arg(partition.keys().stats())
                .cmd("WAITAOF")
                .arg(u8::from(local))
                .arg(replicas)
                .arg(millis(timeout).max(1))
                .query_async(&mut partition.conn())
                .await?;
            if local && got_local < 1 {
                return Err(Error::NotReplicated {
                    enqueued: ids,
                    reached: 0,
                    wanted: u64::from(replicas),
                });
            }
            (u64::from(replicas), reached)
        }
    };
    if reached < wanted {
        return Err(Error::NotReplicated {
            enqueued: ids,
            reached,
            wanted,
        });
    }
    Ok(ids)
}

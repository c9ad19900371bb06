//! A private Redis Cluster for tests: 3 masters and 3 replicas, each a
//! redis-server process ([`streamq::LocalRedis`], so `STREAMQ_REDIS_SERVER`
//! chooses the binary) with `cluster-enabled yes`, joined with
//! `redis-cli --cluster create` (the `redis-cli` or `valkey-cli` next to the
//! server binary, else on the PATH). Every process is killed on drop, and
//! the logs are printed when the test fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use streamq::{LocalRedis, Queue, QueueBuilder, RedisConfig};

pub struct TestCluster {
    pub nodes: Vec<LocalRedis>,
}

/// How long the cluster may take to agree (`cluster_state:ok` everywhere),
/// or to promote a replica after a master died. Only a hang reaches it.
const SETTLE: Duration = Duration::from_secs(60);

impl TestCluster {
    /// Starts 3 masters and 3 replicas and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned.
    pub fn start() -> TestCluster {
        TestCluster::with_masters(3)
    }

    /// `masters` masters, each with one replica.
    pub fn with_masters(masters: usize) -> TestCluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("streamq=info")),
            )
            .with_test_writer()
            .try_init();
        let nodes: Vec<LocalRedis> = (0..masters * 2)
            .map(|_| {
                LocalRedis::builder()
                    .config("cluster-enabled", ["yes"])
                    .config("cluster-config-file", ["nodes.conf"])
                    .config("cluster-node-timeout", ["2000"])
                    .start()
                    .expect("cluster node starts")
            })
            .collect();
        let cluster = TestCluster { nodes };
        let mut create = Command::new(cli_binary());
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and knows all
    /// slots, and every replica has finished its first sync.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                let info = self.cli(n.port(), &["CLUSTER", "INFO"]);
                let repl = self.cli(n.port(), &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not settle");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one command on one node with redis-cli; its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(cli_binary())
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The seed URL (the first node).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    pub fn config(&self) -> RedisConfig {
        RedisConfig::from_url(&self.url()).expect("url parses")
    }

    pub async fn queue(&self, name: &str) -> Queue {
        self.open(Queue::builder(name)).await
    }

    pub async fn open(&self, builder: QueueBuilder) -> Queue {
        builder.connect(&self.config()).await.expect("queue opens")
    }

    /// Node id and port of every master (by `CLUSTER NODES` on a live node).
    pub fn masters(&self) -> Vec<(String, u16)> {
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a live node");
        self.cli(live.port(), &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| is_live_master(l))
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let id = parts.next()?.to_owned();
                let port = parts.next()?.split(['@', ':']).nth(1)?.parse().ok()?;
                Some((id, port))
            })
            .collect()
    }

    /// `key`'s slot (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let slot = self.cli(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", key]);
        slot.trim().parse().expect("a slot number")
    }

    /// The port of the master serving `key`'s slot.
    pub fn owner_of_key(&self, key: &str) -> u16 {
        self.owner_of(self.slot_of(key))
    }

    /// The port of the master serving `slot` (by `CLUSTER NODES` on a live
    /// node).
    pub fn owner_of(&self, slot: u16) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a live node");
        let out = self.cli(live.port(), &["CLUSTER", "NODES"]);
        for line in out.lines().filter(|l| is_live_master(l)) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in fields.iter().skip(8).filter(|r| !r.starts_with('[')) {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if (a.parse().unwrap()..=b.parse().unwrap()).contains(&slot) {
                    return port;
                }
            }
        }
        0 // none right now: a failover is under way
    }

    /// Moves `slots` with their keys from the master on `from` to the one on
    /// `to`, as `redis-cli --cluster reshard` does, in the open: each slot
    /// marked importing and migrating, its keys sent with `MIGRATE` (clients
    /// meanwhile follow `ASK` redirects), then given to `to` on both sides.
    /// Works with any server version, which one `redis-cli` does not.
    pub async fn move_slots(&self, from: u16, to: u16, slots: &[u16]) {
        // Valkey 8+ waits for the replicas to confirm each SETSLOT: allow
        // for it (about a replication ack interval).
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        let connect = |port: u16| {
            let config = config.clone();
            async move {
                redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .unwrap()
            }
        };
        let (mut source, mut target) = (connect(from).await, connect(to).await);
        let id = |port: u16| self.cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        for &slot in slots {
            let setslot = |state: &str, node: &str| {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
                cmd
            };
            let () = setslot("IMPORTING", &from_id)
                .query_async(&mut target)
                .await
                .unwrap();
            let () = setslot("MIGRATING", &to_id)
                .query_async(&mut source)
                .await
                .unwrap();
            loop {
                let keys: Vec<String> = redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100)
                    .query_async(&mut source)
                    .await
                    .unwrap();
                if keys.is_empty() {
                    break;
                }
                let () = redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to)
                    .arg("")
                    .arg(0)
                    .arg(10_000)
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(&keys)
                    .query_async(&mut source)
                    .await
                    .unwrap();
            }
            let () = setslot("NODE", &to_id)
                .query_async(&mut target)
                .await
                .unwrap();
            let () = setslot("NODE", &to_id)
                .query_async(&mut source)
                .await
                .unwrap();
        }
    }

    /// Which node index listens on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// `INFO <section>` of one node as a map.
    pub fn info(&self, port: u16, section: &str) -> HashMap<String, String> {
        self.cli(port, &["INFO", section])
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- cluster node {} log (last lines) ----", node.port());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Whether a `CLUSTER NODES` line is a master not marked failed (`fail?`,
/// only suspected, still counts).
fn is_live_master(line: &str) -> bool {
    line.split_whitespace().nth(2).is_some_and(|flags| {
        let flags: Vec<&str> = flags.split(',').collect();
        flags.contains(&"master") && !flags.contains(&"fail")
    })
}

/// `redis-cli` (or `valkey-cli`) next to the server binary, else on the PATH.
pub fn cli_binary() -> PathBuf {
    if let Some(server) = std::env::var_os(streamq::SERVER_ENV).filter(|v| !v.is_empty()) {
        let server = PathBuf::from(server);
        if let Some(dir) = server.parent() {
            for name in ["redis-cli", "valkey-cli"] {
                let candidate = dir.join(name);
                if candidate.exists() {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from("redis-cli")
}

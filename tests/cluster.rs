//! On a real local Redis Cluster (3 masters, 3 replicas, from redis-server
//! processes): the same queue code as on a single server, routed by slot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use streamq::{EnqueueOptions, Job, JobError, Priority, Queue, QueueKeys, QueueStats};
use support::cluster::TestCluster;
use support::{Seen, eventually, fast, spawn_worker, until_stats, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_partition_queue_works_on_a_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start();
    let queue = cluster.queue("plain").await;
    assert!(queue.is_cluster());
    let mut batch = queue.batch();
    for i in 0..500u32 {
        let p = Priority::ALL[i as usize % 4];
        batch.push(&i, &EnqueueOptions::new().priority(p)).unwrap();
    }
    let ids = batch.send().await.unwrap();
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(&queue, fast(), {
        let seen = seen.clone();
        move |job: Job<u32>| {
            seen.record(job.id());
            async { Ok(()) }
        }
    });
    until_stats("all 500 completed", &queue, |s| s.completed() == 500).await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.completed, 500);
    assert_eq!(seen.len(), ids.len());
    assert!(seen.duplicates().is_empty());
}

/// One cluster at a time: six redis-servers per test on two cores are
/// plenty, and timing-sensitive steps (failover, leases) need the CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rank(p: Priority) -> usize {
    Priority::ALL.iter().position(|q| *q == p).unwrap()
}

/// Whether `order` (priorities as their urgency rank, in the order handlers
/// started) is most urgent first, allowing the reordering `window` handler
/// tasks can cause between dispatch and start.
fn in_priority_order(order: &[usize], window: usize) -> Result<(), String> {
    let mut worst_so_far = 0;
    for j in window..order.len() {
        worst_so_far = worst_so_far.max(order[j - window]);
        if order[j] < worst_so_far {
            return Err(format!(
                "start {j} has rank {} after rank {worst_so_far} started",
                order[j]
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs_over_16_partitions_complete_exactly_once() {
    hundred_thousand_over_16_partitions(16, None).await;
}

// Strictly in order: with one slot per worker, a job starts only after the
// one before it finished, so the order handlers start in is the order the
// worker chose (with more slots, the runtime may poll a started job's task
// late: a job dispatched before another can begin after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs_over_16_partitions_start_most_urgent_first() {
    hundred_thousand_over_16_partitions(1, Some(1)).await;
}

/// 100,000 jobs over 16 partitions on 3 masters, two workers of
/// `concurrency` slots: each completed exactly once and, with `order_window`,
/// started most urgent first by each worker (allowing that many starts of
/// reordering).
async fn hundred_thousand_over_16_partitions(concurrency: usize, order_window: Option<usize>) {
    let _serial = SERIAL.lock().await;
    const JOBS: u32 = 100_000;
    let cluster = TestCluster::start();
    let queue = cluster
        .open(Queue::builder("bulk").partitions(16).metrics(false))
        .await;
    // The 16 partitions spread over the 3 masters.
    let owners: HashSet<u16> = (0..16)
        .map(|p| {
            let keys = QueueKeys::partition("streamq", "bulk", p).unwrap();
            cluster.owner_of_key(keys.stats())
        })
        .collect();
    assert_eq!(owners.len(), 3, "partitions on every master");

    let mut sent = 0;
    while sent < JOBS {
        let mut batch = queue.batch();
        for i in sent..sent + 10_000 {
            let p = Priority::ALL[(i as usize * 7 + i as usize / 3) % 4];
            let options = EnqueueOptions::new()
                .priority(p)
                .partition_key(format!("tenant-{}", i % 97));
            batch.push(&i, &options).unwrap();
        }
        batch.send().await.unwrap();
        sent += 10_000;
    }
    assert_eq!(queue.stats().await.unwrap().waiting(), u64::from(JOBS));

    let seen = Seen::default();
    let mut workers = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order = Arc::new(Mutex::new(Vec::with_capacity(JOBS as usize)));
        let handler = {
            let (seen, order) = (seen.clone(), order.clone());
            move |job: Job<u32>| {
                order.lock().unwrap().push(rank(job.priority()));
                seen.record(job.id());
                async { Ok(()) }
            }
        };
        workers.push(spawn_worker(
            &queue,
            fast().concurrency(concurrency).prefetch(concurrency),
            handler,
        ));
        orders.push(order);
    }
    let stats = until_stats_for(Duration::from_secs(600), &queue, |s| {
        s.completed() == u64::from(JOBS)
    })
    .await;
    assert_eq!(stats.partitions.len(), 16);
    assert!(stats.is_idle(), "{stats:?}");
    let mut completed = 0;
    for (stop, worker) in workers {
        stop.cancel();
        completed += worker.await.unwrap().completed;
    }
    assert_eq!(completed, u64::from(JOBS));
    assert_eq!(seen.len(), JOBS as usize);
    assert!(seen.duplicates().is_empty(), "{:?}", seen.duplicates());
    if let Some(window) = order_window {
        for order in orders {
            let order = order.lock().unwrap();
            in_priority_order(&order, window).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_flooding_tenant_does_not_starve_a_quiet_one() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start();
    let queue = cluster.open(Queue::builder("fair").partitions(8)).await;
    support::fairness::a_quiet_tenant_is_not_starved(&queue, 8, 5_000, 8).await;
}

async fn until_stats_for(
    limit: Duration,
    queue: &Queue,
    done: impl Fn(&QueueStats) -> bool,
) -> QueueStats {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let stats = queue.stats().await.expect("stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; last {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a producer under faults saw: payloads whose enqueue returned `Ok`,
/// those enqueued but short of the durability asked, and those whose
/// outcome is unknown (an error: maybe applied, maybe not).
#[derive(Default)]
struct Produced {
    acknowledged: HashSet<u32>,
    /// The id each acknowledged payload was enqueued under.
    ids: std::collections::HashMap<streamq::JobId, u32>,
    not_replicated: HashSet<u32>,
    unknown: HashSet<u32>,
}

/// Enqueues batches of 20 numbered jobs until `stop`, recording outcomes.
fn produce(
    queue: Queue,
    produced: Arc<Mutex<Produced>>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 0u32;
        while !stop.is_cancelled() {
            let numbers: Vec<u32> = (next..next + 20).collect();
            next += 20;
            let mut batch = queue.batch();
            for n in &numbers {
                let options = EnqueueOptions::new().partition_key(format!("k{}", n % 31));
                batch.push(n, &options).unwrap();
            }
            let outcome = batch.send().await;
            record(&produced, &outcome, numbers);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn record(
    produced: &Mutex<Produced>,
    outcome: &Result<Vec<streamq::JobId>, streamq::Error>,
    numbers: Vec<u32>,
) {
    let mut produced = produced.lock().unwrap();
    match outcome {
        Ok(ids) => {
            produced
                .ids
                .extend(ids.iter().cloned().zip(numbers.iter().copied()));
            produced.acknowledged.extend(numbers);
        }
        Err(streamq::Error::NotReplicated { .. }) => produced.not_replicated.extend(numbers),
        Err(_) => produced.unknown.extend(numbers),
    }
}

/// Numbers every handler completed, with how many times.
#[derive(Clone, Default)]
struct Done(Arc<Mutex<std::collections::HashMap<u32, u32>>>);

impl Done {
    fn handler(
        &self,
    ) -> impl Fn(Job<u32>) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
        let done = self.clone();
        move |job: Job<u32>| {
            *done.0.lock().unwrap().entry(*job.payload()).or_default() += 1;
            std::future::ready(Ok(()))
        }
    }
    fn has(&self, n: u32) -> bool {
        self.0.lock().unwrap().contains_key(&n)
    }
    fn duplicates(&self) -> usize {
        self.0.lock().unwrap().values().filter(|&&c| c > 1).count()
    }
}

/// Kills the master of `queue`'s partition 0 under load (producer and
/// worker running), lets its replica take over, and returns what the
/// producer saw and what the worker completed once everything acknowledged
/// is done or the queue is idle. With `cut_replication`, the master's last
/// writes before the kill never reach its replica: the replica is stopped
/// (SIGSTOP) and its link cut while the producer carries on.
async fn kill_a_master_under_load(
    durability: streamq::Durability,
    cut_replication: bool,
) -> (Produced, Done, TestCluster, Queue) {
    let mut cluster = TestCluster::start();
    let queue = cluster
        .open(
            Queue::builder("failover")
                .partitions(6)
                .durability(durability)
                .events(streamq::EventLog::default()),
        )
        .await;
    let produced = Arc::new(Mutex::new(Produced::default()));
    let stop_producing = tokio_util::sync::CancellationToken::new();
    let producer = produce(queue.clone(), produced.clone(), stop_producing.clone());
    let done = Done::default();
    let (stop, worker) = spawn_worker(
        &queue,
        fast().concurrency(8).lease(Duration::from_secs(3)),
        done.handler(),
    );
    let acknowledged = || produced.lock().unwrap().acknowledged.len();
    wait_for("jobs acknowledged before the kill", || {
        acknowledged() >= 1_000
    })
    .await;

    let slot = cluster.slot_of(queue.keys().stats());
    let victim = cluster.index_of(cluster.owner_of(slot));
    let victim_port = cluster.nodes[victim].port();
    let mut stopped_replica = None;
    if cut_replication {
        // Paused (and the pause replicated), so that the jobs the replica
        // will never see stay unrun: lost, not merely rolled back.
        queue.pause().await.unwrap();
        let replica = replica_of(&cluster, victim_port);
        let replica_port = cluster.nodes[replica].port();
        let offset = |port: u16, field: &str| -> u64 {
            cluster.info(port, "replication")[field].parse().unwrap()
        };
        let written = offset(victim_port, "master_repl_offset");
        wait_for("the pause replicated", || {
            offset(replica_port, "slave_repl_offset") >= written
        })
        .await;
        let pid = cluster.nodes[replica].pid().expect("replica running");
        signal(pid, "STOP");
        stopped_replica = Some(pid);
        cluster.cli(victim_port, &["CLIENT", "KILL", "TYPE", "replica"]);
        let before = acknowledged();
        wait_for("jobs acknowledged with replication cut", || {
            acknowledged() >= before + 200
        })
        .await;
    }
    cluster.nodes[victim].kill();
    if let Some(pid) = stopped_replica {
        signal(pid, "CONT");
    }
    let at_kill = acknowledged();
    // Its replica takes over; then the old master comes back, as the new
    // master's replica (without one, a replicated enqueue cannot succeed).
    eventually("a replica promoted", Duration::from_secs(120), || {
        let owner = cluster.owner_of(slot);
        let moved = owner != 0 && owner != victim_port;
        async move { moved }
    })
    .await;
    cluster.nodes[victim].restart().unwrap();
    if cut_replication {
        queue.resume().await.unwrap();
    }
    // Producers and workers carry on by themselves once the replica is master.
    eventually(
        "producing again after the failover",
        Duration::from_secs(120),
        || {
            let now = acknowledged();
            async move { now >= at_kill + 1_000 }
        },
    )
    .await;
    stop_producing.cancel();
    producer.await.unwrap();
    let produced = Arc::try_unwrap(produced)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    let acknowledged: Vec<u32> = produced.acknowledged.iter().copied().collect();
    // Wait for every acknowledged job, or for the queue to go idle (what is
    // still missing then was lost).
    eventually(
        "acknowledged jobs done or the queue idle",
        Duration::from_secs(180),
        || {
            let all = acknowledged.iter().all(|&n| done.has(n));
            let queue = queue.clone();
            async move { all || queue.stats().await.is_ok_and(|s| s.is_idle()) }
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    (produced, done, cluster, queue)
}

/// The node replicating the master on `master_port`.
fn replica_of(cluster: &TestCluster, master_port: u16) -> usize {
    let info = cluster.info(master_port, "replication");
    let port = info
        .get("slave0")
        .and_then(|s| s.split(',').find_map(|kv| kv.strip_prefix("port=")))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the master on {master_port} has a replica: {info:?}"));
    cluster.index_of(port)
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicated_durability_a_master_failover_loses_no_acknowledged_job() {
    let _serial = SERIAL.lock().await;
    let durability = streamq::Durability::Replicated {
        replicas: 1,
        timeout: Duration::from_secs(2),
    };
    let (produced, done, _cluster, _queue) = kill_a_master_under_load(durability, false).await;
    let lost: Vec<u32> = produced
        .acknowledged
        .iter()
        .copied()
        .filter(|&n| !done.has(n))
        .collect();
    eprintln!(
        "replicated: {} acknowledged, {} not replicated, {} unknown, {} lost, {} completed twice",
        produced.acknowledged.len(),
        produced.not_replicated.len(),
        produced.unknown.len(),
        lost.len(),
        done.duplicates()
    );
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replication_a_failover_loss_is_counted_and_reported() {
    let _serial = SERIAL.lock().await;
    let (produced, done, _cluster, queue) =
        kill_a_master_under_load(streamq::Durability::Acknowledged, true).await;
    let lost: HashSet<u32> = produced
        .acknowledged
        .iter()
        .copied()
        .filter(|&n| !done.has(n))
        .collect();
    // The producers count what they lost in the queue's counters and name
    // each job in the event stream.
    let counted = rolled_back_count(&queue).await;
    let events = Box::pin(queue.events(streamq::EventsFrom::Start));
    let reported: Vec<streamq::Event> = tokio::time::timeout(
        Duration::from_secs(60),
        events
            .filter_map(|e| async move { e.ok() })
            .filter(|e| std::future::ready(e.kind == streamq::EventKind::RolledBack))
            .take(usize::try_from(counted).unwrap())
            .collect(),
    )
    .await
    .expect("one rolled_back event per job counted");
    let reported: HashSet<u32> = reported
        .iter()
        .map(|e| {
            produced
                .ids
                .get(&e.job_id)
                .copied()
                .expect("an acknowledged job")
        })
        .collect();
    eprintln!(
        "acknowledged only: {} acknowledged, {} unknown, {} rolled back ({} of them never ran), {} completed twice",
        produced.acknowledged.len(),
        produced.unknown.len(),
        reported.len(),
        lost.len(),
        done.duplicates()
    );
    // Never silent: every acknowledged job that never ran was reported, and
    // nothing completes that nobody enqueued. Jobs were lost: the queue was
    // paused while the master acknowledged what its replica never got.
    assert!(!lost.is_empty(), "the cut replication lost nothing");
    let unreported: Vec<&u32> = lost.difference(&reported).collect();
    assert!(
        unreported.is_empty(),
        "lost without a report: {unreported:?}"
    );
    let all = done.0.lock().unwrap();
    assert!(
        all.keys()
            .all(|n| produced.acknowledged.contains(n) || produced.unknown.contains(n))
    );
}

/// Jobs counted rolled back on every partition, once there are any.
async fn rolled_back_count(queue: &Queue) -> u64 {
    let count = Arc::new(Mutex::new(0));
    eventually("rolled back jobs counted", Duration::from_secs(60), || {
        let (queue, count) = (queue.clone(), count.clone());
        async move {
            let Ok(metrics) = queue.metrics().await else {
                return false;
            };
            let n: u64 = metrics.by_priority.values().map(|c| c.rolled_back).sum();
            *count.lock().unwrap() = n;
            n > 0
        }
    })
    .await;
    *count.lock().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_slots_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start();
    let queue = cluster.open(Queue::builder("reshard").partitions(6)).await;
    let produced = Arc::new(Mutex::new(Produced::default()));
    let stop_producing = tokio_util::sync::CancellationToken::new();
    let producer = produce(queue.clone(), produced.clone(), stop_producing.clone());
    let done = Done::default();
    let (concurrency, prefetch) = (8, 8);
    let (stop, worker) = spawn_worker(
        &queue,
        fast()
            .concurrency(concurrency)
            .prefetch(prefetch)
            .lease(Duration::from_secs(3)),
        done.handler(),
    );
    let acknowledged = || produced.lock().unwrap().acknowledged.len();
    wait_for("jobs acknowledged before the move", || {
        acknowledged() >= 1_000
    })
    .await;

    // Move the queue's slots on partition 0's master to another master,
    // with their keys, under load.
    let slot = cluster.slot_of(queue.keys().stats());
    let from = cluster.owner_of(slot);
    let to = cluster
        .masters()
        .into_iter()
        .find(|(_, p)| *p != from)
        .unwrap()
        .1;
    let slots: Vec<u16> = (0..6)
        .map(|p| {
            cluster.slot_of(
                QueueKeys::partition("streamq", "reshard", p)
                    .unwrap()
                    .stats(),
            )
        })
        .filter(|s| cluster.owner_of(*s) == from)
        .collect();
    cluster.move_slots(from, to, &slots).await;
    assert_ne!(cluster.owner_of(slot), from, "the slot moved");
    let at_move = acknowledged();
    wait_for("producing after the move", || {
        acknowledged() >= at_move + 500
    })
    .await;
    stop_producing.cancel();
    producer.await.unwrap();
    let produced = Arc::try_unwrap(produced)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    let acknowledged: Vec<u32> = produced.acknowledged.iter().copied().collect();
    eventually(
        "every acknowledged job done",
        Duration::from_secs(120),
        || {
            let all = acknowledged.iter().all(|&n| done.has(n));
            async move { all }
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    // The stated bound (docs/guarantees.md): duplicates only among jobs a
    // worker held while their slot moved, at most concurrency + prefetch.
    assert!(
        done.duplicates() <= concurrency + prefetch,
        "{} duplicates",
        done.duplicates()
    );
    eprintln!(
        "reshard: {} acknowledged, {} unknown, {} completed twice",
        produced.acknowledged.len(),
        produced.unknown.len(),
        done.duplicates()
    );
}

/// The queue's keys on every master (by `SCAN` on each, with redis-cli).
fn keys_on_masters(cluster: &TestCluster, queue: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (_, port) in cluster.masters() {
        let out = cluster.cli(
            port,
            &["--scan", "--pattern", &format!("streamq:{{{queue}*")],
        );
        keys.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_owned));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_reach_every_partition_on_a_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start();
    let queue = cluster
        .open(
            Queue::builder("ops")
                .partitions(8)
                .events(streamq::EventLog::default()),
        )
        .await;
    let keyed = |i: u32| EnqueueOptions::new().partition_key(format!("t{i}"));
    for i in 0..8u32 {
        queue.enqueue(&i, &keyed(i).max_attempts(1)).await.unwrap();
    }
    let (stop, worker) = spawn_worker(&queue, fast(), |_: Job<u32>| async {
        Err::<(), JobError>(JobError::permanent("no"))
    });
    until_stats("8 dead letters", &queue, |s| s.dead_letters == 8).await;
    stop.cancel();
    worker.await.unwrap();

    // The watcher sees the dead letters of every partition, on any node.
    let mut watcher =
        streamq::notify::DeadLetterWatcher::open(&queue, "ops", streamq::notify::WatchFrom::Start)
            .await
            .unwrap();
    let mut letters = Vec::new();
    while letters.len() < 8 {
        letters.extend(watcher.next_batch(8).await.unwrap());
    }
    assert_eq!(letters.len(), 8);
    // So does the event reader: 8 enqueued and 8 dead-lettered.
    let mut events = Box::pin(queue.events(streamq::EventsFrom::Start));
    let mut dead = 0;
    let read = async {
        while dead < 8 {
            let event = events.next().await.unwrap().unwrap();
            dead += usize::from(event.kind == streamq::EventKind::DeadLettered);
        }
    };
    tokio::time::timeout(support::WAIT, read)
        .await
        .expect("8 dead-lettered events");

    // Drain and clean reach every partition.
    for i in 0..16u32 {
        queue.enqueue(&i, &keyed(i)).await.unwrap();
        let later = keyed(i).delay(Duration::from_secs(3600));
        queue.enqueue(&i, &later).await.unwrap();
    }
    let drained = queue.drain().await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (16, 16));
    let cleaned = queue
        .clean(&streamq::Clean::new().dead_letters_older_than(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(cleaned.dead_letters, 8);

    // Obliterate scans each partition's own node: no key is left anywhere.
    let before = keys_on_masters(&cluster, "ops");
    let owners: HashSet<u16> = (0..8)
        .map(|p| {
            let keys = QueueKeys::partition("streamq", "ops", p).unwrap();
            cluster.owner_of_key(keys.stats())
        })
        .collect();
    assert!(owners.len() > 1, "the partitions should span masters");
    let gone = queue.obliterate(true).await.unwrap();
    assert_eq!(gone.keys as usize, before.len());
    assert_eq!(keys_on_masters(&cluster, "ops"), Vec::<String>::new());
}

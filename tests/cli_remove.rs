//! `streamq cancel`, `clean`, `drain` and `obliterate` as a user meets them:
//! the real binary against a private redis-server, checking the message, the
//! exit code, and what Redis holds afterwards. Destructive commands change
//! nothing without `--yes`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use streamq::QueueKeys;
use support::TestRedis;
use support::cli::streamq;

async fn count_keys(redis: &TestRedis, pattern: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_removes_a_waiting_job_and_says_so_then_reports_it_gone() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let produced = streamq(
        &url,
        &["produce", "-q", "cq", "--track-jobs", "--count", "2"],
    );
    assert_eq!(produced.code, 0, "{produced:?}");
    let ids: Vec<&str> = produced.stdout.lines().collect();

    for track in [&["--track-jobs"][..], &[]] {
        let id = ids[usize::from(track.is_empty())];
        let mut args = vec!["cancel", "-q", "cq", id];
        args.extend(track);
        let run = streamq(&url, &args);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(
            run.stdout.trim(),
            format!("cancelled job {id}: removed from the waiting medium jobs; it will not run")
        );
        let again = streamq(&url, &args);
        assert_eq!(again.code, 1, "{again:?}");
        assert!(again.stdout.is_empty());
        assert!(
            again.stderr.contains(&format!(
                "no waiting, delayed or running job {id} in queue cq"
            )),
            "{}",
            again.stderr
        );
    }
    let keys = QueueKeys::new("streamq", "cq").unwrap();
    assert_eq!(redis.len(keys.stream(streamq::Priority::Medium)).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_and_clean_change_nothing_without_yes_and_report_what_they_removed() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let keys = QueueKeys::new("streamq", "dq").unwrap();
    let medium = keys.stream(streamq::Priority::Medium);
    assert_eq!(
        streamq(&url, &["produce", "-q", "dq", "--count", "3"]).code,
        0
    );

    let unconfirmed = streamq(&url, &["drain", "-q", "dq"]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(redis.len(medium).await, 3, "nothing drained without --yes");
    let drained = streamq(&url, &["drain", "-q", "dq", "--yes"]);
    assert_eq!(drained.code, 0, "{drained:?}");
    assert_eq!(
        drained.stdout.trim(),
        "queue dq: removed 3 waiting and 0 delayed jobs; running jobs were left alone"
    );
    assert_eq!(redis.len(medium).await, 0);

    // An old dead letter (its id is its time: 2024) and a fresh one.
    for id in ["1732212345678-0", "*"] {
        let _: String = redis::cmd("XADD")
            .arg(keys.dead())
            .arg(id)
            .arg("e")
            .arg("x")
            .query_async(&mut redis.raw().await)
            .await
            .unwrap();
    }
    let nothing = streamq(&url, &["clean", "-q", "dq", "--yes"]);
    assert_eq!(nothing.code, 2, "{nothing:?}");
    assert!(
        nothing.stderr.contains("--dead-older-than"),
        "{}",
        nothing.stderr
    );
    let unconfirmed = streamq(&url, &["clean", "-q", "dq", "--dead-older-than", "30d"]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("dead letters older than")
            && unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(redis.len(keys.dead()).await, 2);
    let bad = streamq(
        &url,
        &["clean", "-q", "dq", "--dead-older-than", "soon", "--yes"],
    );
    assert_eq!(bad.code, 2, "{bad:?}");
    let cleaned = streamq(
        &url,
        &["clean", "-q", "dq", "--dead-older-than", "30d", "--yes"],
    );
    assert_eq!(cleaned.code, 0, "{cleaned:?}");
    assert_eq!(
        cleaned.stdout.trim(),
        "queue dq: removed 1 dead letters, 0 completed jobs and 0 kept results"
    );
    assert_eq!(redis.len(keys.dead()).await, 1, "the fresh letter stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn obliterate_is_refused_while_a_consumer_holds_jobs_unless_forced() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let keys = QueueKeys::new("streamq", "oq").unwrap();
    let medium = keys.stream(streamq::Priority::Medium);
    assert_eq!(
        streamq(&url, &["produce", "-q", "oq", "--count", "2"]).code,
        0
    );
    // A worker that claimed a job and died: it holds it.
    let mut raw = redis.raw().await;
    // The producer's first enqueue created the consumer group.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("streamq")
        .arg("dead-worker")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(medium)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    let pattern = keys.pattern();
    let before = count_keys(&redis, &pattern).await;
    assert!(before > 0);

    let unconfirmed = streamq(&url, &["obliterate", "-q", "oq"]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );

    let refused = streamq(&url, &["obliterate", "-q", "oq", "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("queue oq is in use")
            && refused.stderr.contains("dead-worker")
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        count_keys(&redis, &pattern).await,
        before,
        "nothing deleted"
    );

    let forced = streamq(&url, &["obliterate", "-q", "oq", "--yes", "--force"]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(
        forced.stdout.trim(),
        format!("queue oq: deleted {before} keys")
    );
    assert_eq!(count_keys(&redis, &pattern).await, 0);
}

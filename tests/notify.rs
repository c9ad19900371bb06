//! Dead-letter notifications against a real HTTP receiver (axum on a free
//! loopback port) that answers as each test scripts it: retries through
//! failures, the rate limit's summary, resuming after a restart, a refusal,
//! the hook, and `streamq notify` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use streamq::notify::{DeadLetterWatcher, NotifyError, WatchError, WatchFrom, Webhook};
use streamq::{EnqueueOptions, Job, JobError, JobId, Queue};
use support::{TestRedis, eventually, fast, spawn_worker, until_stats, wait_for};
use tokio_util::sync::CancellationToken;

/// One request the receiver saw: the status it answered and the body.
type Seen = Arc<Mutex<Vec<(u16, Value)>>>;

/// A webhook receiver: answers each POST with the next scripted status
/// (with `Retry-After: 0` on 429 and 503), then 200 once the script is out.
struct Receiver {
    url: String,
    seen: Seen,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/hooks/T0/B0/s3cr3t-token", post(answer))
            .with_state((script, seen.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/T0/B0/s3cr3t-token",
            listener.local_addr().unwrap()
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            seen,
            _server: server,
        }
    }

    /// The bodies it accepted (answered 2xx).
    fn accepted(&self) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(status, _)| *status < 300)
            .map(|(_, body)| body.clone())
            .collect()
    }

    fn statuses(&self) -> Vec<u16> {
        self.seen.lock().unwrap().iter().map(|(s, _)| *s).collect()
    }

    async fn wait_accepted(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} messages accepted"), || {
            self.accepted().len() >= n
        })
        .await;
        self.accepted()
    }
}

async fn answer(
    State((script, seen)): State<(Arc<Mutex<VecDeque<u16>>>, Seen)>,
    body: String,
) -> (StatusCode, HeaderMap, &'static str) {
    let status = script.lock().unwrap().pop_front().unwrap_or(200);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    seen.lock().unwrap().push((status, body));
    let mut headers = HeaderMap::new();
    if status == 429 || status == 503 {
        headers.insert("retry-after", HeaderValue::from_static("0"));
    }
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        headers,
        if status.is_success() { "ok" } else { "no" },
    )
}

/// A webhook that retries quickly, for tests.
fn webhook(url: &str) -> Webhook {
    Webhook::new(url)
        .unwrap()
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// Enqueues `payloads` as jobs named `name` that fail for good with
/// `error`, and waits until all of them are dead letters.
async fn dead_letters(
    queue: &Queue,
    name: &str,
    error: &'static str,
    payloads: &[Value],
) -> Vec<JobId> {
    let before = queue.stats().await.unwrap().dead_letters;
    let mut ids = Vec::new();
    for payload in payloads {
        let options = EnqueueOptions::new().name(name).max_attempts(1);
        ids.push(queue.enqueue(payload, &options).await.unwrap());
    }
    let (stop, worker) = spawn_worker(queue, fast(), move |_job: Job<Value>| async move {
        Err(JobError::permanent(error))
    });
    let want = before + payloads.len() as u64;
    until_stats("the jobs dead-lettered", queue, |s| s.dead_letters >= want).await;
    stop.cancel();
    worker.await.unwrap();
    ids
}

async fn saved_position(redis: &TestRedis, queue: &Queue, name: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(queue.keys().notifier(name))
        .query_async(&mut redis.raw().await)
        .await
        .unwrap()
}

fn text(message: &Value) -> String {
    message.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_reaches_a_webhook_that_fails_twice_then_accepts() {
    let redis = TestRedis::start();
    let queue = redis.queue("alerts").await;
    let receiver = Receiver::start(&[500, 503]).await;
    let watcher = DeadLetterWatcher::open(&queue, "slack", WatchFrom::Now)
        .await
        .unwrap();
    assert_eq!(watcher.position(), "0-0");
    let shutdown = CancellationToken::new();
    let hook = webhook(&receiver.url).preview_chars(120);
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { hook.run(watcher, shutdown).await }
    });

    let note = "é".repeat(400);
    let ids = dead_letters(
        &queue,
        "page",
        "disk <full> & more",
        &[json!({"host": "db-1", "note": note})],
    )
    .await;
    let accepted = receiver.wait_accepted(1).await;
    let letter = queue
        .dead_letters(None, 10)
        .await
        .unwrap()
        .letters
        .remove(0);
    eventually("the position saved", support::WAIT, || async {
        saved_position(&redis, &queue, "slack").await.as_deref() == Some(letter.id.as_str())
    })
    .await;
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();

    assert_eq!(
        receiver.statuses(),
        [500, 503, 200],
        "two failures, then one post accepted"
    );
    assert_eq!((report.posted, report.summaries), (1, 0));
    let message = &accepted[0];
    let fallback = message["text"].as_str().unwrap();
    assert_eq!(
        fallback,
        format!(
            "Dead letter on queue alerts: job {} (page) failed after 1 attempt: disk &lt;full&gt; &amp; more",
            ids[0]
        )
    );
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "Dead letter on queue alerts");
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            format!("*Job*\n`{}`", ids[0]).as_str(),
            "*Name*\npage",
            "*Attempts*\n1",
            "*Priority*\nmedium"
        ]
    );
    assert_eq!(
        blocks[2]["text"]["text"],
        "*Error*\n```disk &lt;full&gt; &amp; more```"
    );
    let payload = blocks[3]["text"]["text"].as_str().unwrap();
    let preview = payload
        .strip_prefix("*Payload*\n```")
        .and_then(|p| p.strip_suffix("```"))
        .unwrap();
    assert!(
        preview.starts_with(r#"{"host":"db-1","note":"éé"#),
        "{preview}"
    );
    assert_eq!(
        preview.chars().count(),
        120,
        "cut on a character: {preview}"
    );
    assert!(preview.ends_with('…'));
    let context = blocks[4]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains(&format!("streamq dlq --queue alerts show {}", letter.id)),
        "{context}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_rate_limit_becomes_one_summary() {
    let redis = TestRedis::start();
    let queue = redis.queue("burst").await;
    let payloads: Vec<Value> = (0..12).map(|i| json!({ "n": i })).collect();
    dead_letters(&queue, "sync", "upstream 502", &payloads[..9]).await;
    dead_letters(&queue, "sync", "timeout", &payloads[9..]).await;
    let receiver = Receiver::start(&[]).await;
    let watcher = DeadLetterWatcher::open(&queue, "slack", WatchFrom::Start)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let hook = webhook(&receiver.url).max_per_minute(3);
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { hook.run(watcher, shutdown).await }
    });

    let accepted = receiver.wait_accepted(3).await;
    let letters = queue.dead_letters(None, 100).await.unwrap().letters;
    let last = letters.last().unwrap().id.clone();
    eventually("the position past the summary", support::WAIT, || async {
        saved_position(&redis, &queue, "slack").await.as_deref() == Some(last.as_str())
    })
    .await;
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();

    assert_eq!(
        (report.posted, report.summaries, report.summarized),
        (2, 1, 10)
    );
    assert_eq!(receiver.accepted().len(), 3, "three posts, the limit");
    assert!(text(&accepted[0]).contains(letters[0].job_id.as_str()));
    assert!(text(&accepted[1]).contains(letters[1].job_id.as_str()));
    let summary = &accepted[2];
    assert_eq!(
        summary["text"],
        "…and 10 more dead letters on queue burst (not posted one by one: over the rate limit)"
    );
    let errors = summary["blocks"][1]["text"]["text"].as_str().unwrap();
    assert_eq!(
        errors,
        "*Most common errors*\n• 7 × `upstream 502`\n• 3 × `timeout`"
    );
    let context = summary["blocks"][2]["elements"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        context.contains(&format!("`{}` to `{last}`", letters[2].id)),
        "{context}"
    );
    assert!(
        context.contains(&format!(
            "streamq dlq --queue burst list --after {}",
            letters[1].id
        )),
        "{context}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_notifier_resumes_after_what_the_webhook_accepted() {
    let redis = TestRedis::start();
    let queue = redis.queue("resume").await;
    let receiver = Receiver::start(&[]).await;
    dead_letters(&queue, "a", "boom", &[json!(1), json!(2)]).await;

    // Run 1: posts the two letters there, then stops.
    let watcher = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Start)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (hook, shutdown) = (webhook(&receiver.url), shutdown.clone());
        async move { hook.run(watcher, shutdown).await }
    });
    receiver.wait_accepted(2).await;
    let letters = queue.dead_letters(None, 10).await.unwrap().letters;
    eventually("both positions saved", support::WAIT, || async {
        saved_position(&redis, &queue, "ops").await.as_deref() == Some(letters[1].id.as_str())
    })
    .await;
    shutdown.cancel();
    assert_eq!(run.await.unwrap().unwrap().posted, 2);

    // Run 2, same name: only the letter that came after.
    let watcher = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Start)
        .await
        .unwrap();
    assert_eq!(watcher.position(), letters[1].id, "the saved position wins");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (hook, shutdown) = (webhook(&receiver.url), shutdown.clone());
        async move { hook.run(watcher, shutdown).await }
    });
    dead_letters(&queue, "a", "boom", &[json!(3)]).await;
    let accepted = receiver.wait_accepted(3).await;
    shutdown.cancel();
    assert_eq!(run.await.unwrap().unwrap().posted, 1);

    let letters = queue.dead_letters(None, 10).await.unwrap().letters;
    let posted: Vec<&JobId> = letters.iter().map(|l| &l.job_id).collect();
    assert_eq!(posted.len(), 3);
    for (message, id) in accepted.iter().zip(posted) {
        assert!(text(message).contains(id.as_str()), "{message} for {id}");
    }
    assert_eq!(receiver.accepted().len(), 3, "nothing posted twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_message_stops_the_notifier_and_the_next_run_posts_it() {
    let redis = TestRedis::start();
    let queue = redis.queue("refused").await;
    let ids = dead_letters(&queue, "a", "boom", &[json!("x")]).await;

    let refusing = Receiver::start(&[404]).await;
    let watcher = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Start)
        .await
        .unwrap();
    let err = webhook(&refusing.url)
        .run(watcher, CancellationToken::new())
        .await
        .unwrap_err();
    match &err {
        NotifyError::Rejected { status, url, body } => {
            assert_eq!((*status, body.as_str()), (404, "no"));
            assert!(url.ends_with("/…") && !url.contains("s3cr3t"), "{url}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert_eq!(
        saved_position(&redis, &queue, "ops").await.as_deref(),
        Some("0-0")
    );

    let giving_up = Receiver::start(&[500, 500, 500]).await;
    let watcher = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Start)
        .await
        .unwrap();
    let err = webhook(&giving_up.url)
        .max_attempts(3)
        .run(watcher, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::GaveUp { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        saved_position(&redis, &queue, "ops").await.as_deref(),
        Some("0-0")
    );

    let accepting = Receiver::start(&[]).await;
    let watcher = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Start)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (hook, shutdown) = (webhook(&accepting.url), shutdown.clone());
        async move { hook.run(watcher, shutdown).await }
    });
    let accepted = accepting.wait_accepted(1).await;
    shutdown.cancel();
    assert_eq!(run.await.unwrap().unwrap().posted, 1);
    assert!(text(&accepted[0]).contains(ids[0].as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hook_sees_each_letter_once_and_a_failed_one_again() {
    let redis = TestRedis::start();
    let queue = redis.queue("hooked").await;
    dead_letters(&queue, "a", "boom", &[json!(1), json!(2), json!(3)]).await;
    let letters = queue.dead_letters(None, 10).await.unwrap().letters;
    let ids: Vec<JobId> = letters.iter().map(|l| l.job_id.clone()).collect();

    // The hook refuses the second letter: the run stops there.
    let watcher = DeadLetterWatcher::open(&queue, "mine", WatchFrom::Start)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let second = ids[1].clone();
    let err = watcher
        .run(
            move |letter| {
                let record = record.clone();
                let second = second.clone();
                async move {
                    record.lock().unwrap().push(letter.job_id.clone());
                    if letter.job_id == second {
                        return Err("pager down");
                    }
                    Ok(())
                }
            },
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WatchError::Hook("pager down")), "{err:?}");
    assert_eq!(*seen.lock().unwrap(), ids[..2]);

    // The next run starts with the refused one.
    seen.lock().unwrap().clear();
    let watcher = DeadLetterWatcher::open(&queue, "mine", WatchFrom::Start)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let record = seen.clone();
    let run = tokio::spawn(watcher.run(
        move |letter| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(letter.job_id.clone());
                Ok::<(), String>(())
            }
        },
        shutdown.clone(),
    ));
    wait_for("the last two letters", || seen.lock().unwrap().len() == 2).await;
    eventually("the position saved", support::WAIT, || async {
        saved_position(&redis, &queue, "mine").await.as_deref() == Some(letters[2].id.as_str())
    })
    .await;
    shutdown.cancel();
    assert_eq!(run.await.unwrap().unwrap(), 2);
    assert_eq!(*seen.lock().unwrap(), ids[1..]);

    let bad = DeadLetterWatcher::open(&queue, "has space", WatchFrom::Now).await;
    assert!(
        matches!(bad, Err(streamq::Error::InvalidName { .. })),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamq_notify_posts_dead_letters_and_stops_on_sigterm() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let queue = redis.queue("cliq").await;
    let ids = dead_letters(&queue, "page", "disk full", &[json!({"host": "db-1"})]).await;
    let receiver = Receiver::start(&[503]).await;

    let child = support::cli::command()
        .args([
            "notify",
            "--redis",
            &url,
            "-q",
            "cliq",
            "--from-start",
            "--retry-ms",
            "10",
        ])
        .env("STREAMQ_WEBHOOK_URL", &receiver.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    receiver.wait_accepted(1).await;
    let letter = queue.dead_letters(None, 1).await.unwrap().letters.remove(0);
    eventually("the position saved", support::WAIT, || async {
        saved_position(&redis, &queue, "default").await.as_deref() == Some(letter.id.as_str())
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let run: support::cli::Run = child.wait_with_output().unwrap().into();

    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "posted dead letter {} (job {}), after 2 tries",
            letter.id, ids[0]
        )
    );
    let port = receiver.url.split('/').nth(2).unwrap();
    assert!(
        run.stderr.contains(&format!(
            "streamq notify: posting dead letters of queue cliq to http://{port}/… \
             (from the first dead letter; notifier \"default\", at most 20 posts a minute). Ctrl-C stops."
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("stopped; 1 dead letters posted, 0 more in 0 summaries"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("s3cr3t"),
        "the URL's secret shown: {}",
        run.stderr
    );

    // A webhook that refuses: exit 1, why, and how to go on; no secret.
    let refusing = Receiver::start(&[404]).await;
    dead_letters(&queue, "page", "again", &[json!(2)]).await;
    let run: support::cli::Run = support::cli::command()
        .args([
            "notify",
            "--redis",
            &url,
            "-q",
            "cliq",
            "--webhook",
            &refusing.url,
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "streamq notify: the webhook at http://{}/… refused the message with 404: no. \
             Check the webhook URL",
            refusing.url.split('/').nth(2).unwrap()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("`streamq notify -q cliq --name default` starts again from there"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("s3cr3t"), "{}", run.stderr);

    let bad: support::cli::Run = support::cli::command()
        .args([
            "notify",
            "--redis",
            &url,
            "-q",
            "cliq",
            "--webhook",
            "ftp://x/s3cr3t",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(bad.code, 1, "{bad:?}");
    assert_eq!(
        bad.stderr.trim(),
        "streamq: --webhook (or STREAMQ_WEBHOOK_URL): invalid notifier settings: \
         the webhook URL must be http:// or https:// with a host, not ftp://x/…"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_webhooks_verify_the_certificate() {
    // A TLS server whose certificate no system root knows: a redis-server
    // with TLS on (the webhook never gets as far as HTTP).
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = streamq::TlsFiles {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        ca: dir.path().join("ca.crt"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();
    let server = match streamq::LocalRedis::builder().tls(files).start() {
        Ok(server) => server,
        Err(err) if err.to_string().contains("Failed finding TLS support") => {
            eprintln!("skipped: this redis-server is built without TLS ({err})");
            return;
        }
        Err(err) => panic!("TLS redis-server did not start: {err}"),
    };

    let hook = Webhook::new(&format!("https://127.0.0.1:{}/hook/s3cr3t", server.port()))
        .unwrap()
        .max_attempts(1);
    let err = hook.post(&json!({"text": "hello"})).await.unwrap_err();
    match &err {
        NotifyError::GaveUp {
            attempts,
            last,
            url,
        } => {
            assert_eq!(*attempts, 1);
            assert!(last.contains("certificate"), "{last}");
            assert!(!url.contains("s3cr3t"), "{url}");
        }
        other => panic!("expected a refused certificate, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_follows_every_partition_and_resumes_each_where_it_committed() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("parted").partitions(4)).await;
    let watcher = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Start)
        .await
        .unwrap();
    assert_eq!(watcher.position(), "0-0@0,0-0@1,0-0@2,0-0@3");
    let payloads: Vec<Value> = (0..12).map(|i| json!(i)).collect();
    let ids = dead_letters(&queue, "a", "boom", &payloads).await;

    let mut watcher = watcher;
    let mut letters = Vec::new();
    while letters.len() < 12 {
        letters.extend(watcher.next_batch(5).await.unwrap());
    }
    let mut seen: Vec<JobId> = letters.iter().map(|l| l.job_id.clone()).collect();
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "each dead letter once, from every partition");
    let parts: std::collections::BTreeSet<&str> = letters
        .iter()
        .map(|l| l.id.rsplit_once('@').expect("qualified").1)
        .collect();
    assert_eq!(parts.len(), 4, "{letters:?}");
    // The page the dead-letter API shows has the same ids, in the same order.
    let listed = queue.dead_letters(None, 100).await.unwrap().letters;
    let listed: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    let read: Vec<&str> = letters.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(read, listed);

    // Committing the sixth saves it and everything read before it.
    watcher.commit(&letters[5].id).await.unwrap();
    drop(watcher);
    let mut again = DeadLetterWatcher::open(&queue, "ops", WatchFrom::Now)
        .await
        .unwrap();
    let rest = again.ready(100).await.unwrap();
    let rest: Vec<&str> = rest.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(rest, read[6..], "the saved position wins, per partition");

    // A new letter in any partition wakes a waiting watcher.
    again.commit(read[11]).await.unwrap();
    let waiting = tokio::spawn(async move { again.next_batch(10).await.unwrap() });
    let late = dead_letters(&queue, "a", "late", &[json!("late")]).await;
    let woke = waiting.await.unwrap();
    assert_eq!(woke.len(), 1);
    assert_eq!(woke[0].job_id, late[0]);
    assert!(matches!(
        DeadLetterWatcher::open(&queue, "ops", WatchFrom::Now)
            .await
            .unwrap()
            .commit("1-0")
            .await,
        Err(streamq::Error::InvalidEntryId(_))
    ));
}

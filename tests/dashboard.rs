//! The dashboard in a real browser: headless Chromium driven through
//! ChromeDriver (WebDriver, the fantoccini crate) against a real server and
//! Redis. It checks the shown counts against Redis, opens a job by id,
//! retries a dead letter and sees it leave, pauses and resumes, reads the
//! history chart's data points, and fails on any console error.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs). Set `STREAMQ_SCREENSHOT` to
//! a path to keep a screenshot of the page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use server::{TestServer, client};
use streamq::http::HttpConfig;
use streamq::{JobError, JobTracking, Priority, Queue, WorkerConfig};
use support::{TestRedis, eventually, spawn_worker};

const WAIT: Duration = Duration::from_secs(30);
const STEP_MS: u64 = 60_000;

/// A chromedriver process on a free port, in a process group of its own
/// with the browsers it starts: the whole group is killed on drop, so a
/// failing test leaves no Chromium behind.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(std::env::var("CHROMEDRIVER").unwrap_or("chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver on PATH (apt-get install chromium-driver)");
        Driver {
            child,
            port,
            _profile: tempfile::tempdir().expect("a profile dir"),
        }
    }

    async fn session(&self) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port);
        eventually("chromedriver to answer", WAIT, || async {
            client().get(format!("{url}/status")).send().await.is_ok()
        })
        .await;
        let profile = self._profile.path().display().to_string();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={profile}"),
                    "--window-size=1280,1300",
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// ChromeDriver's browser console log (`POST /session/{id}/se/log`);
/// reading it empties it.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

async fn console(browser: &Client) -> Vec<(String, String)> {
    let entries = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the console log");
    entries
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["level"].as_str().unwrap_or_default().to_owned(),
                        e["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn script(browser: &Client, js: &str) -> Value {
    browser.execute(js, vec![]).await.expect(js)
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .expect(css)
        .text()
        .await
        .expect(css)
}

/// The text of `css`, or `None` while no such element exists.
async fn text_if_any(browser: &Client, css: &str) -> Option<String> {
    let found = browser.find_all(Locator::Css(css)).await.expect(css);
    match found.first() {
        Some(element) => element.text().await.ok(),
        None => None,
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect(css);
}

/// Clicks `css`, then the confirmation dialog's Confirm.
async fn click_confirmed(browser: &Client, css: &str) {
    click(browser, css).await;
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("dialog#confirm[open] #confirm-ok"))
        .await
        .expect("the confirmation dialog")
        .click()
        .await
        .expect("confirm");
}

/// Seeds `n` past history points, one per step, ending a step ago.
async fn seed_history(redis: &TestRedis, queue: &Queue, n: u64) -> Vec<(u64, u64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let last = now - now % STEP_MS - STEP_MS;
    let mut raw = redis.raw().await;
    let mut seeded = Vec::new();
    let (mut enq, mut done, mut fail, mut dead) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        let at = last - (n - 1 - i) * STEP_MS;
        let wave = ((i as f64) / 6.0).sin();
        let critical = (6.0 + 5.0 * wave).round() as u64;
        let rate = (900.0 + 500.0 * wave) as u64;
        enq += rate;
        done += rate - 5 - i % 7;
        fail += if i % 9 == 4 { 40 } else { i % 3 };
        dead += u64::from(i % 9 == 4) * 6;
        let _: String = redis::cmd("XADD")
            .arg(queue.keys().history())
            .arg(format!("{at}-0"))
            .arg("w:critical")
            .arg(critical)
            .arg("w:high")
            .arg((14.0 + 9.0 * (wave + 0.3 * ((i as f64) / 2.0).cos())).round() as u64)
            .arg("w:medium")
            .arg((30.0 + 20.0 * ((i as f64) / 9.0).cos()).round() as u64)
            .arg("w:low")
            .arg(40 + (i * 37) % 25)
            .arg("enq")
            .arg(enq)
            .arg("done")
            .arg(done)
            .arg("fail")
            .arg(fail)
            .arg("dead")
            .arg(dead)
            .query_async(&mut raw)
            .await
            .unwrap();
        seeded.push((at, critical));
    }
    seeded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_redis_and_acts_on_it() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("alerts")
                .max_attempts(1)
                .track_jobs(JobTracking::default()),
        )
        .await;
    let seeded = seed_history(&redis, &queue, 90).await;
    // No sampler here (tests/http.rs covers it): the chart shows exactly
    // the seeded points.
    let config = HttpConfig::new().history(None);
    let server = TestServer::start(queue.clone(), config).await;
    let post = |path: &str, body: Value| {
        let url = server.at(path);
        async move {
            let reply: Value = client()
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reply
        }
    };

    // Two jobs that fail (dead letters) and three that complete (latency).
    for i in 0..2 {
        post(
            "/api/queues/alerts/jobs",
            json!({"name": "notify:pager", "payload": {"alert": i, "host": "db-1"}}),
        )
        .await;
    }
    for i in 0..3 {
        post(
            "/api/queues/alerts/jobs",
            json!({"name": "enrich", "payload": {"n": i}}),
        )
        .await;
    }
    let (stop, worker) = spawn_worker(
        &queue,
        WorkerConfig::new(),
        |job: streamq::Job<Value>| async move {
            if job.name() == "notify:pager" {
                Err(JobError::retry("pager API answered 503"))
            } else {
                Ok(())
            }
        },
    );
    eventually("two dead letters and three completed", WAIT, || async {
        let s = queue.stats().await.unwrap();
        s.dead_letters == 2 && s.completed() == 3
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    // Alerts that stay waiting.
    let mut alert_id = String::new();
    for severity in [
        "critical", "critical", "high", "warning", "info", "info", "info",
    ] {
        let reply = post(
            "/api/alerts/event",
            json!({"title": "disk full", "severity": severity, "source": "nagios"}),
        )
        .await;
        alert_id = reply["alert_id"].as_str().unwrap().to_owned();
    }

    let driver = Driver::start();
    let browser = driver.session().await;

    // The console check can fail: a console error is seen (and drained).
    browser.goto(&server.at("/healthz")).await.unwrap();
    script(&browser, "console.error('negative control'); return 1").await;
    let seen = console(&browser).await;
    assert!(
        seen.iter()
            .any(|(level, m)| level == "SEVERE" && m.contains("negative control")),
        "the console log is not readable: {seen:?}"
    );

    browser.goto(&server.url).await.unwrap();
    let refreshed = || async {
        script(
            &browser,
            "return window.dashboard.refreshes > 0 && !!window.dashboard.charts.lengths",
        )
        .await
        .as_bool()
        .unwrap_or(false)
    };
    eventually("the first refresh", WAIT, refreshed).await;

    // Shown counts are Redis's.
    let stats = queue.stats().await.unwrap();
    for p in &stats.priorities {
        let shown = text(&browser, &format!("#row-{} .waiting", p.priority)).await;
        assert_eq!(shown, p.waiting.to_string(), "{} waiting", p.priority);
        let in_flight = text(&browser, &format!("#row-{} .in-flight", p.priority)).await;
        assert_eq!(
            in_flight,
            p.in_flight.to_string(),
            "{} in flight",
            p.priority
        );
    }
    assert_eq!(stats.priorities[Priority::Critical as usize].waiting, 2);
    assert_eq!(text(&browser, "#total-dead").await, "2");
    assert_eq!(text(&browser, "#health").await.to_lowercase(), "errors");
    let rows = browser.find_all(Locator::Css("tr.letter")).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        text(&browser, "#dead-letters")
            .await
            .contains("pager API answered 503")
    );
    assert!(text(&browser, "#latency").await.contains("enrich"));

    // The history chart holds the points Redis holds.
    let chart = script(&browser, "return window.dashboard.charts.lengths.data").await;
    let xs: Vec<u64> = chart[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as u64 * 1000)
        .collect();
    let critical: Vec<u64> = chart[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for (at, value) in &seeded {
        let i = xs
            .iter()
            .position(|x| x == at)
            .expect("a seeded point in the chart");
        assert_eq!(critical[i], *value, "critical waiting at {at}");
    }
    assert_eq!(xs.len(), seeded.len());

    if let Ok(path) = std::env::var("STREAMQ_SCREENSHOT") {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
    }

    // A job by id.
    browser
        .find(Locator::Css("#job-id"))
        .await
        .unwrap()
        .send_keys(&alert_id)
        .await
        .unwrap();
    click(&browser, "#job-form button").await;
    eventually("the job's state", WAIT, || async {
        text_if_any(&browser, "#job-state")
            .await
            .is_some_and(|t| t.to_lowercase().contains("waiting"))
    })
    .await;
    assert!(text(&browser, "#job-result").await.contains("alert"));

    // Retry a dead letter: it leaves the list and Redis.
    let first = browser.find(Locator::Css("tr.letter")).await.unwrap();
    let letter_id = first.attr("data-id").await.unwrap().unwrap();
    click_confirmed(&browser, "tr.letter .dlq-retry").await;
    eventually("the letter to leave the list", WAIT, || async {
        let selector = format!("tr.letter[data-id='{letter_id}']");
        browser
            .find_all(Locator::Css(&selector))
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(queue.stats().await.unwrap().dead_letters, 1);
    assert!(queue.dead_letter(&letter_id).await.unwrap().is_none());

    // Pause, then resume.
    click_confirmed(&browser, "#pause-btn").await;
    eventually("the queue to pause", WAIT, || async {
        queue.is_paused().await.unwrap()
    })
    .await;
    eventually("the page to say paused", WAIT, || async {
        browser
            .find(Locator::Css("#paused"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    })
    .await;
    click_confirmed(&browser, "#resume-btn").await;
    eventually("the queue to resume", WAIT, || async {
        !queue.is_paused().await.unwrap()
    })
    .await;

    // Not one console error through all of it.
    let errors: Vec<_> = console(&browser)
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    browser.close().await.unwrap();
    server.stop().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_is_broken_down_by_partition() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("tenants").partitions(4)).await;
    // Tenants of different sizes, so the partitions hold different counts.
    for (tenant, jobs) in [("acme", 7), ("globex", 3), ("initech", 1), ("umbrella", 5)] {
        for i in 0..jobs {
            let options = streamq::EnqueueOptions::new().partition_key(tenant);
            queue.enqueue(&i, &options).await.unwrap();
        }
    }
    let server = TestServer::start(queue.clone(), HttpConfig::new().history(None)).await;
    let driver = Driver::start();
    let browser = driver.session().await;
    browser.goto(&server.url).await.unwrap();
    eventually("the partition table", WAIT, || async {
        script(&browser, "return window.dashboard.partitions !== null")
            .await
            .as_bool()
            .unwrap_or(false)
    })
    .await;

    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.partitions.len(), 4);
    assert!(
        stats.partitions.iter().filter(|p| p.waiting() > 0).count() > 1,
        "the tenants landed in one partition: the check below would prove little"
    );
    for (i, partition) in stats.partitions.iter().enumerate() {
        let waiting = text(&browser, &format!("#partition-{i} .waiting")).await;
        assert_eq!(waiting, partition.waiting().to_string(), "partition {i}");
    }
    let rows = browser.find_all(Locator::Css("#partitions tbody tr")).await;
    assert_eq!(rows.unwrap().len(), 4);
    // The priority table above shows the sums (the jobs are all medium).
    assert_eq!(stats.waiting(), 16);
    assert_eq!(text(&browser, "#row-medium .waiting").await, "16");

    let errors: Vec<_> = console(&browser)
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    browser.close().await.unwrap();
    server.stop().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

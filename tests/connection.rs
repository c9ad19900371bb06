//! Connecting: version detection, TLS with a throwaway CA, and an ACL user
//! restricted to one queue's keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use streamq::{
    EnqueueOptions, Error, Job, JobError, Queue, QueueKeys, RedisConfig, TlsFiles, Version,
    WorkerConfig,
};
use support::{TestRedis, spawn_worker, until_stats};

/// Enqueues three jobs and runs a worker until they are done.
async fn round_trip(queue: &Queue) {
    for i in 0..3u32 {
        queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap();
    }
    let (stop, handle) = spawn_worker(queue, WorkerConfig::new(), |_: Job<u32>| async {
        Ok::<_, JobError>(())
    });
    until_stats("three jobs completed", queue, |s| s.completed() == 3).await;
    stop.cancel();
    assert_eq!(handle.await.unwrap().completed, 3);
}

#[tokio::test]
async fn the_server_version_is_detected() {
    let redis = TestRedis::start();
    let queue = redis.queue("version").await;
    let server = queue.server();
    assert!(server.version >= Version::new(7, 0, 0), "{server:?}");
    let info = redis.info("server").await;
    // Valkey reports a Redis-compatible redis_version (7.2.4) in INFO and
    // its own version in valkey_version and HELLO.
    let field = if server.is_valkey() {
        "valkey_version"
    } else {
        "redis_version"
    };
    let reported = info.get(field).unwrap();
    assert!(reported.starts_with(&format!(
        "{}.{}",
        server.version.major, server.version.minor
    )));
}

#[tokio::test]
async fn tls_with_a_private_ca_works_and_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
    let files = TlsFiles {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        ca: dir.path().join("ca.crt"),
    };
    std::fs::write(&files.cert, server_cert.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();

    // A server built without TLS (the valkey-server a fresh machine fetches
    // from PyPI, say) cannot run this test; any other failure to start is one.
    let redis = match streamq::LocalRedis::builder().tls(files).start() {
        Ok(server) => TestRedis { server },
        Err(err) if err.to_string().contains("Failed finding TLS support") => {
            eprintln!("skipped: this redis-server is built without TLS ({err})");
            return;
        }
        Err(err) => panic!("TLS redis-server did not start: {err}"),
    };
    let url = redis.server.url();
    assert!(url.starts_with("rediss://"), "{url}");

    let config = RedisConfig::from_url(&url)
        .unwrap()
        .tls_root_cert_pem(ca.pem());
    let queue = Queue::builder("tls").connect(&config).await.unwrap();
    round_trip(&queue).await;

    // Negative control: the system roots do not know our CA.
    let untrusted = RedisConfig::from_url(&url)
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let err = Queue::builder("tls").connect(&untrusted).await.unwrap_err();
    assert!(matches!(err, Error::Redis(_)), "{err}");
    assert!(
        !err.is_retryable(),
        "no retry fixes an unknown issuer: {err}"
    );
}

#[tokio::test]
async fn an_acl_user_limited_to_the_queue_prefix_can_run_it_and_nothing_else() {
    let redis = TestRedis::start();
    let mut admin = redis.raw().await;
    let keys = QueueKeys::new("streamq", "alerts").unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "alerts", "on", ">secret", "resetkeys"])
        .arg(format!("~{}", keys.pattern()))
        // The minimal ACL documented in docs/design.md.
        .arg(&[
            "resetchannels",
            "-@all",
            "+@stream",
            "+@hash",
            "+@sortedset",
        ])
        .arg(&[
            "+@string",
            "+@scripting",
            "+@connection",
            "+type",
            "+exists",
            "+info",
            "+del",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://alerts:secret@127.0.0.1:{}", redis.server.port());
    let config = RedisConfig::from_url(&url).unwrap();
    let queue = Queue::builder("alerts").connect(&config).await.unwrap();
    round_trip(&queue).await;

    let err = Queue::builder("payments")
        .connect(&config)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoPermission(_)), "{err}");
    assert!(!err.is_retryable());

    // A script that touches a key outside the pattern is refused too.
    let marker = keys.pattern().replace('*', "marker");
    let _: () = admin.set(&marker, 1).await.unwrap();
    let wrong = RedisConfig::from_url(&format!(
        "redis://alerts:nope@127.0.0.1:{}",
        redis.server.port()
    ))
    .unwrap();
    let err = Queue::builder("alerts").connect(&wrong).await.unwrap_err();
    assert!(
        matches!(err, Error::Authentication { missing: false }),
        "{err}"
    );
}

//! A real `streamq::http` server on a free loopback port, on a queue of a
//! test's private redis-server; stopped gracefully by `stop`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use streamq::Queue;
use streamq::http::{HttpConfig, ServeError, serve_on};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub url: String,
    pub queue: Queue,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    pub async fn start(queue: Queue, config: HttpConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve_on(listener, queue.clone(), config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            queue,
            stop: Some(stop),
            handle,
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Asks for a graceful shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(mut self) {
        self.begin_stop();
        self.handle.await.expect("server task").expect("server ran");
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("http client")
}

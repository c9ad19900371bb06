//! [`Webhook`]: posting JSON to a webhook URL with bounded retries, and
//! never showing the URL whole (a Slack webhook's path is its secret).
//!
//! HTTP is hyper's client with rustls on the ring provider streamq uses
//! for Redis, given to this client alone. (reqwest's rustls without its
//! aws-lc provider needs a process-wide provider, and every other reqwest
//! client in an application using streamq would panic without one.)

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{HeaderMap, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::admin::json::cut;
use crate::backoff::Backoff;
use crate::error::{ConfigError, Error};

/// The longest `Retry-After` honoured; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The most of an answer's body read (it is only shown in errors).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A webhook to post dead letters to, with its limits: at most
/// `max_per_minute` posts a minute (beyond that, one summary stands for the
/// rest), `max_attempts` tries per post with backoff on connection errors,
/// timeouts, 408, 429 and 5xx answers (honouring `Retry-After`).
///
/// Its `Debug` output and every error show the URL as
/// [`Webhook::redacted_url`] does: scheme and host only. Redirects are not
/// followed, so the URL is never sent elsewhere.
///
/// # Examples
///
/// ```no_run
/// # async fn example(queue: streamq::Queue) -> Result<(), Box<dyn std::error::Error>> {
/// use streamq::notify::{DeadLetterWatcher, WatchFrom, Webhook};
/// use tokio_util::sync::CancellationToken;
///
/// let webhook = Webhook::new("https://hooks.slack.com/services/T0/B0/XXXX")?.max_per_minute(20);
/// let watcher = DeadLetterWatcher::open(&queue, "slack", WatchFrom::Now).await?;
/// let report = webhook.run(watcher, CancellationToken::new()).await?;
/// println!("{} dead letters posted", report.posted);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Webhook {
    url: url::Url,
    uri: Uri,
    client: HttpClient,
    pub(crate) max_per_minute: u32,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    timeout: Duration,
    pub(crate) preview_chars: usize,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.redacted_url())
            .field("max_per_minute", &self.max_per_minute)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook posting to `url` (`http` or `https`).
    ///
    /// # Errors
    ///
    /// [`NotifyError::Config`] when the URL does not parse or is not
    /// `http(s)://` with a host; [`NotifyError::Client`] when no HTTP
    /// client can be built (no TLS roots, say).
    pub fn new(url: &str) -> Result<Webhook, NotifyError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            NotifyError::Config(ConfigError::single(format!(
                "the webhook URL does not parse: {e}"
            )))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(NotifyError::Config(ConfigError::single(format!(
                "the webhook URL must be http:// or https:// with a host, not {}",
                redact(&parsed)
            ))));
        }
        let uri: Uri = parsed.as_str().parse().map_err(|e| {
            NotifyError::Config(ConfigError::single(format!(
                "the webhook URL {} is not a usable HTTP URI: {e}",
                redact(&parsed)
            )))
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
            .map_err(|e| NotifyError::Client(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Webhook {
            url: parsed,
            uri,
            client,
            max_per_minute: 20,
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            preview_chars: 300,
        })
    }

    /// At most this many posts in any minute (at least 1); when more dead
    /// letters wait than may be posted, the last post of the minute is one
    /// summary of all of them. Default: 20.
    pub fn max_per_minute(mut self, posts: u32) -> Webhook {
        self.max_per_minute = posts.max(1);
        self
    }

    /// Tries per post, the first included (at least 1). Default: 8, which
    /// with the default backoff keeps trying for about two minutes.
    pub fn max_attempts(mut self, attempts: u32) -> Webhook {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The pause after a failed try: `base`, doubling up to `max` (the
    /// project's one backoff curve), unless the answer says `Retry-After`.
    /// Default: 1 s doubling to 60 s.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Webhook {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// How long one try may take, answer included. Default: 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Webhook {
        self.timeout = timeout;
        self
    }

    /// Characters of payload shown per dead letter (JSON, cut on a
    /// character boundary). Default: 300.
    pub fn preview_chars(mut self, chars: usize) -> Webhook {
        self.preview_chars = chars;
        self
    }

    /// The URL without its secret parts: `https://hooks.slack.com/…`
    /// (scheme, host and port; path, query and credentials hidden).
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Posts `message` as JSON, trying again after connection errors,
    /// timeouts, 408, 429 and 5xx answers, up to the attempts allowed.
    /// Returns how many tries it took.
    ///
    /// # Errors
    ///
    /// [`NotifyError::Rejected`] on any other answer outside 2xx (a wrong
    /// URL: trying again would not help); [`NotifyError::GaveUp`] when every
    /// try failed.
    ///
    /// # Cancel safety
    ///
    /// Dropping it may leave a post sent or not: the receiver may see the
    /// message once more when the caller posts it again.
    pub async fn post(&self, message: &Value) -> Result<u32, NotifyError> {
        // A token never cancelled: `None` cannot come back.
        let never = CancellationToken::new();
        Ok(self.post_until(message, &never).await?.unwrap_or_default())
    }

    /// [`Webhook::post`], giving up quietly (`None`) once `shutdown` is
    /// cancelled while it waits to try again.
    pub(crate) async fn post_until(
        &self,
        message: &Value,
        shutdown: &CancellationToken,
    ) -> Result<Option<u32>, NotifyError> {
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_max);
        let mut tries = 0;
        loop {
            tries += 1;
            let (failure, retry_after) = match self.try_once(message).await {
                Ok((status, _, _)) if status.is_success() => return Ok(Some(tries)),
                Ok((status, headers, body)) => {
                    let body = cut(String::from_utf8_lossy(&body).trim(), 200);
                    if !retryable(status) {
                        return Err(NotifyError::Rejected {
                            url: self.redacted_url(),
                            status: status.as_u16(),
                            body,
                        });
                    }
                    (format!("answered {status}: {body}"), retry_after(&headers))
                }
                Err(failure) => (failure, None),
            };
            if tries >= self.max_attempts {
                return Err(NotifyError::GaveUp {
                    url: self.redacted_url(),
                    attempts: tries,
                    last: failure,
                });
            }
            let delay = retry_after.unwrap_or_else(|| backoff.next_delay());
            tracing::warn!(url = %self.redacted_url(), try_ = tries, %failure, ?delay, "webhook post failed; trying again");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

impl Webhook {
    /// One try: the answer's status, headers and (the start of) its body,
    /// or why there was none.
    async fn try_once(&self, message: &Value) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        let request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("streamq/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let answer = self
                .client
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let (parts, body) = answer.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok((parts.status, parts.headers, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// Whether an answer with this status may go through when tried again.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The answer's `Retry-After`, in seconds or as an HTTP date, at most
/// [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            let ms = at
                .timestamp_millis()
                .saturating_sub(chrono::Utc::now().timestamp_millis());
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `scheme://host[:port]/…`: what of a webhook URL may be shown.
fn redact(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = url.path() != "/" || url.query().is_some();
    format!(
        "{}://{host}{port}/{}",
        url.scheme(),
        if hidden { "…" } else { "" }
    )
}

/// An error with its causes, `: `-separated, each said once.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(err) = cause {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = err.source();
    }
    parts.join(": ")
}

/// Why notifying stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The notifier's settings are unusable.
    #[error("invalid notifier settings: {0}")]
    Config(ConfigError),
    /// No HTTP client could be built.
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    /// The webhook refused the message with an answer that trying again
    /// would not change (400, 403, 404, 410, a redirect, ...). The dead
    /// letter was not marked as delivered.
    #[error("the webhook at {url} refused the message with {status}: {body}")]
    Rejected {
        /// The URL, redacted.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// Every try failed; the dead letter was not marked as delivered.
    #[error("the webhook at {url} failed {attempts} times, the last: {last}")]
    GaveUp {
        /// The URL, redacted.
        url: String,
        /// Tries made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Redis refused in a way that will not pass by itself.
    #[error("{0}")]
    Redis(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_scheme_and_host_only() {
        let url = |s: &str| url::Url::parse(s).expect("parses");
        assert_eq!(
            redact(&url("https://hooks.slack.com/services/T0/B0/secret")),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact(&url("http://user:pw@127.0.0.1:8080/?token=x")),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(redact(&url("https://example.com")), "https://example.com/");
        let hook = Webhook::new("https://hooks.slack.com/services/T0/B0/secret").expect("valid");
        assert!(!format!("{hook:?}").contains("secret"));
        assert!(matches!(
            Webhook::new("ftp://example.com/x"),
            Err(NotifyError::Config(_))
        ));
        assert!(matches!(
            Webhook::new("not a url"),
            Err(NotifyError::Config(_))
        ));
    }

    #[test]
    fn only_passing_failures_are_tried_again() {
        for status in [500, 502, 503, 429, 408] {
            assert!(retryable(StatusCode::from_u16(status).expect("status")));
        }
        for status in [400, 301, 403, 404, 410] {
            assert!(!retryable(StatusCode::from_u16(status).expect("status")));
        }
    }
}

//! Where to find Redis and how to talk to it: [`RedisConfig`], plus server
//! version and feature detection ([`ServerInfo`]).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, Value};

use crate::error::{ConfigCheck, ConfigError, Error};
use crate::protocol::cluster::{self, Conn};
use crate::protocol::{fields, reply};

/// How to connect to Redis: address, credentials, TLS and timeouts.
///
/// Build it from a URL (`redis://`, `rediss://` for TLS, `unix://`) with
/// [`RedisConfig::from_url`], or from the environment with
/// [`RedisConfig::from_env`]. `TCP_NODELAY` is always on.
#[derive(Clone)]
pub struct RedisConfig {
    info: ConnectionInfo,
    origin: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    tls_root_cert: Option<Vec<u8>>,
    /// `Some` once chosen ([`RedisConfig::cluster`]) or detected at connect.
    cluster: Option<bool>,
    /// In cluster mode, every node known at connect (seeds for blocking
    /// connections, so they start while the first node is down).
    cluster_nodes: Vec<ConnectionInfo>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("addr", &self.info.addr().to_string())
            .field("origin", &self.origin)
            .field("db", &self.info.redis_settings().db())
            .field("user", &self.info.redis_settings().username())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Parses a connection URL such as `redis://user:pass@host:6379/2`,
    /// `rediss://host:6380` (TLS; append `#insecure` to skip certificate
    /// checks) or `unix:///run/redis.sock`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the URL cannot be parsed, saying why (never
    /// repeating a password).
    pub fn from_url(url: &str) -> Result<RedisConfig, Error> {
        RedisConfig::from_url_with_origin(url, "the URL given")
    }

    fn from_url_with_origin(url: &str, origin: &str) -> Result<RedisConfig, Error> {
        let info = url
            .into_connection_info()
            .map_err(|e| ConfigError::single(explain_bad_url(url, &e)))?;
        let mut config = RedisConfig::from_info(info);
        config.origin = origin.to_owned();
        Ok(config)
    }

    /// Reads the connection from the environment, first match wins:
    /// `STREAMQ_REDIS_URL`, then `REDIS_URL`, then `REDIS_HOST` (default
    /// `127.0.0.1`), `REDIS_PORT` (6379), `REDIS_PASSWORD`, `REDIS_DB` (0)
    /// and `REDIS_USE_SSL` (`true`/`1`/`yes`). With none of them set it is
    /// `redis://127.0.0.1:6379`, and [`RedisConfig::is_default`] says so.
    /// Empty variables count as unset.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every variable that does not parse.
    pub fn from_env() -> Result<RedisConfig, Error> {
        RedisConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// The one precedence the library and the `streamq` command share: the
    /// URL given (a command-line flag, say) when there is one, else
    /// [`RedisConfig::from_env`], else the default `redis://127.0.0.1:6379`.
    /// [`RedisConfig::origin`] tells which it was.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the URL or a variable does not parse.
    pub fn resolve(url: Option<&str>) -> Result<RedisConfig, Error> {
        match url.filter(|u| !u.is_empty()) {
            Some(url) => RedisConfig::from_url(url),
            None => RedisConfig::from_env(),
        }
    }

    /// Where the settings came from, for messages: `the URL given`,
    /// `STREAMQ_REDIS_URL`, `REDIS_URL`, the `REDIS_*` variables that were
    /// set (`REDIS_HOST, REDIS_PORT`), or `the default`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether nothing named a server: no URL given and no variable set, so
    /// this is the default `127.0.0.1:6379`, which may be anyone's Redis.
    pub fn is_default(&self) -> bool {
        self.origin == DEFAULT_ORIGIN
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<RedisConfig, Error> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        for name in ["STREAMQ_REDIS_URL", "REDIS_URL"] {
            if let Some(url) = var(name) {
                return RedisConfig::from_url_with_origin(&url, name);
            }
        }
        let set: Vec<&str> = ENV_VARS
            .into_iter()
            .filter(|name| var(name).is_some())
            .collect();
        let origin = if set.is_empty() {
            DEFAULT_ORIGIN.to_owned()
        } else {
            set.join(", ")
        };
        let mut check = ConfigCheck::default();
        let host = var("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = parse_var(&mut check, "REDIS_PORT", var("REDIS_PORT"), 6379u16);
        let db = parse_var(&mut check, "REDIS_DB", var("REDIS_DB"), 0i64);
        let tls = match var("REDIS_USE_SSL").as_deref().map(str::to_ascii_lowercase) {
            None => false,
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "" | "0" | "false" | "no" | "off" => false,
                _ => {
                    check.require(false, || format!("REDIS_USE_SSL={v:?} is not a boolean"));
                    false
                }
            },
        };
        check.finish()?;
        let addr = if tls {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        };
        let mut info = addr
            .into_connection_info()
            .map_err(|e| ConfigError::single(e.to_string()))?;
        let mut settings = info.redis_settings().clone().set_db(db);
        if let Some(password) = var("REDIS_PASSWORD").filter(|p| !p.is_empty()) {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        let mut config = RedisConfig::from_info(info);
        config.origin = origin;
        Ok(config)
    }

    fn from_info(info: ConnectionInfo) -> RedisConfig {
        RedisConfig {
            info: info.set_tcp_settings(TcpSettings::default().set_nodelay(true)),
            origin: "the URL given".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            tls_root_cert: None,
            cluster: None,
            cluster_nodes: Vec::new(),
        }
    }

    /// Talk to a Redis Cluster (`true`, the URL names any one node; the
    /// others are found through it) or to a single server (`false`).
    /// Default: detected at connect from the node's `INFO cluster`
    /// (`cluster_enabled:1`); set it where an ACL denies `INFO`.
    pub fn cluster(mut self, cluster: bool) -> RedisConfig {
        self.cluster = Some(cluster);
        self
    }

    /// Whether this configuration talks to a cluster: `None` until chosen
    /// or detected.
    pub fn is_cluster(&self) -> Option<bool> {
        self.cluster
    }

    /// How long establishing a connection may take. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command may wait for its reply. Blocking reads get this
    /// plus their block time. Default: 5 s (redis-rs alone would use 500 ms).
    pub fn response_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.response_timeout = timeout;
        self
    }

    /// Trusts this PEM-encoded CA certificate for `rediss://` connections
    /// instead of the system's roots. Default: the system's roots.
    pub fn tls_root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> RedisConfig {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// The address, for messages (never the password).
    pub fn address(&self) -> String {
        self.info.addr().to_string()
    }

    fn client(&self) -> Result<Client, Error> {
        let mut check = ConfigCheck::default();
        check.nonzero("connect timeout", self.connect_timeout);
        check.nonzero("response timeout", self.response_timeout);
        check.finish()?;
        if matches!(self.info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // rustls needs a process-wide crypto provider; an application
            // that installed its own keeps it (this then fails harmlessly).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match &self.tls_root_cert {
            Some(root) => Client::build_with_tls(
                self.info.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                },
            )?,
            None => Client::open(self.info.clone())?,
        };
        Ok(client)
    }

    /// The shared, self-reconnecting connection for ordinary commands.
    /// Commands from concurrent tasks are pipelined on it.
    pub(crate) async fn connection_manager(&self) -> Result<ConnectionManager, Error> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Ok(self
            .client()?
            .get_connection_manager_with_config(config)
            .await?)
    }

    /// The shared connection of a queue: a self-reconnecting one to a
    /// single server, or a cluster connection. Returns the configuration
    /// with cluster mode resolved (detected when not chosen).
    pub(crate) async fn shared_connection(&self) -> Result<(Conn, RedisConfig), Error> {
        let mut resolved = self.clone();
        let mut manager = self.connection_manager().await?;
        let cluster = match self.cluster {
            Some(cluster) => cluster,
            None => cluster::detect(&mut manager).await,
        };
        resolved.cluster = Some(cluster);
        if !cluster {
            return Ok((Conn::Single(manager), resolved));
        }
        drop(manager);
        let mut conn = self.cluster_connection(self.response_timeout).await?;
        resolved.cluster_nodes = cluster::all_nodes(&mut conn, &self.info).await;
        Ok((conn, resolved))
    }

    async fn cluster_connection(&self, response_timeout: Duration) -> Result<Conn, Error> {
        let mut check = ConfigCheck::default();
        check.nonzero("connect timeout", self.connect_timeout);
        check.nonzero("response timeout", self.response_timeout);
        check.finish()?;
        if matches!(self.info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let seeds = if self.cluster_nodes.is_empty() {
            std::slice::from_ref(&self.info)
        } else {
            self.cluster_nodes.as_slice()
        };
        let conn = cluster::connect(
            seeds,
            self.tls_root_cert.as_deref(),
            self.connect_timeout,
            response_timeout,
        )
        .await?;
        Ok(Conn::Cluster(conn))
    }

    /// A connection of its own for a blocking read of up to `block`: to the
    /// server, or on a cluster a cluster connection of its own (a blocking
    /// read holds its node's connection until it returns).
    pub(crate) async fn blocking_connection(&self, block: Duration) -> Result<Conn, Error> {
        if self.cluster == Some(true) {
            return self.cluster_connection(block + self.response_timeout).await;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(block + self.response_timeout));
        Ok(Conn::Plain(
            self.client()?
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        ))
    }
}

/// [`RedisConfig::origin`] when nothing named a server.
const DEFAULT_ORIGIN: &str = "the default";

/// The variables [`RedisConfig::from_env`] reads when no URL is set.
const ENV_VARS: [&str; 5] = [
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "REDIS_USE_SSL",
];

/// Why a Redis URL does not parse, in words, without its password.
fn explain_bad_url(url: &str, err: &redis::RedisError) -> String {
    const FORMS: &str = "use redis://HOST:PORT, rediss://HOST:PORT (TLS) or unix:///PATH/TO/SOCKET";
    let shown = redact_url(url);
    if url.trim().is_empty() {
        return format!("the redis url is empty: {FORMS}");
    }
    match url::Url::parse(url) {
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            format!("bad redis url {shown:?}: not a URL (no scheme); {FORMS}")
        }
        Err(e) => format!("bad redis url {shown:?}: {e}; {FORMS}"),
        Ok(parsed) => match parsed.scheme() {
            "redis" | "rediss" | "valkey" | "valkeys" | "unix" | "redis+unix" => {
                if parsed.scheme() != "unix" && parsed.host_str().is_none_or(str::is_empty) {
                    format!("bad redis url {shown:?}: no host; {FORMS}")
                } else {
                    format!(
                        "bad redis url {shown:?}: {}",
                        err.detail().unwrap_or("does not parse")
                    )
                }
            }
            other => format!("bad redis url {shown:?}: unknown scheme {other:?}; {FORMS}"),
        },
    }
}

/// A URL with its password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}://{hidden}@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn parse_var<T: std::str::FromStr>(
    check: &mut ConfigCheck,
    name: &str,
    value: Option<String>,
    default: T,
) -> T {
    match value.filter(|v| !v.is_empty()) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            check.require(false, || format!("{name}={v:?} is not a valid number"));
            default
        }),
    }
}

/// A server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl Version {
    /// Builds a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().ok());
        Some(Version {
            major: parts.next()??,
            minor: parts.next().flatten().unwrap_or(0),
            patch: parts.next().flatten().unwrap_or(0),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the server is, as it told us at connect (`HELLO`, which works even
/// where an ACL denies `INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis` or `valkey`.
    pub server: String,
    /// The server's version.
    pub version: Version,
}

/// The oldest Redis streamq runs on: stream lag, `XAUTOCLAIM`'s deleted-ids
/// reply and script flags all arrived in 7.0.
pub const MIN_REDIS: Version = Version::new(7, 0, 0);
/// The oldest Valkey streamq runs on (its first release, a Redis 7.2 fork).
pub const MIN_VALKEY: Version = Version::new(7, 2, 0);

impl ServerInfo {
    /// Whether the server is Valkey rather than Redis.
    pub fn is_valkey(&self) -> bool {
        self.server.eq_ignore_ascii_case("valkey")
    }

    /// Whether the server has `XACKDEL` and the `KEEPREF|DELREF|ACKED`
    /// trimming options (Redis 8.2; Valkey lacks them).
    pub fn has_xackdel(&self) -> bool {
        !self.is_valkey() && self.version >= Version::new(8, 2, 0)
    }

    pub(crate) async fn detect<C: redis::aio::ConnectionLike>(
        conn: &mut C,
    ) -> Result<ServerInfo, Error> {
        let reply: Value = match redis::cmd("HELLO").query_async(conn).await {
            Ok(reply) => reply,
            Err(e) if reply::is_unknown_command(&e) => {
                return Err(Error::UnsupportedServer {
                    server: "redis".to_owned(),
                    found: "older than 6.0 (no HELLO)".to_owned(),
                    required: "7.0",
                });
            }
            Err(e) => return Err(e.into()),
        };
        let hello = fields::fields(&reply).unwrap_or_default();
        let field = |name: &str| fields::text(&hello, name);
        let server = field("server").unwrap_or_else(|| "redis".to_owned());
        let found = field("version").unwrap_or_default();
        let version = Version::parse(&found).ok_or_else(|| Error::UnexpectedReply {
            script: "HELLO",
            detail: format!("no usable version in {reply:?}"),
        })?;
        let info = ServerInfo { server, version };
        let (required, label) = if info.is_valkey() {
            (MIN_VALKEY, "7.2")
        } else {
            (MIN_REDIS, "7.0")
        };
        if info.version < required {
            return Err(Error::UnsupportedServer {
                server: info.server,
                found,
                required: label,
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn seed_variables_build_a_connection() {
        let config = RedisConfig::from_vars(env(&[
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "3"),
            ("REDIS_PASSWORD", "s3cret"),
            ("REDIS_USE_SSL", "true"),
        ]))
        .expect("valid");
        assert!(matches!(
            config.info.addr(),
            redis::ConnectionAddr::TcpTls { host, port: 6380, .. } if host == "cache.internal"
        ));
        assert_eq!(config.info.redis_settings().db(), 3);
        assert_eq!(config.info.redis_settings().password(), Some("s3cret"));
        assert!(config.info.tcp_settings().nodelay());
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn redis_url_wins_and_bad_variables_are_all_reported() {
        let config = RedisConfig::from_vars(env(&[
            ("REDIS_URL", "redis://u:p@h:1234/5"),
            ("REDIS_PORT", "oops"),
        ]))
        .expect("url wins");
        assert_eq!(config.address(), "h:1234");
        assert_eq!(config.info.redis_settings().username(), Some("u"));

        let err = RedisConfig::from_vars(env(&[
            ("REDIS_PORT", "99999"),
            ("REDIS_DB", "x"),
            ("REDIS_USE_SSL", "maybe"),
        ]))
        .expect_err("three problems");
        match err {
            Error::Config(c) => assert_eq!(c.problems().len(), 3, "{c}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn origins_say_where_settings_came_from() {
        let default = RedisConfig::from_vars(env(&[])).expect("default");
        assert!(default.is_default());
        assert_eq!(default.address(), "127.0.0.1:6379");
        let hosted = RedisConfig::from_vars(env(&[("REDIS_HOST", "h"), ("REDIS_PORT", "7")]))
            .expect("host and port");
        assert_eq!(hosted.origin(), "REDIS_HOST, REDIS_PORT");
        assert_eq!(hosted.address(), "h:7");
        let both = RedisConfig::from_vars(env(&[
            ("STREAMQ_REDIS_URL", "redis://a:1"),
            ("REDIS_URL", "redis://b:2"),
        ]))
        .expect("urls");
        assert_eq!(
            (both.origin(), both.address().as_str()),
            ("STREAMQ_REDIS_URL", "a:1")
        );
        let empty = RedisConfig::from_vars(env(&[("REDIS_URL", "")])).expect("empty is unset");
        assert!(empty.is_default());
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        let why = |url: &str| match RedisConfig::from_url(url) {
            Err(Error::Config(c)) => c.to_string(),
            other => panic!("{url}: {other:?}"),
        };
        assert!(why("notaurl").contains("not a URL"), "{}", why("notaurl"));
        assert!(why("redis://127.0.0.1:99999").contains("invalid port number"));
        assert!(why("http://h:1").contains("unknown scheme \"http\""));
        let secret = why("redis://u:hunter2@h:99999");
        assert!(
            !secret.contains("hunter2") && secret.contains("u:***@"),
            "{secret}"
        );
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("7.0.15"), Some(Version::new(7, 0, 15)));
        assert_eq!(Version::parse("8.2"), Some(Version::new(8, 2, 0)));
        assert_eq!(Version::parse("x"), None);
        assert!(Version::new(6, 2, 14) < MIN_REDIS);
        let valkey = ServerInfo {
            server: "valkey".into(),
            version: Version::new(9, 1, 2),
        };
        assert!(valkey.is_valkey() && !valkey.has_xackdel());
    }
}

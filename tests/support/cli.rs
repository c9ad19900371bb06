//! Running the real `streamq` binary, with no Redis settings inherited from
//! the environment, and reading what it printed.

use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamq");

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The command with no Redis settings inherited from the environment.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "STREAMQ_REDIS_URL",
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_DB",
        "REDIS_USE_SSL",
        "NO_COLOR",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `streamq <sub> --redis <url> <rest...>`.
pub fn streamq(url: &str, args: &[&str]) -> Run {
    let mut cmd = command();
    cmd.arg(args[0]).args(["--redis", url]).args(&args[1..]);
    cmd.output().expect("streamq runs").into()
}

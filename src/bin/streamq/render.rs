//! How the commands write for people: times (local ISO 8601 plus "3 s
//! ago"), durations, sizes and job states (payloads as JSON come from the
//! library: `DeadLetter::payload_json`). `--json`
//! output does not come through here: it keeps raw numbers (Unix ms, bytes)
//! so that scripts never parse prose, and jobs and dead letters take the
//! library's shapes (`JobInfo::to_json`, `DeadLetter::to_json`), the same as
//! the HTTP API's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::TimeZone;
use streamq::JobState;

/// Writes a line to stdout, returning the I/O error (a closed pipe, say)
/// to the caller instead of panicking as `println!` does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}
pub(crate) use outln;

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A moment as local ISO 8601 with how long ago (or how far ahead) it is:
/// `2026-11-23T18:52:01+01:00 (3 s ago)`.
pub(crate) fn time_ms(ms: u64) -> String {
    let stamp = i64::try_from(ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
        .map_or_else(
            || format!("{ms} ms after 1970"),
            |t| t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        );
    format!("{stamp} ({})", relative_ms(ms))
}

/// `3 s ago`, `in 2 min 05 s`, or `now`.
pub(crate) fn relative_ms(ms: u64) -> String {
    let now = now_ms();
    if ms.abs_diff(now) < 1000 {
        "now".to_owned()
    } else if ms < now {
        format!("{} ago", duration(Duration::from_millis(now - ms)))
    } else {
        format!("in {}", duration(Duration::from_millis(ms - now)))
    }
}

/// A duration for people: `850 ms`, `3.2 s`, `4 min 05 s`, `2 h 03 min`,
/// `3 d 4 h`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// A size for people: `512 B`, `1.0 KiB`, `3.4 MiB`, `1.2 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A tracked job's state in words.
pub(crate) fn job_state(state: &JobState) -> String {
    match state {
        JobState::Waiting { priority } => format!("waiting, priority {priority}"),
        JobState::Active {
            owner,
            idle,
            deliveries,
        } => format!(
            "running on consumer {owner} (lease renewed {} ago, delivery {deliveries})",
            duration(*idle)
        ),
        JobState::Delayed { due_ms } => format!("delayed until {}", time_ms(*due_ms)),
        JobState::DeadLettered {
            error,
            dead_letter_id,
        } => match dead_letter_id {
            Some(id) => format!("dead-lettered as {id}: {error}"),
            None => format!("dead-lettered: {error}"),
        },
        JobState::Completed => "completed".to_owned(),
        JobState::Cancelled => "cancelled before it ran".to_owned(),
        _ => "unknown (its entry is gone: finishing right now, or lost)".to_owned(),
    }
}

/// A progress bar style from `template`, which may use `{rate}`: jobs per
/// second as a whole number (indicatif's own `{per_sec}` prints every
/// decimal of the float).
pub(crate) fn progress_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:>7.0} jobs/s", state.per_sec());
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_people_say_them() {
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(3_240)), "3.2 s");
        assert_eq!(duration(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(duration(Duration::from_secs(7_380)), "2 h 03 min");
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3 d 4 h"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn times_are_local_iso_8601_with_how_long_ago() {
        let shown = time_ms(now_ms() - 3_000);
        assert!(shown.ends_with("(3.0 s ago)"), "{shown}");
        assert_eq!(shown.as_bytes()[10], b'T', "{shown}");
        assert!(time_ms(now_ms() + 120_500).contains("(in 2 min 0"));
    }
}

//! How the commands write for people: times (local ISO 8601 plus "3 s
//! ago"), durations, sizes, job states, and payloads as JSON. `--json`
//! output does not come through here: it keeps raw numbers (Unix ms, bytes)
//! so that scripts never parse prose.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::TimeZone;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
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

/// The short name of a job state, as `--json` spells it.
pub(crate) fn job_state_name(state: &JobState) -> &'static str {
    match state {
        JobState::Waiting { .. } => "waiting",
        JobState::Active { .. } => "active",
        JobState::Delayed { .. } => "delayed",
        JobState::DeadLettered { .. } => "dead_lettered",
        JobState::Completed => "completed",
        JobState::Cancelled => "cancelled",
        _ => "unknown",
    }
}

/// Any MessagePack payload as JSON: maps, arrays, numbers and strings as
/// they are; binary data as a string when it is UTF-8 text (what `streamq
/// produce` sends), else as `{"bytes": N, "hex": "..."}` (at most 64 bytes
/// shown).
pub(crate) struct Shown(pub(crate) Value);

impl<'de> serde::Deserialize<'de> for Shown {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Shown, D::Error> {
        deserializer.deserialize_any(ShownVisitor).map(Shown)
    }
}

struct ShownVisitor;

fn shown_bytes(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => {
            let hex: String = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "bytes": bytes.len(), "hex": hex })
        }
    }
}

impl<'de> Visitor<'de> for ShownVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(shown_bytes(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ShownVisitor)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ShownVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Shown(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((Shown(key), Shown(value))) = map.next_entry()? {
            let key = match key {
                Value::String(s) => s,
                other => other.to_string(),
            };
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess;
        let (Shown(variant), access) = data.variant::<Shown>()?;
        let Shown(inner) = access.newtype_variant::<Shown>()?;
        let name = match variant {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(serde_json::json!({ name: inner }))
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

    #[test]
    fn payloads_of_any_shape_show_as_json() {
        let show = |bytes: &[u8]| -> Value {
            let Shown(v) = rmp_serde::from_slice(bytes).expect("decodes");
            v
        };
        let text = rmp_serde::to_vec(&serde_bytes::ByteBuf::from(b"xxx".to_vec())).expect("enc");
        assert_eq!(show(&text), Value::String("xxx".into()));
        let binary = rmp_serde::to_vec(&serde_bytes::ByteBuf::from(vec![0xff, 0])).expect("enc");
        assert_eq!(
            show(&binary),
            serde_json::json!({"bytes": 2, "hex": "ff00"})
        );
        let map = rmp_serde::to_vec_named(&serde_json::json!({"a": [1, "b"]})).expect("enc");
        assert_eq!(show(&map), serde_json::json!({"a": [1, "b"]}));
    }
}

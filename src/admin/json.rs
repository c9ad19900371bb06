//! Jobs and dead letters as JSON for people, in one shape for `streamq` and
//! the HTTP admin API; any MessagePack payload as JSON, and previews of it
//! cut on a character boundary, for both and for dead-letter notifications
//! (feature `json`, which `http` and `notify` turn on).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::admin::dead_letters::DeadLetter;
use crate::admin::lookup::{JobInfo, JobState};
use crate::error::Error;

/// Characters of a payload shown in a dead letter's `payload_preview`.
const PREVIEW_CHARS: usize = 200;

impl DeadLetter {
    /// The job's payload as JSON, whatever its shape: maps, arrays, numbers
    /// and strings as they are; binary data as a string when it is UTF-8
    /// text (what `streamq produce` sends), else as `{"bytes": N, "hex":
    /// "..."}` with at most the first 64 bytes shown.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the envelope or payload is not MessagePack.
    pub fn payload_json(&self) -> Result<Value, Error> {
        self.payload::<Shown>().map(|Shown(value)| value)
    }

    /// The payload as compact JSON, cut to at most `max_chars` characters
    /// (an ellipsis marks a cut); when it does not decode, why, in words.
    pub fn payload_preview(&self, max_chars: usize) -> String {
        match self.payload_json() {
            Ok(value) => cut(&value.to_string(), max_chars),
            Err(e) => format!("(payload not readable: {e})"),
        }
    }

    /// The letter as JSON, as `streamq dlq show --json` and the HTTP admin
    /// API answer it: `id`, `job_id`, `name`, `priority`, `attempts`,
    /// `error`, `enqueued_ms`, `failed_ms` and a `payload_preview` of at most
    /// 200 characters; with `full`, also the whole `payload` (null, with
    /// `payload_error` saying why, when it does not decode).
    pub fn to_json(&self, full: bool) -> Value {
        let mut value = serde_json::json!({
            "id": self.id,
            "job_id": self.job_id.as_str(),
            "name": self.name,
            "priority": self.priority.as_str(),
            "attempts": self.attempts,
            "error": self.error,
            "enqueued_ms": self.enqueued_ms,
            "failed_ms": self.failed_ms,
            "payload_preview": self.payload_preview(PREVIEW_CHARS),
        });
        if full {
            match self.payload_json() {
                Ok(payload) => value["payload"] = payload,
                Err(e) => {
                    value["payload"] = Value::Null;
                    value["payload_error"] = Value::String(e.to_string());
                }
            }
        }
        value
    }
}

impl JobInfo {
    /// The job as JSON, as `streamq job --json` and the HTTP admin API
    /// answer it: `id`, `name`, `state` ([`JobState::as_str`]), `detail`
    /// (`priority` when waiting; `owner`, `idle_ms`, `deliveries` when
    /// active; `due_ms` when delayed; `error`, `dead_letter_id` when
    /// dead-lettered), its times in Unix ms, `attempts`, `progress`,
    /// `error` and `logs`.
    pub fn to_json(&self) -> Value {
        let detail = match &self.state {
            JobState::Waiting { priority } => serde_json::json!({ "priority": priority.as_str() }),
            JobState::Active {
                owner,
                idle,
                deliveries,
            } => serde_json::json!({
                "owner": owner,
                "idle_ms": u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                "deliveries": deliveries,
            }),
            JobState::Delayed { due_ms } => serde_json::json!({ "due_ms": due_ms }),
            JobState::DeadLettered {
                error,
                dead_letter_id,
            } => serde_json::json!({ "error": error, "dead_letter_id": dead_letter_id }),
            JobState::Completed | JobState::Cancelled | JobState::Unknown => {
                serde_json::json!({})
            }
        };
        serde_json::json!({
            "id": self.id.as_str(),
            "name": self.name,
            "state": self.state.as_str(),
            "detail": detail,
            "enqueued_ms": self.enqueued_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "attempts": self.attempts,
            "progress": self.progress,
            "error": self.error,
            "logs": self.logs,
        })
    }
}

/// `text` cut to at most `max_chars` characters, on a character boundary,
/// ending in `…` when cut.
pub(crate) fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => {
            let keep = text[..end]
                .char_indices()
                .nth(max_chars.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            format!("{}…", &text[..keep])
        }
        None => text.to_owned(),
    }
}

/// Any MessagePack value, decoded as JSON.
struct Shown(Value);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn show(bytes: &[u8]) -> Value {
        let Shown(v) = rmp_serde::from_slice(bytes).expect("decodes");
        v
    }

    #[test]
    fn payloads_of_any_shape_show_as_json() {
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

    #[test]
    fn previews_are_cut_on_a_character_within_the_limit() {
        let long = "é".repeat(500);
        let p = cut(&long, 200);
        assert_eq!(p.chars().count(), 200);
        assert!(p.ends_with('…'));
        assert_eq!(cut(r#"{"a":1}"#, 200), r#"{"a":1}"#);
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        assert_eq!(cut("🦀🦀🦀🦀", 2), "🦀…");
    }
}

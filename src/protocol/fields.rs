//! Reading Redis replies that are lists of field/value pairs (`HELLO`,
//! `XINFO GROUPS`, `XINFO CONSUMERS`), in their RESP2 (flat array) or RESP3
//! (map) form.

use std::collections::HashMap;

use redis::Value;

use crate::protocol::keys::GROUP;

/// One reply's fields by name.
pub(crate) type Fields = HashMap<String, Value>;

/// A field/value reply as a map; `None` when it is neither an array nor a map.
pub(crate) fn fields(value: &Value) -> Option<Fields> {
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
        _ => return None,
    };
    Some(
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((redis::from_redis_value_ref(k).ok()?, v.clone())))
            .collect(),
    )
}

/// A field as text.
pub(crate) fn text(fields: &Fields, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(|v| redis::from_redis_value_ref(v).ok())
}

/// A field as a number; 0 when absent or not a number.
pub(crate) fn number(fields: &Fields, name: &str) -> u64 {
    fields
        .get(name)
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or(0)
}

/// streamq's group in an `XINFO GROUPS` reply.
pub(crate) fn our_group(xinfo_groups: &Value) -> Option<Fields> {
    let Value::Array(groups) = xinfo_groups else {
        return None;
    };
    groups
        .iter()
        .filter_map(fields)
        .find(|g| text(g, "name").as_deref() == Some(GROUP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn resp2_arrays_and_resp3_maps_read_alike() {
        let resp2 = Value::Array(vec![
            bulk("name"),
            bulk("streamq"),
            bulk("lag"),
            Value::Int(7),
        ]);
        let resp3 = Value::Map(vec![
            (bulk("name"), bulk("streamq")),
            (bulk("lag"), Value::Int(7)),
        ]);
        for reply in [resp2, resp3] {
            let group = our_group(&Value::Array(vec![reply])).expect("our group");
            assert_eq!(number(&group, "lag"), 7);
        }
        let other = Value::Array(vec![Value::Array(vec![bulk("name"), bulk("other")])]);
        assert!(our_group(&other).is_none());
    }
}

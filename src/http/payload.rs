//! A job's payload as the HTTP layer hands it to the queue: a JSON tree, or
//! the request's own JSON bytes, transcoded to MessagePack while the
//! envelope is encoded, with no tree built in between (an alert is parsed
//! once for its `severity` and `id`, then streamed).

use axum::body::Bytes;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// What a job carries.
pub(crate) enum Payload {
    /// A value built by the handler (a generic job's `payload`).
    Tree(Value),
    /// JSON text already checked to parse, stored as it reads.
    Raw(Bytes),
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Tree(value) => value.serialize(serializer),
            Payload::Raw(bytes) => {
                let mut json = serde_json::Deserializer::from_slice(bytes);
                serde_transcode::transcode(&mut json, serializer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_encodes_as_its_tree_does() {
        let text = r#"{"severity":"high","n":[1,2.5,-3,null,true],"nested":{"s":"é"}}"#;
        let raw =
            rmp_serde::to_vec(&Payload::Raw(Bytes::from_static(text.as_bytes()))).expect("encodes");
        let back: Value = rmp_serde::from_slice(&raw).expect("decodes");
        let tree: Value = serde_json::from_str(text).expect("parses");
        assert_eq!(back, tree);
    }
}

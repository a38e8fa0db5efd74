//! Serde for the `HeaderValue`s of a [`super::CachedObject`]: stored as their bytes (the disk
//! tier), checked again when read back; a value that no longer parses is dropped, not trusted.

use bytes::Bytes;
use http::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A header value as serde bytes (as `Bytes` deserializes them), not a sequence of numbers.
struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

pub(super) fn serialize<S: Serializer>(
    value: &Option<HeaderValue>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_some(&AsBytes(value.as_bytes())),
        None => serializer.serialize_none(),
    }
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HeaderValue>, D::Error> {
    let bytes = Option::<Bytes>::deserialize(deserializer)?;
    Ok(bytes.and_then(|b| HeaderValue::from_maybe_shared(b).ok()))
}

#[cfg(test)]
mod tests {
    use crate::cache::CachedObject;

    #[test]
    fn header_values_survive_a_round_trip() {
        let mut object = CachedObject::not_found();
        object.etag = Some(http::HeaderValue::from_static("\"abc\""));
        let json = serde_json::to_vec(&object).expect("serialize");
        let back: CachedObject = serde_json::from_slice(&json).expect("deserialize");
        assert_eq!(back, object);
    }
}

//! AMF0, the serialization of RTMP commands and data messages.
//!
//! Decoded: Number, Boolean, String, Object, Null, Undefined, ECMA Array, Strict Array, Date and
//! Long String (the object end marker only inside objects and ECMA arrays). Reference, typed
//! object, XML and AVM+ values are not used by publishers and are errors. Decoding never panics:
//! nesting depth and the total number of values are limited, counts from the input are never
//! used to preallocate, and strings that are not UTF-8 are decoded lossily.

use std::fmt;

/// Nesting depth at which decoding gives up.
pub const MAX_DEPTH: usize = 32;
/// Values (including nested ones) one [`decode_all`] call may produce.
pub const MAX_VALUES: usize = 65_536;

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
}

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An IEEE 754 double.
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// A string (String or Long String on the wire, chosen by length when encoding).
    String(String),
    /// An anonymous object: properties in wire order.
    Object(Vec<(String, Value)>),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// An associative ("ECMA") array: properties in wire order.
    EcmaArray(Vec<(String, Value)>),
    /// A dense ("strict") array.
    StrictArray(Vec<Value>),
    /// A date: milliseconds since the Unix epoch, and a time zone (reserved, should be 0).
    Date {
        /// Milliseconds since 1970-01-01 UTC.
        millis: f64,
        /// Time zone offset in minutes (unused by Flash; kept for round trips).
        timezone: i16,
    },
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array (first match).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(properties) | Value::EcmaArray(properties) => properties
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// An object from `(key, value)` pairs.
    pub fn object<'a>(properties: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Object(
            properties
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    }

    /// A string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }
}

/// Why AMF0 bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    /// The input ended inside a value.
    #[error("AMF0 input ends inside a value")]
    Truncated,
    /// A type marker we do not decode (or an object end outside an object).
    #[error("unsupported AMF0 type marker {0:#04x}")]
    UnsupportedMarker(u8),
    /// Values nested deeper than [`MAX_DEPTH`].
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_VALUES`] values.
    #[error("more than {MAX_VALUES} AMF0 values")]
    TooManyValues,
}

/// Decodes values until the input is exhausted (a command or data message body).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, Amf0Error> {
    let mut decoder = Decoder {
        bytes,
        pos: 0,
        values: 0,
    };
    let mut values = Vec::new();
    while decoder.pos < bytes.len() {
        values.push(decoder.value(0)?);
    }
    Ok(values)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    values: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(Amf0Error::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Amf0Error> {
        self.take(N)?.try_into().map_err(|_| Amf0Error::Truncated)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        let [byte] = self.array()?;
        Ok(byte)
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn string_of(&mut self, len: usize) -> Result<String, Amf0Error> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = usize::from(self.u16()?);
        self.string_of(len)
    }

    fn value(&mut self, depth: usize) -> Result<Value, Amf0Error> {
        if depth >= MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        self.values = self.values.saturating_add(1);
        if self.values > MAX_VALUES {
            return Err(Amf0Error::TooManyValues);
        }
        Ok(match self.u8()? {
            marker::NUMBER => Value::Number(self.f64()?),
            marker::BOOLEAN => Value::Boolean(self.u8()? != 0),
            marker::STRING => Value::String(self.short_string()?),
            marker::LONG_STRING => {
                let len = usize::try_from(self.u32()?).map_err(|_| Amf0Error::Truncated)?;
                Value::String(self.string_of(len)?)
            }
            marker::OBJECT => Value::Object(self.properties(depth)?),
            marker::NULL => Value::Null,
            marker::UNDEFINED => Value::Undefined,
            marker::ECMA_ARRAY => {
                // The count is a hint that encoders get wrong; the end marker is what counts.
                let _count = self.u32()?;
                Value::EcmaArray(self.properties(depth)?)
            }
            marker::STRICT_ARRAY => {
                let count = self.u32()?;
                let mut items = Vec::new();
                for _ in 0..count {
                    // Each item is at least one byte: a short input ends the loop with an error
                    // long before a large count matters.
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            marker::DATE => {
                let millis = self.f64()?;
                let timezone = i16::from_be_bytes(self.array()?);
                Value::Date { millis, timezone }
            }
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    /// Key/value pairs up to the empty key + object end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, Amf0Error> {
        let mut properties = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() && self.bytes.get(self.pos) == Some(&marker::OBJECT_END) {
                self.pos += 1;
                return Ok(properties);
            }
            let value = self.value(depth + 1)?;
            properties.push((key, value));
        }
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
        Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.push(marker::STRING);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Err(_) => {
                out.push(marker::LONG_STRING);
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes().get(..len as usize).unwrap_or_default());
            }
        },
        Value::Object(properties) => {
            out.push(marker::OBJECT);
            encode_properties(properties, out);
        }
        Value::Null => out.push(marker::NULL),
        Value::Undefined => out.push(marker::UNDEFINED),
        Value::EcmaArray(properties) => {
            out.push(marker::ECMA_ARRAY);
            let count = u32::try_from(properties.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            encode_properties(properties, out);
        }
        Value::StrictArray(items) => {
            out.push(marker::STRICT_ARRAY);
            let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for item in items.iter().take(count as usize) {
                encode(item, out);
            }
        }
        Value::Date { millis, timezone } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&timezone.to_be_bytes());
        }
    }
}

/// Encodes several values back to back (a command or data message body).
pub fn encode_all<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode(value, &mut out);
    }
    out
}

fn encode_properties(properties: &[(String, Value)], out: &mut Vec<u8>) {
    for (key, value) in properties {
        // Keys are short strings; a longer key cannot be encoded, so it is truncated at a
        // character boundary (never produced by us).
        let mut end = key.len().min(usize::from(u16::MAX));
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        let key = key.get(..end).unwrap_or_default();
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

impl fmt::Display for Value {
    /// A compact JSON-like rendering for debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn pairs(f: &mut fmt::Formatter<'_>, properties: &[(String, Value)]) -> fmt::Result {
            f.write_str("{")?;
            for (i, (key, value)) in properties.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{key:?}: {value}")?;
            }
            f.write_str("}")
        }
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Object(properties) | Value::EcmaArray(properties) => pairs(f, properties),
            Value::Null => f.write_str("null"),
            Value::Undefined => f.write_str("undefined"),
            Value::StrictArray(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Date { millis, .. } => write!(f, "Date({millis})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The body of the `connect` command ffmpeg 5.1 sent for `rtmp://127.0.0.1:19351/live/demo`
    /// (captured from the wire; the chunk layer's 128-byte split removed).
    fn ffmpeg_connect_body() -> Vec<u8> {
        let wire = include_bytes!("testdata/ffmpeg_connect.bin");
        let mut body = wire[12..12 + 128].to_vec();
        assert_eq!(wire[12 + 128], 0xC3);
        body.extend_from_slice(&wire[12 + 128 + 1..]);
        body
    }

    #[test]
    fn decodes_the_ffmpeg_connect_command() {
        let body = ffmpeg_connect_body();
        let values = decode_all(&body).expect("decode");
        let expected = vec![
            Value::string("connect"),
            Value::Number(1.0),
            Value::object([
                ("app", Value::string("live")),
                ("type", Value::string("nonprivate")),
                (
                    "flashVer",
                    Value::string("FMLE/3.0 (compatible; Lavf59.27.100)"),
                ),
                ("tcUrl", Value::string("rtmp://127.0.0.1:19351/live")),
            ]),
        ];
        assert_eq!(values, expected);
        // And encoding gives the same bytes back.
        assert_eq!(encode_all(&expected), body);
    }

    #[test]
    fn golden_bytes_of_each_type() {
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::Number(1.5), vec![0, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0]),
            (Value::Boolean(true), vec![1, 1]),
            (Value::string("ab"), vec![2, 0, 2, b'a', b'b']),
            (Value::Null, vec![5]),
            (Value::Undefined, vec![6]),
            (
                Value::object([("a", Value::Null)]),
                vec![3, 0, 1, b'a', 5, 0, 0, 9],
            ),
            (
                Value::EcmaArray(vec![("k".into(), Value::Boolean(false))]),
                vec![8, 0, 0, 0, 1, 0, 1, b'k', 1, 0, 0, 0, 9],
            ),
            (
                Value::StrictArray(vec![Value::Null, Value::Undefined]),
                vec![0x0A, 0, 0, 0, 2, 5, 6],
            ),
            (
                Value::Date {
                    millis: 0.0,
                    timezone: 0,
                },
                vec![0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            encode(&value, &mut out);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(decode_all(&bytes), Ok(vec![value]));
        }
    }

    #[test]
    fn long_strings() {
        let long = "x".repeat(70_000);
        let mut out = Vec::new();
        encode(&Value::string(long.clone()), &mut out);
        assert_eq!(&out[..5], &[0x0C, 0, 1, 0x11, 0x70]);
        assert_eq!(decode_all(&out), Ok(vec![Value::String(long)]));
        assert_eq!(
            decode_all(&[0x0C, 0, 0, 0, 1, b'z']),
            Ok(vec![Value::string("z")])
        );
    }

    #[test]
    fn ecma_array_count_is_only_a_hint() {
        // Says 1000 entries, has one: fine (encoders get the count wrong).
        let bytes = [8, 0, 0, 3, 0xE8, 0, 1, b'k', 5, 0, 0, 9];
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![Value::EcmaArray(vec![("k".into(), Value::Null)])])
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(decode_all(&[0]), Err(Amf0Error::Truncated));
        assert_eq!(decode_all(&[2, 0, 5, b'a']), Err(Amf0Error::Truncated));
        assert_eq!(decode_all(&[9]), Err(Amf0Error::UnsupportedMarker(9)));
        assert_eq!(decode_all(&[0x11]), Err(Amf0Error::UnsupportedMarker(0x11)));
        assert_eq!(decode_all(&[3, 0, 1, b'a']), Err(Amf0Error::Truncated));
        // A strict array claiming 4 billion items with no items ends quickly.
        assert_eq!(
            decode_all(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            decode_all(&[0x0C, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
    }

    #[test]
    fn depth_and_value_count_are_limited() {
        let deep: Vec<u8> = std::iter::repeat_n([0x0A, 0, 0, 0, 1], 40)
            .flatten()
            .collect();
        assert_eq!(decode_all(&deep), Err(Amf0Error::TooDeep));
        let many = vec![5u8; MAX_VALUES + 1];
        assert_eq!(decode_all(&many), Err(Amf0Error::TooManyValues));
        assert_eq!(
            decode_all(&many[..MAX_VALUES]).map(|v| v.len()),
            Ok(MAX_VALUES)
        );
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        assert_eq!(
            decode_all(&[2, 0, 2, 0xFF, b'a']),
            Ok(vec![Value::string("\u{FFFD}a")])
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("NaN != NaN", |n| !n.is_nan())
                .prop_map(Value::Number),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,20}".prop_map(Value::String),
            Just(Value::Null),
            Just(Value::Undefined),
            (-1e15f64..1e15, any::<i16>())
                .prop_map(|(millis, timezone)| Value::Date { millis, timezone }),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6).prop_map(Value::Object),
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6)
                    .prop_map(Value::EcmaArray),
                prop::collection::vec(inner, 0..6).prop_map(Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(values in prop::collection::vec(arb_value(), 0..6)) {
            let bytes = encode_all(&values);
            prop_assert_eq!(decode_all(&bytes), Ok(values));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes);
        }
    }
}

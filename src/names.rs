//! Validated public names: [`StreamName`] and [`RenditionName`]. A leaf module: everyone may use it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {value:?} must be 1-64 characters of a-z, A-Z, 0-9, '-' or '_'")]
pub struct NameError {
    kind: &'static str,
    value: String,
}

fn check(kind: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            value: value.chars().take(80).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn parse(value: &str) -> Result<Self, NameError> {
                check($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            /// The name as text (safe in URLs, logs and metric labels).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                check($kind, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_type!(
    /// The public name of a stream, as in `/live/<stream>/index.m3u8`.
    StreamName,
    "stream"
);
name_type!(
    /// The name of one rendition of a stream, as in `/live/<stream>/<rendition>/index.m3u8`.
    RenditionName,
    "rendition"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_url_safe_names_only() {
        assert!(StreamName::parse("demo_1-a").is_ok());
        for bad in ["", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(StreamName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            RenditionName::parse("a.b").unwrap_err().to_string(),
            "rendition name \"a.b\" must be 1-64 characters of a-z, A-Z, 0-9, '-' or '_'"
        );
    }
}

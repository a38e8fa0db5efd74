//! [`ObjectKey`]: the one cache key of an object a CDN can request.
//!
//! The path plus only the query parameters that select different content (`_HLS_msn`,
//! `_HLS_part`, `_HLS_skip`, in that order). CMCD, tokens and every other per-viewer parameter
//! are dropped, so a thousand viewers share one entry (HLS rules 23, 24).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Query parameters that change the response (LL-HLS delivery directives), in key order.
const KEPT_PARAMS: [&str; 3] = ["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// A normalized cache key: `/path` or `/path?_HLS_msn=..&_HLS_part=..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Builds the key of a request path and raw query string.
    pub fn new(path: &str, query: Option<&str>) -> Self {
        let mut kept: [Option<&str>; 3] = [None; 3];
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let Some(i) = KEPT_PARAMS.iter().position(|p| *p == name) {
                // The last occurrence wins, as in most query parsers.
                kept[i] = Some(value);
            }
        }
        let mut key = path.to_owned();
        let mut separator = '?';
        for (name, value) in KEPT_PARAMS.iter().zip(kept) {
            if let Some(value) = value {
                key.push(separator);
                key.push_str(name);
                key.push('=');
                key.push_str(value);
                separator = '&';
            }
        }
        Self(key)
    }

    /// The key as text: the path and the kept parameters, usable as an upstream request target.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path part of the key.
    pub fn path(&self) -> &str {
        self.0.split_once('?').map_or(&self.0, |(path, _)| path)
    }

    /// Length in bytes (for cache weighing).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty key (never built by [`ObjectKey::new`] from a request path).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_delivery_directives_in_a_fixed_order() {
        let key = ObjectKey::new(
            "/live/a/source/index.m3u8",
            Some("_HLS_part=2&CMCD=br%3D800&_HLS_msn=10&token=x"),
        );
        assert_eq!(
            key.as_str(),
            "/live/a/source/index.m3u8?_HLS_msn=10&_HLS_part=2"
        );
        assert_eq!(key.path(), "/live/a/source/index.m3u8");
        let skip = ObjectKey::new("/p.m3u8", Some("_HLS_skip=YES"));
        assert_eq!(skip.as_str(), "/p.m3u8?_HLS_skip=YES");
    }

    #[test]
    fn drops_everything_else() {
        let plain = ObjectKey::new("/live/a/source/seg-1.m4s", None);
        for query in [
            "CMCD=bl%3D21300%2Cbr%3D3200",
            "token=abc&expires=1",
            "",
            "&&=&",
        ] {
            assert_eq!(
                ObjectKey::new("/live/a/source/seg-1.m4s", Some(query)),
                plain,
                "{query}"
            );
        }
    }

    proptest! {
        #[test]
        fn cmcd_and_tokens_never_change_the_key(
            msn in proptest::option::of(0u64..1_000_000),
            junk in prop::collection::vec(("[a-zA-Z]{1,8}", "[a-zA-Z0-9%]{0,12}"), 0..6),
        ) {
            let mut base = Vec::new();
            if let Some(msn) = msn {
                base.push(format!("_HLS_msn={msn}"));
            }
            let mut noisy = base.clone();
            for (name, value) in &junk {
                if !name.starts_with("_HLS") {
                    noisy.insert(0, format!("{name}={value}"));
                }
            }
            noisy.push("CMCD=sid%3D%22x%22".into());
            let a = ObjectKey::new("/x.m3u8", Some(&base.join("&")));
            let b = ObjectKey::new("/x.m3u8", Some(&noisy.join("&")));
            prop_assert_eq!(a, b);
        }
    }
}

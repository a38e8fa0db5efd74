//! CMCD (CTA-5004) parsing: the `CMCD` query parameter and the `CMCD-Request`, `CMCD-Object`,
//! `CMCD-Status` and `CMCD-Session` headers that players such as hls.js send.
//!
//! Only the keys Headwater aggregates are kept; unknown keys and malformed pairs are skipped
//! (a player's typo must never fail a media request). Never panics on any input.

use percent_encoding::percent_decode_str;

/// The CMCD keys used for QoE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmcd {
    /// `sid`: session id, stable for one playback session.
    pub session: Option<String>,
    /// `br`: encoded bitrate of the requested object, kbps.
    pub bitrate_kbps: Option<u64>,
    /// `bl`: buffer length, ms.
    pub buffer_ms: Option<u64>,
    /// `bs`: the buffer starved since the previous request.
    pub starved: bool,
    /// `su`: the player is starting up (or seeking) and has not begun playing.
    pub startup: bool,
    /// `mtp`: measured throughput, kbps.
    pub throughput_kbps: Option<u64>,
    /// `d`: object duration, ms.
    pub duration_ms: Option<u64>,
    /// `ot`: object type token (`v`, `a`, `av`, `m` manifest, `i` init ...).
    pub object_type: Option<String>,
}

impl Cmcd {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        *self == Cmcd::default()
    }

    /// Merges one CMCD payload (`key=value,key,...`) into `self`.
    fn merge(&mut self, payload: &str) {
        for pair in split_pairs(payload) {
            let (key, value) = match pair.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (pair.trim(), None),
            };
            let number = || {
                value
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| v as u64)
            };
            let string = || {
                value
                    .map(unquote)
                    .filter(|s| !s.is_empty() && s.len() <= 128)
            };
            let boolean = || value.is_none_or(|v| v == "true" || v == "?1");
            match key {
                "sid" => self.session = string(),
                "br" => self.bitrate_kbps = number(),
                "bl" => self.buffer_ms = number(),
                "mtp" => self.throughput_kbps = number(),
                "d" => self.duration_ms = number(),
                "bs" => self.starved = boolean(),
                "su" => self.startup = boolean(),
                "ot" => self.object_type = value.map(str::to_owned).filter(|v| v.len() <= 8),
                _ => {}
            }
        }
    }
}

/// Splits on commas that are outside quoted strings.
fn split_pairs(payload: &str) -> Vec<&str> {
    let mut pairs = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in payload.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pairs.push(&payload[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pairs.push(&payload[start..]);
    pairs.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// Extracts CMCD from a request's query string and headers.
pub fn parse(query: Option<&str>, headers: &axum::http::HeaderMap) -> Cmcd {
    let mut cmcd = Cmcd::default();
    if let Some(query) = query {
        for param in query.split('&') {
            if let Some(value) = param.strip_prefix("CMCD=") {
                // Query strings encode spaces as '+' in forms; CMCD values never contain '+'.
                let decoded = percent_decode_str(value).decode_utf8_lossy();
                cmcd.merge(&decoded);
            }
        }
    }
    for name in ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            cmcd.merge(value);
        }
    }
    cmcd
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_query_form_hls_js_sends() {
        let query = "CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Cd%3D4004%2Cmtp%3D25400%2Cot%3Dv%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Csu";
        let cmcd = parse(Some(query), &axum::http::HeaderMap::new());
        assert_eq!(
            cmcd,
            Cmcd {
                session: Some("6e2fb550-c457-11e9-bb97-0800200c9a66".into()),
                bitrate_kbps: Some(3200),
                buffer_ms: Some(21300),
                starved: true,
                startup: true,
                throughput_kbps: Some(25400),
                duration_ms: Some(4004),
                object_type: Some("v".into()),
            }
        );
    }

    #[test]
    fn parses_headers_and_quoted_commas() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cmcd-request", "bl=500,mtp=800".parse().expect("header"));
        headers.insert(
            "cmcd-session",
            r#"sid="a,b\"c",cid="x""#.parse().expect("header"),
        );
        headers.insert("cmcd-object", "br=1400,ot=av".parse().expect("header"));
        let cmcd = parse(None, &headers);
        assert_eq!(cmcd.session.as_deref(), Some("a,b\"c"));
        assert_eq!(
            (cmcd.buffer_ms, cmcd.throughput_kbps, cmcd.bitrate_kbps),
            (Some(500), Some(800), Some(1400))
        );
        assert!(!cmcd.starved && !cmcd.startup);
    }

    #[test]
    fn malformed_values_are_skipped() {
        let cmcd = parse(
            Some("CMCD=br%3D-5%2Cbl%3Dabc%2Cmtp%3D1e400%2Csu%3Dfalse%2Csid%3D"),
            &axum::http::HeaderMap::new(),
        );
        assert!(cmcd.is_empty(), "{cmcd:?}");
    }

    proptest! {
        #[test]
        fn never_panics(query in ".{0,200}", header in "[ -~]{0,200}") {
            let mut headers = axum::http::HeaderMap::new();
            if let Ok(value) = header.parse() {
                headers.insert("cmcd-request", value);
            }
            let _ = parse(Some(&format!("CMCD={query}")), &headers);
        }
    }
}

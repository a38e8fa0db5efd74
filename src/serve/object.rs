//! Header policy: turns a [`CachedObject`] into a response (content type, cache lifetime,
//! ETag and conditional requests, single byte ranges, `Age`, `X-Cache`), and decides the
//! headers an Origin gives its own store objects ([`represent`]).

use crate::cache::{CacheStatus, CachedObject};
use crate::store::{Object, ObjectKind};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::LazyLock;
use std::time::Duration;

/// Segments and init sections never change under their URI.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// `X-Cache: HIT|MISS|COALESCED|STALE`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn content_type(kind: ObjectKind) -> HeaderValue {
    match kind {
        ObjectKind::MultivariantPlaylist | ObjectKind::MediaPlaylist => {
            HeaderValue::from_static("application/vnd.apple.mpegurl")
        }
        ObjectKind::Init => HeaderValue::from_static("video/mp4"),
        ObjectKind::Segment => HeaderValue::from_static("video/iso.segment"),
        ObjectKind::Thumbnail => HeaderValue::from_static("image/jpeg"),
    }
}

/// `public, max-age=N`. Playlists are represented on every request, so the lifetimes of
/// target durations up to two minutes are built once.
fn max_age(secs: u64) -> Option<HeaderValue> {
    static COMMON: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
        (0..=60)
            .filter_map(|secs| HeaderValue::try_from(format!("public, max-age={secs}")).ok())
            .collect()
    });
    usize::try_from(secs)
        .ok()
        .and_then(|i| COMMON.get(i))
        .cloned()
        .or_else(|| HeaderValue::try_from(format!("public, max-age={secs}")).ok())
}

/// Playlists (and thumbnails) live for half a target duration (at least 1 s); ended ones could
/// live longer, but a restarted stream reuses the URL, so they do not.
fn cache_control(object: &Object) -> Option<HeaderValue> {
    match object.kind {
        ObjectKind::Init | ObjectKind::Segment => Some(IMMUTABLE),
        ObjectKind::MultivariantPlaylist | ObjectKind::MediaPlaylist | ObjectKind::Thumbnail => {
            max_age(
                (object.target_duration / 2)
                    .max(Duration::from_secs(1))
                    .as_secs(),
            )
        }
    }
}

/// The response an Origin gives for one of its store objects. Allocates nothing for lifetimes
/// up to 60 s: the ETag and Last-Modified text were made when the object was created (here
/// they are checked, not copied), the rest are constants.
pub fn represent(object: &Object) -> CachedObject {
    CachedObject {
        status: 200,
        body: object.data.clone(),
        content_type: Some(content_type(object.kind)),
        etag: HeaderValue::from_maybe_shared(object.etag.clone()).ok(),
        cache_control: cache_control(object),
        last_modified: HeaderValue::from_maybe_shared(object.created_http_date.clone()).ok(),
        fetched_at_ms: 0,
        source_age: 0,
    }
}

/// Whether `Accept-Encoding` accepts gzip (`gzip`, `x-gzip` or `*`, with a non-zero q).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let q = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(Some(1.0), |q| q.parse::<f32>().ok());
            ["gzip", "x-gzip", "*"]
                .iter()
                .any(|c| coding.eq_ignore_ascii_case(c))
                && q.is_some_and(|q| q > 0.0)
        })
}

/// Serves a store object: its gzip copy when it has one, the client accepts gzip and asks for
/// no range (rule 8); `Vary: Accept-Encoding` on every response of an object that has one, so
/// shared caches keep the two apart.
pub fn respond_stored(headers: &HeaderMap, object: &Object) -> Response {
    let mut represented = represent(object);
    let Some(gzip) = &object.gzip else {
        return respond(headers, &represented, None);
    };
    let compressed = accepts_gzip(headers) && !headers.contains_key(header::RANGE);
    if compressed {
        represented.body = gzip.data.clone();
        represented.etag = HeaderValue::from_maybe_shared(gzip.etag.clone()).ok();
    }
    let mut response = respond(headers, &represented, None);
    let full = response.status() == StatusCode::OK;
    let out = response.headers_mut();
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if compressed && full {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Strong comparison of `If-None-Match` against the object's ETag (RFC 9110 13.1.2).
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',').map(str::trim).any(|tag| {
                tag == "*"
                    || tag.as_bytes() == etag
                    || tag.strip_prefix("W/").map(str::as_bytes) == Some(etag)
            })
        })
    })
}

/// `If-Modified-Since`, consulted only without `If-None-Match` (RFC 9110 13.1.3).
fn not_modified_since(headers: &HeaderMap, object: &CachedObject) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return false;
    }
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    object
        .last_modified
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|modified| modified <= since)
}

/// A parsed single byte range, inclusive.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable Range header: send everything.
    Full,
    /// Bytes `start..=end` of the body.
    Partial(u64, u64),
    /// Syntactically fine but outside the body.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n`. Multiple ranges and malformed values are ignored (a
/// server may always answer 200 with the whole body).
fn parse_range(value: Option<&HeaderValue>, len: u64) -> RangeRequest {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => {
            if start >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(start, end.min(len - 1))
            }
        }
        (Ok(start), Err(_)) if last.is_empty() => {
            if start >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(start, len - 1)
            }
        }
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(len.saturating_sub(suffix), len - 1)
            }
        }
        _ => RangeRequest::Full,
    }
}

/// `If-Range` allows the range only when it names the current ETag.
fn if_range_allows(headers: &HeaderMap, etag: Option<&HeaderValue>) -> bool {
    headers.get(header::IF_RANGE).is_none_or(|v| {
        v.to_str()
            .is_ok_and(|tag| Some(tag.trim().as_bytes()) == etag.map(HeaderValue::as_bytes))
    })
}

/// Adds a prebuilt header when the object has it (a reference-count clone, no parsing).
fn insert(headers: &mut HeaderMap, name: HeaderName, value: Option<&HeaderValue>) {
    if let Some(value) = value {
        headers.insert(name, value.clone());
    }
}

fn response(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Room for our headers plus what CORS and hyper add, so the map never grows.
const HEADER_CAPACITY: usize = 12;

/// Builds the response for `object` given the request headers. `cache` adds `X-Cache` and, for
/// objects held by this cache, `Age`.
pub fn respond(headers: &HeaderMap, object: &CachedObject, cache: Option<CacheStatus>) -> Response {
    let mut out = HeaderMap::with_capacity(HEADER_CAPACITY);
    insert(
        &mut out,
        header::CACHE_CONTROL,
        object.cache_control.as_ref(),
    );
    insert(&mut out, header::ETAG, object.etag.as_ref());
    insert(
        &mut out,
        header::LAST_MODIFIED,
        object.last_modified.as_ref(),
    );
    if let Some(status) = cache {
        out.insert(X_CACHE, HeaderValue::from_static(status.header()));
        if object.fetched_at_ms != 0 {
            out.insert(header::AGE, HeaderValue::from(object.age().as_secs()));
        }
    }
    if object.status != 200 {
        let status = StatusCode::from_u16(object.status).unwrap_or(StatusCode::BAD_GATEWAY);
        insert(&mut out, header::CONTENT_TYPE, object.content_type.as_ref());
        return response(status, out, Body::from(object.body.clone()));
    }
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if object
        .etag
        .as_ref()
        .is_some_and(|etag| none_match(headers, etag))
        || not_modified_since(headers, object)
    {
        return response(StatusCode::NOT_MODIFIED, out, Body::empty());
    }
    insert(&mut out, header::CONTENT_TYPE, object.content_type.as_ref());
    let len = object.body.len() as u64;
    let range = if if_range_allows(headers, object.etag.as_ref()) {
        parse_range(headers.get(header::RANGE), len)
    } else {
        RangeRequest::Full
    };
    match range {
        RangeRequest::Full => {
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            response(StatusCode::OK, out, Body::from(object.body.clone()))
        }
        RangeRequest::Partial(start, end) => {
            // Both bounds are below len, which came from a usize.
            let body = object.body.slice(start as usize..=end as usize);
            if let Ok(range) = HeaderValue::try_from(format!("bytes {start}-{end}/{len}")) {
                out.insert(header::CONTENT_RANGE, range);
            }
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            response(StatusCode::PARTIAL_CONTENT, out, Body::from(body))
        }
        RangeRequest::Unsatisfiable => {
            if let Ok(range) = HeaderValue::try_from(format!("bytes */{len}")) {
                out.insert(header::CONTENT_RANGE, range);
            }
            response(StatusCode::RANGE_NOT_SATISFIABLE, out, Body::empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).expect("valid header")
    }

    #[test]
    fn gzip_is_accepted_by_name_or_wildcard_unless_q_is_zero() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, h(value));
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("deflate, *"));
        assert!(accepts("x-gzip"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip; q=0.000"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range(Some(&h("bytes=0-9")), 100),
            RangeRequest::Partial(0, 9)
        );
        assert_eq!(
            parse_range(Some(&h("bytes=90-")), 100),
            RangeRequest::Partial(90, 99)
        );
        assert_eq!(
            parse_range(Some(&h("bytes=-10")), 100),
            RangeRequest::Partial(90, 99)
        );
        assert_eq!(
            parse_range(Some(&h("bytes=-1000")), 100),
            RangeRequest::Partial(0, 99)
        );
        assert_eq!(
            parse_range(Some(&h("bytes=50-1000")), 100),
            RangeRequest::Partial(50, 99)
        );
        assert_eq!(
            parse_range(Some(&h("bytes=100-")), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some(&h("bytes=-0")), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some(&h("bytes=5-2")), 100), RangeRequest::Full);
        assert_eq!(
            parse_range(Some(&h("bytes=0-1,5-6")), 100),
            RangeRequest::Full
        );
        assert_eq!(parse_range(Some(&h("items=0-1")), 100), RangeRequest::Full);
        assert_eq!(parse_range(None, 100), RangeRequest::Full);
    }

    #[test]
    fn if_modified_since_yields_to_if_none_match() {
        let object = CachedObject {
            status: 200,
            body: bytes::Bytes::from_static(b"x"),
            content_type: None,
            etag: Some(h("\"e\"")),
            cache_control: None,
            last_modified: Some(h("Thu, 26 Nov 2026 01:00:00 GMT")),
            fetched_at_ms: 0,
            source_age: 0,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_MODIFIED_SINCE,
            h("Thu, 26 Nov 2026 01:00:00 GMT"),
        );
        assert!(not_modified_since(&headers, &object));
        assert_eq!(
            respond(&headers, &object, None).status(),
            StatusCode::NOT_MODIFIED
        );
        headers.insert(
            header::IF_MODIFIED_SINCE,
            h("Thu, 26 Nov 2026 00:59:59 GMT"),
        );
        assert!(!not_modified_since(&headers, &object));
        headers.insert(
            header::IF_MODIFIED_SINCE,
            h("Fri, 27 Nov 2026 00:00:00 GMT"),
        );
        headers.insert(header::IF_NONE_MATCH, h("\"other\""));
        assert_eq!(
            respond(&headers, &object, None).status(),
            StatusCode::OK,
            "If-None-Match wins"
        );
        headers.insert(header::IF_MODIFIED_SINCE, h("garbage"));
        headers.remove(header::IF_NONE_MATCH);
        assert_eq!(respond(&headers, &object, None).status(), StatusCode::OK);
    }

    #[test]
    fn store_objects_are_represented_with_prebuilt_headers() {
        let playlist = Object::new(
            ObjectKind::MediaPlaylist,
            bytes::Bytes::from_static(b"#EXTM3U\n"),
            Duration::from_secs(6),
        );
        let represented = represent(&playlist);
        assert_eq!(
            represented.cache_control,
            Some(h("public, max-age=3")),
            "half the target duration"
        );
        assert_eq!(
            represented.etag.as_ref().map(HeaderValue::as_bytes),
            Some(&playlist.etag[..])
        );
        assert_eq!(
            represented.last_modified,
            Some(h(&httpdate::fmt_http_date(playlist.created)))
        );
        let long = Object::new(
            ObjectKind::MediaPlaylist,
            bytes::Bytes::new(),
            Duration::from_secs(400),
        );
        assert_eq!(
            represent(&long).cache_control,
            Some(h("public, max-age=200"))
        );
        let segment = Object::new(
            ObjectKind::Segment,
            bytes::Bytes::new(),
            Duration::from_secs(6),
        );
        let represented = represent(&segment);
        assert_eq!(represented.cache_control, Some(IMMUTABLE));
        assert_eq!(represented.content_type, Some(h("video/iso.segment")));
    }

    #[test]
    fn if_none_match_lists_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, h("\"a\", \"b\""));
        assert!(none_match(&headers, &h("\"b\"")));
        assert!(!none_match(&headers, &h("\"c\"")));
        headers.insert(header::IF_NONE_MATCH, h("*"));
        assert!(none_match(&headers, &h("\"c\"")));
    }
}

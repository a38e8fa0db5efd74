//! Header policy: turns a [`CachedObject`] into a response (content type, cache lifetime,
//! ETag and conditional requests, single byte ranges, `Age`, `X-Cache`), and decides the
//! headers an Origin gives its own store objects ([`represent`]).

use crate::cache::{CacheStatus, CachedObject};
use crate::store::{Object, ObjectKind};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use std::time::Duration;

/// Segments and init sections never change under their URI.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `X-Cache: HIT|MISS|COALESCED|STALE`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn content_type(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::MultivariantPlaylist | ObjectKind::MediaPlaylist => {
            "application/vnd.apple.mpegurl"
        }
        ObjectKind::Init => "video/mp4",
        ObjectKind::Segment => "video/iso.segment",
        ObjectKind::Thumbnail => "image/jpeg",
    }
}

/// Playlists (and thumbnails) live for half a target duration (at least 1 s); ended ones could
/// live longer, but a restarted stream reuses the URL, so they do not.
fn cache_control(object: &Object) -> String {
    match object.kind {
        ObjectKind::Init | ObjectKind::Segment => IMMUTABLE.to_owned(),
        ObjectKind::MultivariantPlaylist | ObjectKind::MediaPlaylist | ObjectKind::Thumbnail => {
            let half = (object.target_duration / 2).max(Duration::from_secs(1));
            format!("public, max-age={}", half.as_secs())
        }
    }
}

/// The response an Origin gives for one of its store objects.
pub fn represent(object: &Object) -> CachedObject {
    CachedObject {
        status: 200,
        body: object.data.clone(),
        content_type: Some(content_type(object.kind).to_owned()),
        etag: Some(object.etag.to_string()),
        cache_control: Some(cache_control(object)),
        last_modified: Some(httpdate::fmt_http_date(object.created)),
        fetched_at_ms: 0,
        source_age: 0,
    }
}

/// Strong comparison of `If-None-Match` against the object's ETag (RFC 9110 13.1.2).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag))
        })
    })
}

/// `If-Modified-Since`, consulted only without `If-None-Match` (RFC 9110 13.1.3).
fn not_modified_since(headers: &HeaderMap, object: &CachedObject) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return false;
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = object
        .last_modified
        .as_deref()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
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
fn if_range_allows(headers: &HeaderMap, etag: Option<&str>) -> bool {
    headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|tag| Some(tag.trim()) == etag))
}

fn insert(
    builder: axum::http::response::Builder,
    name: HeaderName,
    value: Option<&str>,
) -> axum::http::response::Builder {
    match value.and_then(|v| HeaderValue::from_str(v).ok()) {
        Some(value) => builder.header(name, value),
        None => builder,
    }
}

/// Builds the response for `object` given the request headers. `cache` adds `X-Cache` and, for
/// objects held by this cache, `Age`.
pub fn respond(headers: &HeaderMap, object: &CachedObject, cache: Option<CacheStatus>) -> Response {
    let mut builder = Response::builder();
    builder = insert(
        builder,
        header::CACHE_CONTROL,
        object.cache_control.as_deref(),
    );
    builder = insert(builder, header::ETAG, object.etag.as_deref());
    builder = insert(
        builder,
        header::LAST_MODIFIED,
        object.last_modified.as_deref(),
    );
    if let Some(status) = cache {
        builder = builder.header(X_CACHE, status.header());
        if object.fetched_at_ms != 0 {
            builder = builder.header(header::AGE, object.age().as_secs());
        }
    }
    if object.status != 200 {
        let status = StatusCode::from_u16(object.status).unwrap_or(StatusCode::BAD_GATEWAY);
        builder = insert(
            builder,
            header::CONTENT_TYPE,
            object.content_type.as_deref(),
        );
        return builder
            .status(status)
            .body(Body::from(object.body.clone()))
            .unwrap_or_default();
    }
    builder = builder.header(header::ACCEPT_RANGES, "bytes");
    if object
        .etag
        .as_deref()
        .is_some_and(|etag| none_match(headers, etag))
        || not_modified_since(headers, object)
    {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    builder = insert(
        builder,
        header::CONTENT_TYPE,
        object.content_type.as_deref(),
    );
    let len = object.body.len() as u64;
    let range = if if_range_allows(headers, object.etag.as_deref()) {
        parse_range(headers.get(header::RANGE), len)
    } else {
        RangeRequest::Full
    };
    let response = match range {
        RangeRequest::Full => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from(object.body.clone())),
        RangeRequest::Partial(start, end) => {
            // Both bounds are below len, which came from a usize.
            let body = object.body.slice(start as usize..=end as usize);
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
                .header(header::CONTENT_LENGTH, end - start + 1)
                .body(Body::from(body))
        }
        RangeRequest::Unsatisfiable => builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty()),
    };
    response.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).expect("valid header")
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
            etag: Some("\"e\"".into()),
            cache_control: None,
            last_modified: Some("Thu, 26 Nov 2026 01:00:00 GMT".into()),
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
    fn if_none_match_lists_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, h("\"a\", \"b\""));
        assert!(none_match(&headers, "\"b\""));
        assert!(!none_match(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, h("*"));
        assert!(none_match(&headers, "\"c\""));
    }
}

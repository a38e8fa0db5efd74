//! Concurrent viewers per stream, in a sliding window (`api.viewer_window`).
//!
//! Two sources, reported apart and together ([`ViewerCounts`]):
//! - `http`: player sessions seen in playlist/segment requests to this server. A session is the
//!   CMCD `sid` when the player sends one, else a hash of client address + User-Agent. Behind a
//!   CDN this counts what the CDN forwards (its edges, mostly), not the audience.
//! - `beacon`: sessions that sent `POST /api/v1/streams/{name}/beacon` (the web player, every
//!   ~10 s). Counts viewers wherever they are, if their player sends beacons.
//! - `current`: distinct sessions in either (a player sending CMCD `sid` and beacons with the
//!   same id counts once): the number to show.

use super::error::{ApiError, ErrorBody};
use super::{client_ip, parse_stream, Api, ApiJson};
use crate::names::StreamName;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// Sessions tracked per stream at most; beyond it new sessions are not counted.
const MAX_SESSIONS: usize = 200_000;

/// Viewer counts of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ViewerCounts {
    /// Distinct sessions seen by either source within the window: the number to show.
    pub current: u64,
    /// Sessions seen in playlist/segment requests to this server (CMCD `sid`, else client
    /// address + User-Agent). Behind a CDN: what the CDN forwards.
    pub http: u64,
    /// Sessions that sent a player beacon.
    pub beacon: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    http: Option<Instant>,
    beacon: Option<Instant>,
}

/// Sliding-window session sets per stream.
#[derive(Debug)]
pub struct Viewers {
    window: Duration,
    streams: Mutex<HashMap<StreamName, HashMap<[u8; 16], Seen>>>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Http,
    Beacon,
}

fn session_key(kind: &str, parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    for part in parts {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

impl Viewers {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window,
            streams: Mutex::default(),
        }
    }

    fn record(&self, stream: &StreamName, session: [u8; 16], source: Source) {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        // Look up before `entry`, which would clone the name on every request.
        if !streams.contains_key(stream) {
            streams.insert(stream.clone(), HashMap::new());
        }
        let Some(sessions) = streams.get_mut(stream) else {
            return;
        };
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&session) {
            let window = self.window;
            sessions.retain(|_, seen| {
                Self::active(seen, now, window).0 || Self::active(seen, now, window).1
            });
            if sessions.len() >= MAX_SESSIONS {
                return;
            }
        }
        let seen = sessions.entry(session).or_default();
        match source {
            Source::Http => seen.http = Some(now),
            Source::Beacon => seen.beacon = Some(now),
        }
    }

    fn active(seen: &Seen, now: Instant, window: Duration) -> (bool, bool) {
        let within = |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) <= window);
        (within(seen.http), within(seen.beacon))
    }

    /// Current counts for a stream.
    pub fn counts(&self, stream: &StreamName) -> ViewerCounts {
        let now = Instant::now();
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let mut counts = ViewerCounts::default();
        for seen in streams.get(stream).into_iter().flat_map(HashMap::values) {
            let (http, beacon) = Self::active(seen, now, self.window);
            counts.http += u64::from(http);
            counts.beacon += u64::from(beacon);
            counts.current += u64::from(http || beacon);
        }
        counts
    }

    /// Drops expired sessions and updates `headwater_viewers{stream, source}`.
    pub(super) fn refresh_gauges(&self) {
        let now = Instant::now();
        let window = self.window;
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.retain(|stream, sessions| {
            sessions.retain(|_, seen| {
                let (http, beacon) = Self::active(seen, now, window);
                http || beacon
            });
            let (mut http, mut beacon) = (0u64, 0u64);
            for seen in sessions.values() {
                let active = Self::active(seen, now, window);
                http += u64::from(active.0);
                beacon += u64::from(active.1);
            }
            let name = stream.to_string();
            metrics::gauge!("headwater_viewers", "stream" => name.clone(), "source" => "current")
                .set(sessions.len() as f64);
            metrics::gauge!("headwater_viewers", "stream" => name.clone(), "source" => "http")
                .set(http as f64);
            metrics::gauge!("headwater_viewers", "stream" => name, "source" => "beacon")
                .set(beacon as f64);
            // Keep a stream with no viewers one more round so its gauges read 0.
            !sessions.is_empty()
        });
    }
}

/// The stream a media path belongs to (`/live/<stream>/...`).
fn stream_of(path: &str) -> Option<StreamName> {
    let name = path.strip_prefix("/live/")?.split('/').next()?;
    StreamName::parse(name).ok()
}

fn http_session(request: &Request) -> [u8; 16] {
    let cmcd = crate::observe::cmcd::parse(request.uri().query(), request.headers());
    match cmcd.session {
        Some(sid) => session_key("sid", &[sid.as_bytes()]),
        None => {
            // The address as 16 bytes (IPv4 mapped), hashed without formatting it.
            let ip = match client_ip(request.extensions()) {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            let agent = request
                .headers()
                .get(header::USER_AGENT)
                .map_or(&[][..], HeaderValue::as_bytes);
            session_key("addr", &[&ip, agent])
        }
    }
}

/// Middleware on the media routes: a successful playlist or segment response counts its
/// session as watching the stream.
pub async fn track(State(api): State<Api>, request: Request, next: Next) -> Response {
    let counted = stream_of(request.uri().path()).map(|stream| (stream, http_session(&request)));
    let response = next.run(request).await;
    if let Some((stream, session)) = counted {
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            api.inner.viewers.record(&stream, session, Source::Http);
        }
    }
    response
}

/// `POST /streams/{name}/beacon` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    /// The player session id (1-128 characters); the CMCD `sid` if the player sends one.
    pub session: String,
    /// Optional CMCD payload (`br=3200,bl=21300,...`), added to the stream's QoE.
    pub cmcd: Option<String>,
}

/// A player reports that it is watching (send every ~10 s).
#[utoipa::path(post, path = "/api/v1/streams/{name}/beacon", tag = "viewers",
    params(("name" = String, Path, description = "Stream name")),
    request_body = Beacon,
    responses((status = 204, description = "Counted"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn beacon(
    State(api): State<Api>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Beacon>,
) -> Result<StatusCode, ApiError> {
    let name = parse_stream(&name)?;
    if body.session.is_empty() || body.session.chars().count() > 128 {
        return Err(ApiError::BadRequest(
            "session: must be 1-128 characters".into(),
        ));
    }
    if body.cmcd.as_ref().is_some_and(|c| c.len() > 1024) {
        return Err(ApiError::BadRequest(
            "cmcd: must be at most 1024 characters".into(),
        ));
    }
    // Only running streams: a made-up name must not create state.
    if api.inner.registry.snapshot(&name).is_none() {
        return Err(ApiError::NotFound(format!("stream {name} is not live")));
    }
    let session = body.session.trim_matches('"');
    api.inner.viewers.record(
        &name,
        session_key("sid", &[session.as_bytes()]),
        Source::Beacon,
    );
    if let Some(cmcd) = body
        .cmcd
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        let mut headers = HeaderMap::new();
        headers.insert("cmcd-request", cmcd);
        let mut parsed = crate::observe::cmcd::parse(None, &headers);
        parsed.session.get_or_insert_with(|| session.to_owned());
        api.inner.qoe.record(name.as_str(), &parsed);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_counts_once_across_sources_and_leaves_after_the_window() {
        let viewers = Viewers::new(Duration::from_millis(50));
        let stream = StreamName::parse("s").expect("name");
        let sid = session_key("sid", &[b"abc"]);
        viewers.record(&stream, sid, Source::Http);
        viewers.record(&stream, sid, Source::Beacon);
        viewers.record(
            &stream,
            session_key("addr", &[b"1.2.3.4", b"ua"]),
            Source::Http,
        );
        viewers.record(&stream, session_key("sid", &[b"other"]), Source::Beacon);
        assert_eq!(
            viewers.counts(&stream),
            ViewerCounts {
                current: 3,
                http: 2,
                beacon: 2
            }
        );
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(viewers.counts(&stream), ViewerCounts::default());
        viewers.refresh_gauges();
        assert!(viewers.streams.lock().expect("lock").is_empty());
    }
}

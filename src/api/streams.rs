//! Streams: `GET /streams` (cursor pages, filters), `GET /streams/{name}`, `PATCH
//! /streams/{name}`.
//!
//! A response joins recorded metadata (SQLite, cached in memory: [`MetaCache`]) with live state
//! read from memory on every request: the registry's snapshot (status, started_at, ingest
//! rates), the renditions of the stream's multivariant playlist in the live store (parsed once
//! per playlist version) and the viewer counts. So polling players cost no SQLite query, and
//! live numbers are never stale.

use super::error::{ApiError, ErrorBody};
use super::store::{After, RecordedStatus, SessionRecord, StreamPatch, StreamQuery, StreamRecord};
use super::{json, json_body, millis, parse_stream, viewers::ViewerCounts, Admin, Api, ApiJson};
use crate::names::StreamName;
use crate::stream::{PublisherState, StreamSnapshot};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Rows per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 50;
/// Largest `limit`.
const MAX_LIMIT: u32 = 200;
/// Past instances shown in a stream's detail.
const HISTORY: u32 = 10;
/// Cached metadata lives at most this long (a safety net: changes invalidate it at once).
const CACHE_TTL: Duration = Duration::from_secs(60);
/// A serialized listing is reused this long: pollers of one query cost one serialization per
/// second. Live fields (viewers, ingest rates) are then up to this old; stream starts and ends
/// and metadata edits bump the generation in the key and show at once.
const LIST_BODY_TTL: Duration = Duration::from_secs(1);

/// RFC 3339 (UTC) text of Unix milliseconds.
pub(crate) fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A cached listing page: rows and where the next page starts.
type Page = Arc<(Vec<StreamRecord>, Option<After>)>;
/// A cached stream record with its recent instances (None: unknown stream).
type CachedRecord = Arc<Option<(StreamRecord, Vec<SessionRecord>)>>;
/// Renditions parsed from the multivariant playlist with that ETag.
type ParsedRenditions = (bytes::Bytes, Arc<Vec<Rendition>>);

/// Cached pages and records, keyed with a generation number that every change bumps: an
/// entry computed before a change is stored under the old generation and never read again.
pub struct MetaCache {
    generation: AtomicU64,
    pages: moka::future::Cache<String, Page>,
    /// Serialized listings by the same key as `pages` ([`LIST_BODY_TTL`]).
    bodies: moka::future::Cache<String, bytes::Bytes>,
    records: moka::future::Cache<(u64, StreamName), CachedRecord>,
    /// Renditions per stream, with the multivariant playlist ETag they were parsed from.
    renditions: Mutex<HashMap<StreamName, ParsedRenditions>>,
}

impl MetaCache {
    pub(super) fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            pages: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
            bodies: moka::future::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(LIST_BODY_TTL)
                .build(),
            records: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
            renditions: Mutex::default(),
        }
    }

    /// Metadata changed: later reads go to the store once.
    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Where a stream is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    /// Known (a key or metadata exists) but not published since.
    Offline,
    /// A publisher is sending.
    Live,
    /// The publisher left; a reconnect within the grace period continues the stream.
    Reconnecting,
    /// The stream ended.
    Ended,
}

/// One rendition of a live stream, as its multivariant playlist declares it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rendition {
    /// Rendition name (`source`, `720p`, ...).
    pub name: String,
    /// Width in pixels.
    pub width: Option<u64>,
    /// Height in pixels.
    pub height: Option<u64>,
    /// Declared peak bitrate (BANDWIDTH), bits per second.
    pub bandwidth_bps: u64,
    /// Measured average bitrate (AVERAGE-BANDWIDTH), bits per second.
    pub average_bandwidth_bps: Option<u64>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
    /// RFC 6381 codecs.
    pub codecs: Option<String>,
    /// Media playlist URL (relative to this server).
    pub playlist: String,
}

/// What the publisher sends, measured over the last 5 s.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ingest {
    /// Bits per second (audio + video).
    pub bitrate_bps: Option<u64>,
    /// Video frames per second.
    pub fps: Option<f64>,
}

/// Where players fetch the stream (relative to this server).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Playback {
    /// HLS multivariant playlist.
    pub hls: String,
}

/// A stream: recorded metadata and live state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stream {
    /// Public name.
    pub name: String,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Lifecycle status.
    pub status: StreamStatus,
    /// Start of the current (or last) instance, RFC 3339.
    pub started_at: Option<String>,
    /// End of the last instance, RFC 3339 (null while live).
    pub ended_at: Option<String>,
    /// JPEG of a recent keyframe, 320 pixels wide, renewed every 10 s of media (while the
    /// stream's instance is in the live store).
    pub thumbnail_url: Option<String>,
    /// Renditions while live (empty before the first segment and after the end).
    pub renditions: Vec<Rendition>,
    /// Ingest rates while live.
    pub ingest: Option<Ingest>,
    /// Current viewers (see `ViewerCounts` for which count is which).
    pub viewers: ViewerCounts,
    /// Playback URLs.
    pub playback: Playback,
}

/// One instance of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Instance id (in its segment URIs).
    pub instance: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339 (null while running).
    pub ended_at: Option<String>,
}

/// A stream with its recent history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamDetail {
    /// The stream.
    #[serde(flatten)]
    pub stream: Stream,
    /// The latest instances, newest first (at most 10).
    pub sessions: Vec<Session>,
}

/// A page of streams.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamList {
    /// Streams, most recently started first.
    pub streams: Vec<Stream>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /streams` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only streams with this recorded status: `offline`, `live` (includes reconnecting) or
    /// `ended`.
    pub status: Option<String>,
    /// Only streams with this tag.
    pub tag: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Streams per page, 1-200 (default 50).
    pub limit: Option<String>,
}

fn parse_status(value: &str) -> Result<RecordedStatus, ApiError> {
    match value {
        "offline" => Ok(RecordedStatus::Offline),
        "live" => Ok(RecordedStatus::Live),
        "ended" => Ok(RecordedStatus::Ended),
        other => Err(ApiError::BadRequest(format!(
            "status: {:?} is not one of offline, live, ended",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

fn encode_cursor(after: &After) -> String {
    hex::encode(format!("v1:{}:{}", after.sort_at, after.name))
}

fn decode_cursor(cursor: &str) -> Result<After, ApiError> {
    let bad = || ApiError::BadRequest("cursor: not a cursor this API issued".into());
    let text = hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let rest = text.strip_prefix("v1:").ok_or_else(bad)?;
    let (sort_at, name) = rest.split_once(':').ok_or_else(bad)?;
    let sort_at = sort_at.parse::<i64>().map_err(|_| bad())?;
    StreamName::parse(name).map_err(|_| bad())?;
    Ok(After {
        sort_at,
        name: name.to_owned(),
    })
}

/// Validates a tag: 1-32 of a-z 0-9 - _ (lowercase).
fn check_tag(field: &str, tag: &str) -> Result<(), ApiError> {
    let ok = !tag.is_empty()
        && tag.len() <= 32
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{field}: {:?} must be 1-32 characters of a-z, 0-9, '-' or '_'",
            tag.chars().take(40).collect::<String>()
        )))
    }
}

impl Api {
    fn renditions(&self, name: &StreamName, state: Option<PublisherState>) -> Vec<Rendition> {
        if state.is_none_or(|s| s == PublisherState::Ended) {
            return Vec::new();
        }
        let Some(playlist) = self.inner.media.stream(name).and_then(|e| e.multivariant()) else {
            return Vec::new();
        };
        let mut cached = self
            .inner
            .cache
            .renditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((etag, list)) = cached.get(name) {
            if *etag == playlist.etag {
                return list.as_ref().clone();
            }
        }
        let list: Vec<Rendition> = match m3u8_rs::parse_master_playlist_res(&playlist.data) {
            Ok(master) => master
                .variants
                .iter()
                .filter(|v| !v.is_i_frame)
                .map(|v| Rendition {
                    name: v.uri.split('/').next().unwrap_or_default().to_owned(),
                    width: v.resolution.map(|r| r.width),
                    height: v.resolution.map(|r| r.height),
                    bandwidth_bps: v.bandwidth,
                    average_bandwidth_bps: v.average_bandwidth,
                    frame_rate: v.frame_rate,
                    codecs: v.codecs.clone(),
                    playlist: format!("/live/{name}/{}", v.uri),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        cached.insert(
            name.clone(),
            (playlist.etag.clone(), Arc::new(list.clone())),
        );
        list
    }

    /// Joins a record (if any) with the live snapshot (if any).
    fn compose(
        &self,
        name: &StreamName,
        record: Option<&StreamRecord>,
        snapshot: Option<&StreamSnapshot>,
    ) -> Stream {
        let live_state = snapshot.map(|s| s.state);
        let status = match (live_state, record.map(|r| r.status)) {
            (Some(PublisherState::Live), _) => StreamStatus::Live,
            (Some(PublisherState::Reconnecting), _) => StreamStatus::Reconnecting,
            (Some(PublisherState::Ended), _) | (None, Some(RecordedStatus::Ended)) => {
                StreamStatus::Ended
            }
            (None, Some(RecordedStatus::Live)) => StreamStatus::Live,
            (None, Some(RecordedStatus::Offline) | None) => StreamStatus::Offline,
        };
        let started_at = snapshot
            .map(|s| millis(s.started_at))
            .or(record.and_then(|r| r.started_at));
        let ended_at = match status {
            StreamStatus::Ended => record.and_then(|r| r.ended_at),
            _ => None,
        };
        let ingest = snapshot
            .filter(|s| s.state == PublisherState::Live)
            .map(|s| Ingest {
                bitrate_bps: s.ingest_bitrate_bps,
                fps: s.ingest_fps,
            });
        Stream {
            name: name.to_string(),
            title: record.and_then(|r| r.title.clone()),
            description: record.and_then(|r| r.description.clone()),
            tags: record.map(|r| r.tags.clone()).unwrap_or_default(),
            status,
            started_at: started_at.map(rfc3339),
            ended_at: ended_at.map(rfc3339),
            thumbnail_url: self
                .inner
                .media
                .stream(name)
                .and_then(|entry| entry.thumbnail())
                .map(|_| format!("/live/{name}/{}", crate::cache::origin::THUMBNAIL_FILE)),
            renditions: self.renditions(name, live_state),
            ingest,
            viewers: self.inner.viewers.counts(name),
            playback: Playback {
                hls: format!("/live/{name}/index.m3u8"),
            },
        }
    }

    async fn record(&self, name: &StreamName) -> Result<CachedRecord, ApiError> {
        let key = (self.inner.cache.generation(), name.clone());
        let api = self.clone();
        let wanted = name.clone();
        self.inner
            .cache
            .records
            .try_get_with(key, async move {
                api.blocking(move |s| {
                    let Some(record) = s.stream(&wanted)? else {
                        return Ok(None);
                    };
                    let sessions = s.sessions(&wanted, HISTORY)?;
                    Ok(Some((record, sessions)))
                })
                .await
                .map(Arc::new)
            })
            .await
            .map_err(|e: Arc<super::store::StoreError>| {
                ApiError::Store(super::store::StoreError::Corrupt {
                    table: "streams",
                    message: e.to_string(),
                })
            })
    }
}

/// Lists streams, most recently started first.
#[utoipa::path(get, path = "/api/v1/streams", tag = "streams", params(ListParams),
    responses((status = 200, body = StreamList),
        (status = 400, body = ErrorBody, description = "Bad parameter or cursor"),
        (status = 429, body = ErrorBody)))]
pub async fn list(
    State(api): State<Api>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let limit = match &params.limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit: must be a number from 1 to {MAX_LIMIT}"))
            })?,
    };
    let status = params.status.as_deref().map(parse_status).transpose()?;
    if let Some(tag) = &params.tag {
        check_tag("tag", tag)?;
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let key = format!(
        "{}|{}|{}|{}|{limit}",
        api.inner.cache.generation(),
        status.map_or("", RecordedStatus::as_str),
        params.tag.as_deref().unwrap_or(""),
        params.cursor.as_deref().unwrap_or(""),
    );
    let query = StreamQuery {
        status,
        tag: params.tag.clone(),
        after,
        limit: limit + 1,
    };
    let loader = api.clone();
    let body = api
        .inner
        .cache
        .bodies
        .try_get_with(key.clone(), async move {
            let page = loader.page(key, query, limit).await?;
            let snapshots: HashMap<StreamName, StreamSnapshot> =
                loader.inner.registry.snapshots().into_iter().collect();
            let list = StreamList {
                streams: page
                    .0
                    .iter()
                    .map(|r| loader.compose(&r.name, Some(r), snapshots.get(&r.name)))
                    .collect(),
                next_cursor: page.1.as_ref().map(encode_cursor),
            };
            serde_json::to_vec(&list)
                .map(bytes::Bytes::from)
                .map_err(|e| super::store::StoreError::Corrupt {
                    table: "streams",
                    message: e.to_string(),
                })
        })
        .await
        .map_err(|e| {
            ApiError::Store(super::store::StoreError::Corrupt {
                table: "streams",
                message: e.to_string(),
            })
        })?;
    Ok(json_body(StatusCode::OK, body))
}

impl Api {
    /// One page of stream records for `query` (`limit` rows and the cursor after them).
    async fn page(
        &self,
        key: String,
        query: StreamQuery,
        limit: u32,
    ) -> Result<Page, super::store::StoreError> {
        let loader = self.clone();
        self.inner
            .cache
            .pages
            .try_get_with(key, async move {
                let mut rows = loader.blocking(move |s| s.list_streams(&query)).await?;
                let next = (rows.len() > limit as usize).then(|| {
                    rows.truncate(limit as usize);
                    rows.last().map(|r| After {
                        sort_at: r.sort_at,
                        name: r.name.to_string(),
                    })
                });
                Ok::<_, super::store::StoreError>(Arc::new((rows, next.flatten())))
            })
            .await
            .map_err(|e| super::store::StoreError::Corrupt {
                table: "streams",
                message: e.to_string(),
            })
    }
}

/// One stream: metadata, live state and recent history.
#[utoipa::path(get, path = "/api/v1/streams/{name}", tag = "streams",
    params(("name" = String, Path, description = "Stream name")),
    responses((status = 200, body = StreamDetail),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn detail(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = parse_stream(&name)?;
    let record = api.record(&name).await?;
    let snapshot = api.inner.registry.snapshot(&name);
    let known = record.is_some() || snapshot.is_some() || api.inner.config_streams.contains(&name);
    if !known {
        return Err(ApiError::NotFound(format!("no stream {name}")));
    }
    let (record, sessions) = match record.as_ref() {
        Some((record, sessions)) => (Some(record), sessions.as_slice()),
        None => (None, &[][..]),
    };
    let detail = StreamDetail {
        stream: api.compose(&name, record, snapshot.as_ref()),
        sessions: sessions
            .iter()
            .map(|s| Session {
                instance: s.instance.clone(),
                started_at: rfc3339(s.started_at),
                ended_at: s.ended_at.map(rfc3339),
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &detail))
}

/// Present-and-null vs absent: `Some(None)` clears a field, `None` leaves it.
fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /streams/{name}` body: fields to change (absent: unchanged; null: cleared).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchStream {
    /// Title, at most 200 characters; null clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    /// Description, at most 5000 characters; null clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Tags (replace the current ones): at most 20, each 1-32 of a-z 0-9 - _.
    pub tags: Option<Vec<String>>,
}

/// Changes a stream's title, description or tags.
#[utoipa::path(patch, path = "/api/v1/streams/{name}", tag = "streams",
    security(("admin" = [])),
    params(("name" = String, Path, description = "Stream name")),
    request_body = PatchStream,
    responses((status = 200, body = StreamDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn patch(
    _admin: Admin,
    State(api): State<Api>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PatchStream>,
) -> Result<Response, ApiError> {
    let name = parse_stream(&name)?;
    let limit = |field: &str, value: &Option<Option<String>>, max: usize| match value {
        Some(Some(text)) if text.chars().count() > max => Err(ApiError::BadRequest(format!(
            "{field}: must be at most {max} characters"
        ))),
        _ => Ok(()),
    };
    limit("title", &body.title, 200)?;
    limit("description", &body.description, 5000)?;
    let tags = match body.tags {
        Some(mut tags) => {
            if tags.len() > 20 {
                return Err(ApiError::BadRequest("tags: at most 20".into()));
            }
            for (i, tag) in tags.iter().enumerate() {
                check_tag(&format!("tags[{i}]"), tag)?;
            }
            tags.sort();
            tags.dedup();
            Some(tags)
        }
        None => None,
    };
    let patch = StreamPatch {
        title: body.title,
        description: body.description,
        tags,
    };
    let create =
        api.inner.registry.snapshot(&name).is_some() || api.inner.config_streams.contains(&name);
    let target = name.clone();
    let now = super::store::sqlite::now_millis();
    let updated = api
        .blocking(move |s| {
            if create {
                s.ensure_stream(&target, now)?;
            }
            s.update_stream(&target, &patch, now)
        })
        .await?;
    api.inner.cache.changed();
    if updated.is_none() {
        return Err(ApiError::NotFound(format!("no stream {name}")));
    }
    detail(State(api), Path(name.to_string())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let after = After {
            sort_at: 1_700_000_000_000,
            name: "a-b_c".into(),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&after)).expect("round trip"),
            after
        );
        for bad in [
            "",
            "zz",
            "00",
            &hex::encode("v1:x:a"),
            &hex::encode("v1:1:a b"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}

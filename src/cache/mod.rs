//! The cache layer: a foyer hybrid (memory + disk) cache for immutable media objects, a TTL cache
//! for playlists, a brief negative cache, and coalesced fills from a [`Source`].
//!
//! The same [`Cache`] serves both node roles: an Origin fills from the local live store
//! ([`origin::StoreSource`]), a Shield from another origin over HTTP ([`upstream::Upstream`]).
//! Knows nothing about axum or routes; `serve` turns a [`Served`] into a response.

pub mod breaker;
pub mod fill;
mod headers;
pub mod hybrid;
pub mod key;
pub mod origin;
pub mod upstream;

pub use fill::FillError;
pub use key::ObjectKey;

use bytes::Bytes;
use fill::{Fill, Fills};
use foyer::HybridCache;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One cached response: the body and the headers a cache must replay, kept as ready
/// `HeaderValue`s (validated once, when the object is built; cloning one is a reference count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedObject {
    /// 200 for content; 404 for a (briefly cached) miss.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// Content-Type.
    #[serde(with = "headers")]
    pub content_type: Option<HeaderValue>,
    /// Strong ETag, quoted.
    #[serde(with = "headers")]
    pub etag: Option<HeaderValue>,
    /// Cache-Control as the source sent it (or as the origin's policy set it).
    #[serde(with = "headers")]
    pub cache_control: Option<HeaderValue>,
    /// Last-Modified.
    #[serde(with = "headers")]
    pub last_modified: Option<HeaderValue>,
    /// When the object was fetched from its source, in Unix milliseconds.
    pub fetched_at_ms: u64,
    /// The source's Age header at fetch time, in seconds.
    pub source_age: u64,
}

fn unix_ms(time: SystemTime) -> u64 {
    u64::try_from(
        time.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl CachedObject {
    /// A 404 from the source.
    pub fn not_found() -> Self {
        Self {
            status: 404,
            body: Bytes::from_static(b"not found\n"),
            content_type: Some(HeaderValue::from_static("text/plain; charset=utf-8")),
            etag: None,
            cache_control: Some(HeaderValue::from_static("max-age=1")),
            last_modified: None,
            fetched_at_ms: unix_ms(SystemTime::now()),
            source_age: 0,
        }
    }

    /// Time since the source produced this response (source Age + time held here).
    pub fn age(&self) -> Duration {
        let held = unix_ms(SystemTime::now()).saturating_sub(self.fetched_at_ms);
        Duration::from_secs(self.source_age) + Duration::from_millis(held)
    }

    /// The `max-age` of its Cache-Control, if any.
    pub fn max_age(&self) -> Option<Duration> {
        let cc = self.cache_control.as_ref()?.to_str().ok()?;
        cc.split(',').find_map(|d| {
            d.trim()
                .strip_prefix("max-age=")?
                .trim()
                .parse()
                .ok()
                .map(Duration::from_secs)
        })
    }

    /// False when Cache-Control forbids shared caching (`no-store`, `private`, `no-cache`).
    pub fn storable(&self) -> bool {
        !self.cache_control.as_ref().is_some_and(|cc| {
            cc.to_str()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .any(|d| d == "no-store" || d == "private" || d == "no-cache")
        })
    }

    fn weight(&self) -> usize {
        self.body.len() + 256
    }
}

/// Why a source could not produce an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream is considered down (circuit open).
    #[error("upstream unavailable (circuit open)")]
    CircuitOpen,
    /// The upstream failed: connection error or 5xx.
    #[error("upstream failed: {0}")]
    Failed(Arc<str>),
}

impl SourceError {
    /// True when the failure is a timeout (504 rather than 502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, SourceError::Timeout)
    }
}

/// Where misses are filled from.
pub trait Source: Send + Sync + 'static {
    /// Fetches one object; a 404 is `Ok` with status 404, not an error.
    fn fetch(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<CachedObject, SourceError>> + Send;
}

/// Which tier answered a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The in-memory tier (or the playlist TTL cache).
    Memory,
    /// The disk tier.
    Disk,
}

/// How a request was answered, as reported in `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Found in the cache.
    Hit(Tier),
    /// This request filled the cache from the source.
    Miss,
    /// Another request's fill answered this one.
    Coalesced,
    /// The source failed; a stale copy was served (stale-if-error).
    Stale,
}

impl CacheStatus {
    /// The `X-Cache` header value.
    pub fn header(self) -> &'static str {
        match self {
            CacheStatus::Hit(_) => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Coalesced => "COALESCED",
            CacheStatus::Stale => "STALE",
        }
    }
}

/// An object and how it was obtained.
#[derive(Debug, Clone)]
pub struct Served {
    /// The response to replay.
    pub object: CachedObject,
    /// Hit, miss, coalesced or stale.
    pub status: CacheStatus,
}

/// Why no object could be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The source failed and no stale copy was allowed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Waiting for another request's fill failed.
    #[error(transparent)]
    Fill(#[from] FillError),
}

/// Lifetimes and limits of the cache.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Cache playlists (Shield). An Origin serves its own playlists fresh from the store.
    pub cache_playlists: bool,
    /// Longest playlist lifetime when the playlist says nothing shorter.
    pub playlist_ttl_cap: Duration,
    /// How long a stale playlist may be served while the source fails.
    pub stale_if_error: Duration,
    /// How long a source 404 is remembered; `None` never remembers (an Origin: its next
    /// segment must be visible at once).
    pub negative_ttl: Option<Duration>,
    /// How long a waiter waits for another request's fill.
    pub fill_timeout: Duration,
}

#[derive(Debug, Clone)]
struct Expiring {
    object: CachedObject,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<ObjectKey, Arc<Expiring>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &ObjectKey,
        value: &Arc<Expiring>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Playlists and thumbnails change under their URI (cached for their lifetime, like
/// playlists); everything else is immutable media.
fn is_mutable(key: &ObjectKey) -> bool {
    let path = key.path();
    path.ends_with(".m3u8") || path.ends_with(origin::THUMBNAIL_FILE)
}

/// `#EXT-X-TARGETDURATION` of a media playlist body.
fn target_duration(body: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The cache in front of one [`Source`].
pub struct Cache<S> {
    source: S,
    policy: CachePolicy,
    media: HybridCache<ObjectKey, CachedObject>,
    playlists: moka::future::Cache<ObjectKey, Arc<Expiring>>,
    stale: moka::future::Cache<ObjectKey, CachedObject>,
    negative: Option<moka::future::Cache<ObjectKey, CachedObject>>,
    fills: Fills<Result<Served, SourceError>>,
}

impl<S> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Source> Cache<S> {
    /// A cache over `media` (see [`hybrid::build`]) filling from `source`.
    pub fn new(
        source: S,
        media: HybridCache<ObjectKey, CachedObject>,
        policy: CachePolicy,
    ) -> Self {
        let playlists = moka::future::Cache::builder()
            .max_capacity(64 * 1024 * 1024)
            .weigher(|_: &ObjectKey, v: &Arc<Expiring>| {
                u32::try_from(v.object.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        let stale = moka::future::Cache::builder()
            .max_capacity(64 * 1024 * 1024)
            .weigher(|_: &ObjectKey, v: &CachedObject| {
                u32::try_from(v.weight()).unwrap_or(u32::MAX)
            })
            .time_to_live(policy.stale_if_error + policy.playlist_ttl_cap)
            .build();
        let negative = policy.negative_ttl.map(|ttl| {
            moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build()
        });
        Self {
            source,
            policy,
            media,
            playlists,
            stale,
            negative,
            fills: Fills::default(),
        }
    }

    /// The source misses fill from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Closes the disk tier (flushing what it buffers).
    pub async fn close(&self) {
        if let Err(error) = self.media.close().await {
            tracing::warn!(%error, "closing the disk cache failed");
        }
    }

    /// Serves `key` from the cache, filling it from the source on a miss.
    pub async fn get(&self, key: &ObjectKey) -> Result<Served, CacheError> {
        let mutable = is_mutable(key);
        if let Some(hit) = self.lookup(key, mutable).await {
            metrics::counter!("headwater_cache_hits_total", "tier" => tier_label(hit.status))
                .increment(1);
            return Ok(hit);
        }
        match self.fills.join(key) {
            Fill::Leader(permit) => {
                // The previous fill may have finished between our lookup and joining: it stores
                // before it completes, so one more look avoids a second upstream request.
                if let Some(hit) = self.lookup(key, mutable).await {
                    permit.complete(Ok(Ok(hit.clone())));
                    return Ok(hit);
                }
                metrics::counter!("headwater_cache_misses_total").increment(1);
                let result = self.fill(key, mutable).await;
                permit.complete(Ok(result.clone()));
                result.map_err(CacheError::from)
            }
            Fill::Waiter(waiter) => {
                metrics::counter!("headwater_cache_coalesced_total").increment(1);
                let served = waiter.wait(self.policy.fill_timeout).await??;
                Ok(Served {
                    object: served.object,
                    status: CacheStatus::Coalesced,
                })
            }
        }
    }

    async fn lookup(&self, key: &ObjectKey, mutable: bool) -> Option<Served> {
        if let Some(negative) = &self.negative {
            if let Some(object) = negative.get(key).await {
                return Some(Served {
                    object,
                    status: CacheStatus::Hit(Tier::Memory),
                });
            }
        }
        if mutable {
            let entry = self.playlists.get(key).await?;
            return Some(Served {
                object: entry.object.clone(),
                status: CacheStatus::Hit(Tier::Memory),
            });
        }
        if let Some(entry) = self.media.memory().get(key) {
            return Some(Served {
                object: entry.value().clone(),
                status: CacheStatus::Hit(Tier::Memory),
            });
        }
        match self.media.get(key).await {
            Ok(Some(entry)) => Some(Served {
                object: entry.value().clone(),
                status: CacheStatus::Hit(Tier::Disk),
            }),
            Ok(None) => None,
            Err(error) => {
                metrics::counter!("headwater_cache_disk_errors_total").increment(1);
                tracing::warn!(%error, %key, "disk cache read failed");
                None
            }
        }
    }

    async fn fill(&self, key: &ObjectKey, mutable: bool) -> Result<Served, SourceError> {
        let object = match self.source.fetch(key).await {
            Ok(object) => object,
            Err(error) => {
                if let Some(object) = self.stale.get(key).await {
                    let limit = object.max_age().unwrap_or_default() + self.policy.stale_if_error;
                    if object.age() <= limit {
                        metrics::counter!("headwater_cache_stale_served_total").increment(1);
                        return Ok(Served {
                            object,
                            status: CacheStatus::Stale,
                        });
                    }
                }
                return Err(error);
            }
        };
        if object.status == 404 {
            if let Some(negative) = &self.negative {
                negative.insert(key.clone(), object.clone()).await;
            }
        } else if object.status == 200 && object.storable() {
            if mutable && self.policy.cache_playlists {
                // The shortest of: the configured cap, half the target duration (HLS), the
                // upstream's max-age (below).
                let cap = target_duration(&object.body).map_or(self.policy.playlist_ttl_cap, |t| {
                    (t / 2)
                        .max(Duration::from_secs(1))
                        .min(self.policy.playlist_ttl_cap)
                });
                let ttl = object.max_age().map_or(cap, |age| age.min(cap));
                if !ttl.is_zero() {
                    self.playlists
                        .insert(
                            key.clone(),
                            Arc::new(Expiring {
                                object: object.clone(),
                                ttl,
                            }),
                        )
                        .await;
                }
                self.stale.insert(key.clone(), object.clone()).await;
            } else if !mutable {
                self.media.insert(key.clone(), object.clone());
            }
        }
        Ok(Served {
            object,
            status: CacheStatus::Miss,
        })
    }
}

fn tier_label(status: CacheStatus) -> &'static str {
    match status {
        CacheStatus::Hit(Tier::Disk) => "disk",
        _ => "memory",
    }
}

//! The live store: every object a player can fetch, per stream and rendition, held in memory.
//!
//! The stream task publishes segments and rendered playlists here; `serve` reads. A segment is
//! inserted before the playlist that lists it (under one lock), so every listed URI is
//! fetchable, and it stays after leaving the playlist for as long as the window lasts again
//! (HLS availability window). Knows nothing of HTTP beyond the text of the two validators
//! (ETag, Last-Modified date), made once per object so serving never formats them: objects
//! carry their kind, serve decides headers.

use crate::names::{RenditionName, StreamName};
use bytes::Bytes;
use headwater_ingest::frame::MediaTime;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// What an object is, which decides how long others may cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A multivariant playlist; changes when renditions or bitrates change.
    MultivariantPlaylist,
    /// A live media playlist; changes with every segment.
    MediaPlaylist,
    /// An init section; immutable under its URI.
    Init,
    /// A media segment; immutable under its URI.
    Segment,
    /// A JPEG of a recent keyframe (`thumbnail.jpg`); replaced every few seconds.
    Thumbnail,
}

/// One fetchable object: bytes plus what serving needs to describe them.
#[derive(Debug, Clone)]
pub struct Object {
    /// What kind of object this is.
    pub kind: ObjectKind,
    /// The body.
    pub data: Bytes,
    /// Strong entity tag, quoted (`"…"`), derived from the content.
    pub etag: Bytes,
    /// When this version was created (Last-Modified).
    pub created: SystemTime,
    /// `created` as an HTTP-date, formatted once here so serving never formats it.
    pub created_http_date: Bytes,
    /// The stream's target duration (sets playlist lifetimes).
    pub target_duration: Duration,
    /// Playlists also gzip-compressed, once here: each version is read many times.
    pub gzip: Option<Gzipped>,
}

/// A gzip-compressed copy of an object's body and its own strong ETag (another representation).
#[derive(Debug, Clone)]
pub struct Gzipped {
    /// The compressed body.
    pub data: Bytes,
    /// Strong entity tag of the compressed body, quoted.
    pub etag: Bytes,
}

/// Compresses `data` (fast level: playlists are small and change every segment).
fn gzip(data: &[u8], etag: &str) -> Option<Gzipped> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(data).ok()?;
    let compressed = encoder.finish().ok()?;
    Some(Gzipped {
        data: Bytes::from(compressed),
        etag: Bytes::from(format!("\"{etag}-gz\"")),
    })
}

impl Object {
    /// Wraps bytes, computing the content ETag.
    pub fn new(kind: ObjectKind, data: Bytes, target_duration: Duration) -> Self {
        let digest = Sha256::digest(&data);
        let etag: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        let created = SystemTime::now();
        let gzip = matches!(
            kind,
            ObjectKind::MultivariantPlaylist | ObjectKind::MediaPlaylist
        )
        .then(|| gzip(&data, &etag))
        .flatten();
        Self {
            kind,
            gzip,
            data,
            etag: Bytes::from(format!("\"{etag}\"")),
            created,
            created_http_date: Bytes::from(httpdate::fmt_http_date(created)),
            target_duration,
        }
    }
}

#[derive(Debug, Default)]
struct RenditionObjects {
    playlist: Option<Object>,
    files: HashMap<String, Object>,
    /// Segment file names in publish order, for retention.
    segments: VecDeque<String>,
}

#[derive(Debug, Default)]
struct StreamObjects {
    multivariant: Option<Object>,
    thumbnail: Option<Object>,
    renditions: HashMap<RenditionName, RenditionObjects>,
}

/// The objects of one stream instance.
#[derive(Debug)]
pub struct StreamEntry {
    instance: String,
    retain_segments: usize,
    objects: RwLock<StreamObjects>,
    /// PROGRAM-DATE-TIME and media start of the latest segment (the playlists' clock).
    clock: Mutex<Option<(SystemTime, MediaTime)>>,
}

impl StreamEntry {
    /// The instance id that prefixes this instance's segment and init file names.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Records the playlists' clock: a segment starting at media time `start` (on the
    /// instance's output timeline, 0 at its first keyframe) has this PROGRAM-DATE-TIME.
    pub fn anchor_clock(&self, program_date_time: SystemTime, start: MediaTime) {
        *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((program_date_time, start));
    }

    /// Media time since the instance started at wall-clock time `at`, on the clock of the
    /// playlists' PROGRAM-DATE-TIME; None before the first segment.
    pub fn stream_time(&self, at: SystemTime) -> Option<Duration> {
        let (wall, start) = (*self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))?;
        let start = Duration::from_millis(u64::try_from(start.rescale(1000).ticks).unwrap_or(0));
        Some(match at.duration_since(wall) {
            Ok(since) => start + since,
            Err(before) => start.saturating_sub(before.duration()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StreamObjects> {
        self.objects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StreamObjects> {
        self.objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores an init section file.
    pub fn put_init(&self, rendition: &RenditionName, file: String, object: Object) {
        self.write()
            .renditions
            .entry(rendition.clone())
            .or_default()
            .files
            .insert(file, object);
    }

    /// Stores a segment, then the playlist that lists it, atomically; drops segments older than
    /// the retention.
    pub fn publish_segment(
        &self,
        rendition: &RenditionName,
        file: String,
        segment: Object,
        playlist: Object,
    ) {
        let mut objects = self.write();
        let r = objects.renditions.entry(rendition.clone()).or_default();
        r.files.insert(file.clone(), segment);
        r.segments.push_back(file);
        while r.segments.len() > self.retain_segments {
            if let Some(old) = r.segments.pop_front() {
                r.files.remove(&old);
            }
        }
        r.playlist = Some(playlist);
    }

    /// Replaces a rendition's media playlist (e.g. to add ENDLIST).
    pub fn put_playlist(&self, rendition: &RenditionName, playlist: Object) {
        self.write()
            .renditions
            .entry(rendition.clone())
            .or_default()
            .playlist = Some(playlist);
    }

    /// Replaces the multivariant playlist.
    pub fn put_multivariant(&self, playlist: Object) {
        self.write().multivariant = Some(playlist);
    }

    /// Replaces the stream's thumbnail.
    pub fn put_thumbnail(&self, thumbnail: Object) {
        self.write().thumbnail = Some(thumbnail);
    }

    /// The stream's latest thumbnail, once there is one.
    pub fn thumbnail(&self) -> Option<Object> {
        self.read().thumbnail.clone()
    }

    /// The multivariant playlist, once there is one.
    pub fn multivariant(&self) -> Option<Object> {
        self.read().multivariant.clone()
    }

    /// A rendition's media playlist, once it lists a segment.
    pub fn media_playlist(&self, rendition: &RenditionName) -> Option<Object> {
        self.read().renditions.get(rendition)?.playlist.clone()
    }

    /// A segment or init file of a rendition.
    pub fn file(&self, rendition: &RenditionName, file: &str) -> Option<Object> {
        self.read()
            .renditions
            .get(rendition)?
            .files
            .get(file)
            .cloned()
    }
}

/// Every live (and recently ended) stream's objects.
#[derive(Debug, Default)]
pub struct Store {
    streams: RwLock<HashMap<StreamName, Arc<StreamEntry>>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new instance of a stream, replacing any previous one.
    pub fn start_instance(
        &self,
        stream: &StreamName,
        instance: String,
        retain_segments: usize,
    ) -> Arc<StreamEntry> {
        let entry = Arc::new(StreamEntry {
            instance,
            retain_segments,
            objects: RwLock::default(),
            clock: Mutex::default(),
        });
        self.streams
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.clone(), entry.clone());
        entry
    }

    /// Removes a stream instance, if it is still the current one.
    pub fn remove_instance(&self, stream: &StreamName, entry: &Arc<StreamEntry>) {
        let mut streams = self
            .streams
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams
            .get(stream)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
        {
            streams.remove(stream);
        }
    }

    /// The current instance of a stream.
    pub fn stream(&self, stream: &StreamName) -> Option<Arc<StreamEntry>> {
        self.streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(stream)
            .cloned()
    }

    /// Names of every stream in the store.
    pub fn stream_names(&self) -> Vec<StreamName> {
        self.streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}

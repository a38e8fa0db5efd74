//! A stream instance's renditions on the packaging side: one cutter, media playlist and bitrate
//! statistics per rendition, what goes to the store, and the multivariant playlist.
//!
//! EXT-X-TARGETDURATION is fixed once for the whole stream by its first segment (rule 2: the
//! same in every media playlist). The multivariant playlist appears once every rendition has a
//! segment, and is re-rendered when a measured peak exceeds the declared BANDWIDTH or a
//! rendition is shed.

use crate::names::{RenditionName, StreamName};
use crate::package::playlist::{init_file, render_multivariant, rounded_secs, segment_file};
use crate::package::{BitrateStats, Cutter, InitSection, MediaPlaylist, Segment, VariantInfo};
use crate::store::{Object, ObjectKind, StreamEntry};
use crate::transcode::Rung;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// BANDWIDTH is declared with this headroom over the measured peak, so small peaks later in the
/// stream do not force a new multivariant playlist.
const BANDWIDTH_HEADROOM: f64 = 1.1;

/// Audio bitrate assumed before a rendition is measured (bits per second).
const ASSUMED_AUDIO_BPS: u64 = 128_000;

/// What a rendition is made from.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// The publisher's H.264, copied.
    Source,
    /// Re-encoded.
    Transcoded(Box<Rung>),
}

/// One rendition of the stream instance.
#[derive(Debug)]
pub(super) struct Rendition {
    pub(super) name: RenditionName,
    pub(super) kind: Kind,
    pub(super) cutter: Cutter,
    /// False once shed (its playlist then has ENDLIST and it leaves the multivariant playlist).
    pub(super) active: bool,
    playlist: MediaPlaylist,
    stats: BitrateStats,
    declared_bandwidth: u64,
    last_init_id: Option<u32>,
    /// The latest segment's init and measured frame rate, for the multivariant playlist.
    latest: Option<(Arc<InitSection>, Option<f64>)>,
}

/// Every rendition of one stream instance.
#[derive(Debug)]
pub(super) struct Renditions {
    stream: StreamName,
    entry: Arc<StreamEntry>,
    window: usize,
    configured_target: Duration,
    target: Option<u64>,
    pub(super) list: Vec<Rendition>,
    multivariant_published: bool,
    long_segments: u64,
}

impl Renditions {
    pub(super) fn new(
        stream: StreamName,
        entry: Arc<StreamEntry>,
        window: usize,
        target: Duration,
    ) -> Self {
        Self {
            stream,
            entry,
            window,
            configured_target: target,
            target: None,
            list: Vec::new(),
            multivariant_published: false,
            long_segments: 0,
        }
    }

    /// The store entry of the stream instance.
    pub(super) fn entry(&self) -> &Arc<StreamEntry> {
        &self.entry
    }

    /// Adds a rendition (before the first segment); returns its index.
    pub(super) fn add(&mut self, name: RenditionName, kind: Kind) -> usize {
        let mut playlist = MediaPlaylist::new(
            self.entry.instance().to_owned(),
            self.window,
            self.configured_target,
        );
        if let Some(target) = self.target {
            playlist.fix_target_duration(target);
        }
        self.list.push(Rendition {
            name,
            kind,
            cutter: Cutter::new(),
            active: true,
            playlist,
            stats: BitrateStats::default(),
            declared_bandwidth: 0,
            last_init_id: None,
            latest: None,
        });
        self.list.len() - 1
    }

    fn target(&self) -> Duration {
        Duration::from_secs(self.target.unwrap_or(0))
    }

    /// Publishes segments of rendition `index`; `closed_by` is when the source frame that
    /// closed them arrived (publish latency).
    pub(super) fn publish(
        &mut self,
        index: usize,
        segments: Vec<Segment>,
        closed_by: Option<Instant>,
    ) {
        for segment in segments {
            self.publish_one(index, &segment, closed_by);
        }
    }

    fn fix_target(&mut self, first: &Segment) {
        let configured = rounded_secs(self.configured_target).max(1);
        let target = configured.max(rounded_secs(first.duration));
        if target > configured {
            warn!(stream = %self.stream, target, configured,
                "the source's keyframes are sparser than the segment target: segments run long; \
                 advertising EXT-X-TARGETDURATION {target}");
            metrics::counter!("headwater_segment_target_raised_total").increment(1);
        }
        self.target = Some(target);
        for r in &mut self.list {
            r.playlist.fix_target_duration(target);
        }
    }

    fn publish_one(&mut self, index: usize, segment: &Segment, closed_by: Option<Instant>) {
        if self.target.is_none() {
            self.fix_target(segment);
        }
        let target = self.target();
        let instance = self.entry.instance().to_owned();
        let stream = self.stream.clone();
        let long = segment.duration > self.configured_target + Duration::from_millis(500);
        let Some(r) = self.list.get_mut(index).filter(|r| r.active) else {
            return;
        };
        // A new init (codec parameters, size) changes CODECS and RESOLUTION.
        let mut changed = r.last_init_id.is_some_and(|id| id != segment.init.id);
        if r.last_init_id != Some(segment.init.id) {
            r.last_init_id = Some(segment.init.id);
            let object = Object::new(ObjectKind::Init, segment.init.data.clone(), target);
            self.entry
                .put_init(&r.name, init_file(&instance, segment.init.id), object);
        }
        if r.playlist.overlong(segment) {
            warn!(stream = %stream, rendition = %r.name, duration = ?segment.duration,
                target = ?r.playlist.target_duration(),
                "segment longer than the target duration: the publisher's keyframe interval is too long");
            metrics::counter!("headwater_segment_overlong_total").increment(1);
        }
        r.playlist.push(segment);
        let rendered = Object::new(ObjectKind::MediaPlaylist, r.playlist.render(), target);
        let file = segment_file(&instance, segment.sequence);
        let data = Object::new(ObjectKind::Segment, segment.data.clone(), target);
        self.entry.publish_segment(&r.name, file, data, rendered);
        self.entry
            .anchor_clock(segment.program_date_time, segment.start);
        if let Some(arrived) = closed_by {
            let latency = arrived.elapsed().as_secs_f64();
            match r.kind {
                Kind::Source => {
                    metrics::histogram!("headwater_segment_publish_latency_seconds")
                        .record(latency);
                }
                Kind::Transcoded(_) => {
                    metrics::histogram!("headwater_transcode_segment_publish_latency_seconds",
                        "rendition" => r.name.to_string())
                    .record(latency);
                }
            }
        }
        metrics::counter!("headwater_segments_published_total").increment(1);
        let measured_fps = (segment.duration.as_secs_f64() > 0.0)
            .then(|| f64::from(segment.video_frames) / segment.duration.as_secs_f64());
        r.latest = Some((segment.init.clone(), measured_fps));
        r.stats.record(segment.data.len(), segment.duration);
        if r.stats.peak_bps() > r.declared_bandwidth {
            r.declared_bandwidth = (r.stats.peak_bps() as f64 * BANDWIDTH_HEADROOM) as u64;
            changed = true;
        }
        if long && index == 0 {
            self.long_segments += 1;
            metrics::counter!("headwater_segment_long_total").increment(1);
        }
        let all_ready = self
            .list
            .iter()
            .filter(|r| r.active)
            .all(|r| r.latest.is_some());
        if all_ready && (changed || !self.multivariant_published) {
            self.put_multivariant();
        }
    }

    /// Sheds rendition `index`: its playlist ends and it leaves the multivariant playlist.
    pub(super) fn shed(&mut self, index: usize) {
        let target = self.target();
        let Some(r) = self.list.get_mut(index).filter(|r| r.active) else {
            return;
        };
        r.active = false;
        r.playlist.end();
        if !r.playlist.is_empty() {
            let object = Object::new(ObjectKind::MediaPlaylist, r.playlist.render(), target);
            self.entry.put_playlist(&r.name, object);
        }
        if self.multivariant_published {
            self.put_multivariant();
        }
    }

    /// The stream ended: every playlist gets ENDLIST.
    pub(super) fn end(&mut self) {
        let target = self.target();
        for r in &mut self.list {
            r.playlist.end();
            if !r.playlist.is_empty() {
                let object = Object::new(ObjectKind::MediaPlaylist, r.playlist.render(), target);
                self.entry.put_playlist(&r.name, object);
            }
        }
        if self.long_segments > 0 {
            info!(stream = %self.stream, count = self.long_segments,
                "segments longer than the target (sparse source keyframes)");
        }
    }

    fn variant(r: &Rendition) -> Option<(VariantInfo, u32)> {
        let (init, measured_fps) = r.latest.as_ref()?;
        let video = init.video.as_ref();
        let bandwidth = match (&r.kind, r.declared_bandwidth) {
            (Kind::Transcoded(rung), 0) => rung.maxrate_bps() + ASSUMED_AUDIO_BPS,
            (_, declared) => declared,
        };
        let height = video.map_or(0, |v| v.height);
        let info = VariantInfo {
            uri: format!("{}/index.m3u8", r.name),
            bandwidth,
            average_bandwidth: r.stats.average_bps(),
            codecs: init.codecs(),
            resolution: video.map(|v| (u64::from(v.width), u64::from(v.height))),
            // An encoded rendition's SPS timing reflects x264's timebase, not its frame rate.
            frame_rate: match &r.kind {
                Kind::Transcoded(rung) => Some(rung.fps),
                Kind::Source => video.and_then(|v| v.frame_rate).or(*measured_fps),
            },
        };
        Some((info, height))
    }

    /// Renders the multivariant playlist: the middle rendition (by height, then bandwidth)
    /// first, so players start on neither the heaviest nor the lightest, then the rest from the
    /// lightest up.
    fn put_multivariant(&mut self) {
        let mut variants: Vec<(VariantInfo, u32)> = self
            .list
            .iter()
            .filter(|r| r.active)
            .filter_map(Self::variant)
            .collect();
        if variants.is_empty() {
            return;
        }
        variants.sort_by_key(|(v, height)| (*height, v.bandwidth));
        let start = variants.remove((variants.len() - 1) / 2);
        variants.insert(0, start);
        let list: Vec<VariantInfo> = variants.into_iter().map(|(v, _)| v).collect();
        let object = Object::new(
            ObjectKind::MultivariantPlaylist,
            render_multivariant(&list),
            self.target(),
        );
        self.entry.put_multivariant(object);
        self.multivariant_published = true;
    }
}

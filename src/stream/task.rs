//! One stream instance's task: publisher sessions in, segments and playlists out to the store.

use super::{PublisherState, Slots};
use crate::config::HlsConfig;
use crate::names::{RenditionName, StreamName};
use crate::package::playlist::{init_file, render_multivariant, segment_file};
use crate::package::{BitrateStats, MediaPlaylist, Segment, Segmenter, VariantInfo};
use crate::store::{Object, ObjectKind, Store, StreamEntry};
use headwater_ingest::{IngestEvent, Track};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The only rendition until the ladder exists: the source, passed through.
const SOURCE_RENDITION: &str = "source";

/// BANDWIDTH is declared with this headroom over the measured peak, so small peaks later in the
/// stream do not force a new multivariant playlist.
const BANDWIDTH_HEADROOM: f64 = 1.1;

pub(super) struct StreamTask {
    stream: StreamName,
    generation: u64,
    hls: HlsConfig,
    store: Arc<Store>,
    slots: Arc<Mutex<Slots>>,
    entry: Arc<StreamEntry>,
    rendition: RenditionName,
    segmenter: Segmenter,
    playlist: MediaPlaylist,
    stats: BitrateStats,
    declared_bandwidth: u64,
    last_init_id: Option<u32>,
    last_keyframe_arrival: Option<Instant>,
}

/// A short id unique per stream instance, so URIs of a restarted stream never collide with
/// immutable objects that CDNs cached from an earlier one.
fn instance_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut n = millis;
    let mut digits = Vec::new();
    while n > 0 {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_else(|_| "0".into())
}

impl StreamTask {
    pub(super) fn new(
        stream: StreamName,
        generation: u64,
        hls: HlsConfig,
        store: Arc<Store>,
        slots: Arc<Mutex<Slots>>,
    ) -> Self {
        let instance = instance_id();
        // Removed segments stay fetchable for one more window (HLS availability window).
        let entry = store.start_instance(&stream, instance.clone(), hls.live_window * 2);
        Self {
            segmenter: Segmenter::new(hls.segment_target),
            playlist: MediaPlaylist::new(instance, hls.live_window, hls.segment_target),
            rendition: RenditionName::parse(SOURCE_RENDITION).expect("literal is a valid name"),
            stream,
            generation,
            hls,
            store,
            slots,
            entry,
            stats: BitrateStats::default(),
            declared_bandwidth: 0,
            last_init_id: None,
            last_keyframe_arrival: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut publisher: mpsc::Receiver<IngestEvent>,
        mut handoffs: mpsc::UnboundedReceiver<mpsc::Receiver<IngestEvent>>,
    ) {
        info!(stream = %self.stream, instance = self.entry.instance(), "stream started");
        loop {
            while let Some(event) = publisher.recv().await {
                if let IngestEvent::Frame(frame) = &event {
                    if frame.track == Track::Video && frame.keyframe {
                        self.last_keyframe_arrival = Some(Instant::now());
                    }
                }
                match self.segmenter.push(event, SystemTime::now()) {
                    Ok(segments) => segments.iter().for_each(|segment| self.publish(segment)),
                    Err(error) => {
                        // Dropping the receiver disconnects the publisher.
                        warn!(stream = %self.stream, %error, "disconnecting publisher");
                        break;
                    }
                }
            }
            // Makes the connection's next send fail, so it closes (no-op when it already left).
            publisher.close();
            for segment in self.segmenter.publisher_left() {
                self.publish(&segment);
            }
            self.set_state(PublisherState::Reconnecting);
            info!(stream = %self.stream, grace = ?self.hls.reconnect_grace, "publisher left; waiting for a reconnect");
            match tokio::time::timeout(self.hls.reconnect_grace, handoffs.recv()).await {
                Ok(Some(next)) => publisher = next,
                _ => match self.end_unless_reconnected(&mut handoffs) {
                    Some(next) => publisher = next,
                    None => break,
                },
            }
        }
        self.playlist.end();
        self.put_playlist();
        info!(stream = %self.stream, retention = ?self.hls.ended_retention, "stream ended");
        tokio::time::sleep(self.hls.ended_retention).await;
        self.store.remove_instance(&self.stream, &self.entry);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots
            .by_stream
            .get(&self.stream)
            .is_some_and(|s| s.generation == self.generation)
        {
            slots.by_stream.remove(&self.stream);
        }
    }

    /// Marks the stream Ended, unless a publisher was handed over in the meantime.
    fn end_unless_reconnected(
        &self,
        handoffs: &mut mpsc::UnboundedReceiver<mpsc::Receiver<IngestEvent>>,
    ) -> Option<mpsc::Receiver<IngestEvent>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(next) = handoffs.try_recv() {
            return Some(next);
        }
        if let Some(slot) = slots.by_stream.get_mut(&self.stream) {
            if slot.generation == self.generation {
                slot.state = PublisherState::Ended;
            }
        }
        None
    }

    fn set_state(&self, state: PublisherState) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.by_stream.get_mut(&self.stream) {
            if slot.generation == self.generation {
                slot.state = state;
            }
        }
    }

    fn target(&self) -> Duration {
        Duration::from_secs(self.playlist.target_duration().unwrap_or(0))
    }

    fn publish(&mut self, segment: &Segment) {
        let instance = self.entry.instance().to_owned();
        if self.last_init_id != Some(segment.init.id) {
            self.last_init_id = Some(segment.init.id);
            let object = Object::new(ObjectKind::Init, segment.init.data.clone(), self.target());
            self.entry.put_init(
                &self.rendition,
                init_file(&instance, segment.init.id),
                object,
            );
        }
        if self.playlist.overlong(segment) {
            warn!(stream = %self.stream, duration = ?segment.duration, target = ?self.playlist.target_duration(),
                "segment longer than the target duration: the publisher's keyframe interval is too long");
            metrics::counter!("headwater_segment_overlong_total").increment(1);
        }
        self.playlist.push(segment);
        let target = self.target();
        let rendered = Object::new(ObjectKind::MediaPlaylist, self.playlist.render(), target);
        let file = segment_file(&instance, segment.sequence);
        let data = Object::new(ObjectKind::Segment, segment.data.clone(), target);
        self.entry
            .publish_segment(&self.rendition, file, data, rendered);
        if let Some(arrived) = self.last_keyframe_arrival {
            metrics::histogram!("headwater_segment_publish_latency_seconds")
                .record(arrived.elapsed().as_secs_f64());
        }
        metrics::counter!("headwater_segments_published_total").increment(1);
        self.stats.record(segment.data.len(), segment.duration);
        if self.stats.peak_bps() > self.declared_bandwidth {
            self.declared_bandwidth = (self.stats.peak_bps() as f64 * BANDWIDTH_HEADROOM) as u64;
            self.put_multivariant(segment);
        }
    }

    fn put_multivariant(&self, segment: &Segment) {
        let init = &segment.init;
        let video = init.video.as_ref();
        let measured_fps = (segment.duration.as_secs_f64() > 0.0)
            .then(|| f64::from(segment.video_frames) / segment.duration.as_secs_f64());
        let variant = VariantInfo {
            uri: format!("{}/index.m3u8", self.rendition),
            bandwidth: self.declared_bandwidth,
            average_bandwidth: self.stats.average_bps(),
            codecs: init.codecs(),
            resolution: video.map(|v| (u64::from(v.width), u64::from(v.height))),
            frame_rate: video.and_then(|v| v.frame_rate).or(measured_fps),
        };
        let object = Object::new(
            ObjectKind::MultivariantPlaylist,
            render_multivariant(&[variant]),
            self.target(),
        );
        self.entry.put_multivariant(object);
    }

    fn put_playlist(&self) {
        if self.playlist.is_empty() {
            return;
        }
        let object = Object::new(
            ObjectKind::MediaPlaylist,
            self.playlist.render(),
            self.target(),
        );
        self.entry.put_playlist(&self.rendition, object);
    }
}

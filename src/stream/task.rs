//! One stream instance's task: publisher sessions in, segments and playlists out to the store.
//!
//! Per frame: the stream's [`Cadence`] places it on the output timeline and decides whether a
//! segment starts there (once, for every rendition). The `source` rendition's cutter gets the
//! frame as-is; the transcoder (codec threads, see `transcode`) gets the video with the decision
//! and sends back each rung's encoded frames carrying it, which go to that rung's cutter. Audio
//! (the source AAC) goes to every cutter. The task never waits on the codec threads: a full
//! decoder queue drops frames (counted), and the governor sheds the most expensive rung when
//! the slowest falls `ladder.max_lag` behind. Every [`THUMBNAIL_INTERVAL`] of media one source
//! keyframe goes to the thumbnail thread, which stores `thumbnail.jpg`.

use super::renditions::{Kind, Renditions};
use super::{Attached, IngestRates, PublisherState, Slots, StreamEvent};
use crate::config::{HlsConfig, StreamLadder, SOURCE_RENDITION};
use crate::names::{RenditionName, StreamName};
use crate::package::SegmentError;
use crate::store::{Object, ObjectKind, Store};
use crate::transcode::{
    self, Boundary, Cadence, Cue, CutMode, Governor, Output, Rung, Thumbnailer, Transcoder,
};
use headwater_ingest::{AvcConfig, IngestEvent, MediaFrame, Track};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};
use tracing::{error, info, warn};

/// How often lag and realtime-factor gauges are updated.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// Media time between thumbnails (taken at the first keyframe after it).
pub(crate) const THUMBNAIL_INTERVAL: Duration = Duration::from_secs(10);

/// One publisher session's transcoding.
struct Session {
    transcoder: Option<Transcoder>,
    governor: Governor,
    /// Session rung index -> rendition index.
    renditions: Vec<usize>,
    /// A boundary whose frame the decoder queue refused; it goes with the next frame.
    carried: Option<Boundary>,
    dropped: u64,
    last_gauges: Instant,
}

/// What the task reports beside the media path (never waiting on anyone).
pub(super) struct Reports {
    pub(super) events: broadcast::Sender<StreamEvent>,
    pub(super) rates: Arc<IngestRates>,
    /// When the registry accepted the instance's first publisher.
    pub(super) started_at: SystemTime,
}

pub(super) struct StreamTask {
    stream: StreamName,
    generation: u64,
    hls: HlsConfig,
    ladder: StreamLadder,
    store: Arc<Store>,
    slots: Arc<Mutex<Slots>>,
    renditions: Renditions,
    cadence: Cadence,
    /// Index of the `source` rendition.
    source: Option<usize>,
    /// Set once the ladder is resolved against the first sequence header.
    planned: bool,
    video_config: Option<AvcConfig>,
    /// The latest audio configuration: renditions planned later (at the first video
    /// configuration) still need it when a publisher sends audio's first.
    audio_config: Option<IngestEvent>,
    session: Option<Session>,
    last_keyframe_arrival: Option<Instant>,
    /// The thumbnail thread (None: it could not start, logged once).
    thumbnails: Option<Thumbnailer>,
    /// Media milliseconds of the last keyframe it took.
    last_thumbnail_ms: Option<i64>,
    ingest_stats: super::ingest_stats::IngestStats,
    events: broadcast::Sender<StreamEvent>,
    started_at: SystemTime,
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

enum Step {
    Event(Option<IngestEvent>),
    Output(Option<Output>),
    /// The publisher's key was revoked.
    Cut,
}

impl StreamTask {
    pub(super) fn new(
        stream: StreamName,
        generation: u64,
        hls: HlsConfig,
        ladder: StreamLadder,
        store: Arc<Store>,
        slots: Arc<Mutex<Slots>>,
        reports: Reports,
    ) -> Self {
        let instance = instance_id();
        // Removed segments stay fetchable for one more window (HLS availability window).
        let entry = store.start_instance(&stream, instance, hls.live_window * 2);
        let mut renditions =
            Renditions::new(stream.clone(), entry, hls.live_window, hls.segment_target);
        let thumbnails = {
            let entry = renditions.entry().clone();
            let target = hls.segment_target;
            Thumbnailer::start(stream.as_str(), move |jpeg| {
                entry.put_thumbnail(Object::new(ObjectKind::Thumbnail, jpeg, target));
            })
            .map_err(|error| warn!(stream = %stream, %error, "no thumbnails for this stream"))
            .ok()
        };
        let source = ladder.source.then(|| {
            renditions.add(
                RenditionName::parse(SOURCE_RENDITION).expect("literal is a valid name"),
                Kind::Source,
            )
        });
        // With a passthrough rendition, boundaries can only fall on source keyframes.
        let mode = if ladder.source {
            CutMode::Keyframes
        } else {
            CutMode::Time
        };
        Self {
            cadence: Cadence::new(mode, hls.segment_target),
            ingest_stats: super::ingest_stats::IngestStats::new(
                stream.clone(),
                hls.segment_target,
                reports.rates,
            ),
            events: reports.events,
            started_at: reports.started_at,
            stream,
            generation,
            hls,
            ladder,
            store,
            slots,
            renditions,
            source,
            planned: false,
            video_config: None,
            audio_config: None,
            session: None,
            last_keyframe_arrival: None,
            thumbnails,
            last_thumbnail_ms: None,
        }
    }

    pub(super) async fn run(
        mut self,
        attached: Attached,
        mut handoffs: mpsc::UnboundedReceiver<Attached>,
    ) {
        info!(stream = %self.stream, "stream started");
        let instance = self.renditions.entry().instance().to_owned();
        let _ = self.events.send(StreamEvent::Started {
            stream: self.stream.clone(),
            instance: instance.clone(),
            at: self.started_at,
        });
        let Attached {
            events: mut publisher,
            mut cut,
        } = attached;
        loop {
            loop {
                let step = match self.session.as_mut().and_then(|s| s.transcoder.as_mut()) {
                    Some(transcoder) => tokio::select! {
                        biased;
                        () = cut.cancelled() => Step::Cut,
                        output = transcoder.recv() => Step::Output(output),
                        event = publisher.recv() => Step::Event(event),
                    },
                    None => tokio::select! {
                        biased;
                        () = cut.cancelled() => Step::Cut,
                        event = publisher.recv() => Step::Event(event),
                    },
                };
                match step {
                    Step::Output(Some(output)) => self.on_output(output),
                    Step::Output(None) => {
                        if let Some(session) = &mut self.session {
                            session.transcoder = None;
                        }
                    }
                    Step::Event(Some(event)) => {
                        if let Err(error) = self.on_event(event) {
                            // Dropping the receiver disconnects the publisher.
                            warn!(stream = %self.stream, %error, "disconnecting publisher");
                            break;
                        }
                    }
                    Step::Event(None) => break,
                    Step::Cut => {
                        warn!(stream = %self.stream, "publisher's key revoked: disconnecting");
                        break;
                    }
                }
            }
            // Makes the connection's next send fail, so it closes (no-op when it already left).
            publisher.close();
            self.publisher_left().await;
            self.set_state(PublisherState::Reconnecting);
            info!(stream = %self.stream, grace = ?self.hls.reconnect_grace, "publisher left; waiting for a reconnect");
            let next = match tokio::time::timeout(self.hls.reconnect_grace, handoffs.recv()).await {
                Ok(Some(next)) => next,
                _ => match self.end_unless_reconnected(&mut handoffs) {
                    Some(next) => next,
                    None => break,
                },
            };
            publisher = next.events;
            cut = next.cut;
        }
        self.renditions.end();
        let _ = self.events.send(StreamEvent::Ended {
            stream: self.stream.clone(),
            instance,
            at: SystemTime::now(),
        });
        info!(stream = %self.stream, retention = ?self.hls.ended_retention, "stream ended");
        tokio::time::sleep(self.hls.ended_retention).await;
        self.store
            .remove_instance(&self.stream, self.renditions.entry());
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots
            .by_stream
            .get(&self.stream)
            .is_some_and(|s| s.generation == self.generation)
        {
            slots.by_stream.remove(&self.stream);
        }
    }

    /// Closes what every rendition collected: the source at once, transcoded rungs once their
    /// threads have flushed everything in flight.
    async fn publisher_left(&mut self) {
        let end = self.cadence.publisher_left();
        if let Some(index) = self.source {
            let segments = self.renditions.list[index].cutter.publisher_left(end);
            self.renditions.publish(index, segments, None);
        }
        if let Some(mut session) = self.session.take() {
            if let Some(mut transcoder) = session.transcoder.take() {
                transcoder.finish();
                self.session = Some(session);
                while let Some(output) = transcoder.recv().await {
                    self.on_output(output);
                }
                session = self.session.take().expect("put back above");
            }
            if session.dropped > 0 {
                warn!(stream = %self.stream, frames = session.dropped,
                    "source frames dropped before transcoding (decoder queue full)");
            }
            for &index in &session.renditions {
                let r = &mut self.renditions.list[index];
                if r.active {
                    let segments = r.cutter.publisher_left(end);
                    self.renditions.publish(index, segments, None);
                }
            }
        }
    }

    fn on_event(&mut self, event: IngestEvent) -> Result<(), SegmentError> {
        let frame = match event {
            IngestEvent::Frame(frame) => frame,
            config => {
                self.on_config(config);
                return Ok(());
            }
        };
        let arrived = Instant::now();
        self.ingest_stats.frame(&frame);
        let keyframe = frame.track == Track::Video && frame.keyframe;
        let cue = match self.cadence.frame(frame, SystemTime::now()) {
            Ok(cue) => cue,
            Err(error) => {
                for r in &mut self.renditions.list {
                    r.cutter.abandon();
                }
                return Err(error.into());
            }
        };
        match cue {
            Cue::Dropped => Ok(()),
            Cue::Audio(frame) => {
                for index in 0..self.renditions.list.len() {
                    let r = &mut self.renditions.list[index];
                    if r.active {
                        let segments = r.cutter.audio(frame.clone());
                        // Publish latency counts from the arrival of the closing source frame.
                        let closed_by = (Some(index) == self.source)
                            .then_some(self.last_keyframe_arrival)
                            .flatten();
                        self.renditions.publish(index, segments, closed_by);
                    }
                }
                Ok(())
            }
            Cue::Video { frame, boundary } => {
                if keyframe {
                    self.last_keyframe_arrival = Some(arrived);
                    self.thumbnail(&frame);
                }
                if self.transcoded_rungs() > 0 {
                    self.transcode(&frame, boundary, arrived);
                }
                if let Some(index) = self.source {
                    let segments = self.renditions.list[index].cutter.video(frame, boundary)?;
                    self.renditions.publish(index, segments, Some(arrived));
                }
                Ok(())
            }
        }
    }

    /// Offers a source keyframe to the thumbnail thread when the last one is
    /// [`THUMBNAIL_INTERVAL`] old (never waits: a busy thread skips it).
    fn thumbnail(&mut self, frame: &MediaFrame) {
        let Some(config) = &self.video_config else {
            return;
        };
        let now_ms = frame.dts.rescale(1000).ticks;
        let interval = i64::try_from(THUMBNAIL_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        let Some(thumbnails) = &self.thumbnails else {
            return;
        };
        // A timeline that went back (it should not) must not stop thumbnails for good.
        if self
            .last_thumbnail_ms
            .is_some_and(|last| (0..interval).contains(&(now_ms - last)))
        {
            return;
        }
        if thumbnails.offer(config, frame) {
            self.last_thumbnail_ms = Some(now_ms);
        }
    }

    fn on_config(&mut self, config: IngestEvent) {
        self.cadence.config(&config);
        if matches!(config, IngestEvent::AudioConfig(_)) {
            self.audio_config = Some(config.clone());
        }
        if let IngestEvent::VideoConfig(video) = &config {
            if !self.planned {
                self.plan(video);
            }
            self.video_config = Some(video.clone());
            if let Some(transcoder) = self.session.as_mut().and_then(|s| s.transcoder.as_mut()) {
                if transcoder.push_config(video.clone()).is_err() {
                    warn!(stream = %self.stream, "decoder queue full: sequence header dropped");
                }
            }
        }
        for r in &mut self.renditions.list {
            match (&r.kind, &config) {
                // A transcoded rendition's video configuration is its encoder's.
                (Kind::Transcoded(_), IngestEvent::VideoConfig(_)) => {}
                _ => r.cutter.config(config.clone()),
            }
        }
    }

    /// Resolves the ladder against the first sequence header: rungs taller than the source are
    /// skipped. The set of renditions is fixed for the stream instance.
    fn plan(&mut self, video: &AvcConfig) {
        self.planned = true;
        let fps = video
            .frame_rate
            .filter(|f| *f > 0.0 && *f <= 240.0)
            .unwrap_or(30.0);
        let (rungs, skipped) =
            transcode::rung::plan(&self.ladder.renditions, (video.width, video.height), fps);
        for name in &skipped {
            info!(stream = %self.stream, rendition = %name, source_height = video.height,
                "rendition taller than the source: skipped");
        }
        for rung in rungs {
            info!(stream = %self.stream, rendition = %rung.name(), width = rung.width,
                height = rung.height, fps = rung.fps, "transcoded rendition");
            let index = self
                .renditions
                .add(rung.name().clone(), Kind::Transcoded(Box::new(rung)));
            if let Some(audio) = &self.audio_config {
                self.renditions.list[index].cutter.config(audio.clone());
            }
        }
        if self.renditions.list.is_empty() {
            warn!(stream = %self.stream, "every transcoded rendition is taller than the source and there is no source rendition: nothing to publish");
        }
        metrics::gauge!("headwater_transcode_renditions_active", "stream" => self.stream.to_string())
            .set(self.transcoded_rungs() as f64);
    }

    fn transcoded_rungs(&self) -> usize {
        self.renditions
            .list
            .iter()
            .filter(|r| r.active && matches!(r.kind, Kind::Transcoded(_)))
            .count()
    }

    /// Hands a source video frame to the codec threads (starting them for this publisher on
    /// its first frame) and sheds a rung when the governor says so.
    fn transcode(&mut self, frame: &MediaFrame, boundary: Option<Boundary>, arrived: Instant) {
        if self.session.is_none() {
            if boundary.is_none() {
                return;
            }
            self.session = self.start_session();
        }
        let Some(session) = &mut self.session else {
            return;
        };
        let Some(transcoder) = &mut session.transcoder else {
            return;
        };
        let boundary = boundary.or(session.carried.take());
        match transcoder.push(frame.clone(), boundary, arrived) {
            Ok(()) => session
                .governor
                .input(frame.dts.ticks + i64::from(frame.cts)),
            Err(transcode::Overloaded) => {
                session.carried = boundary;
                session.dropped += 1;
                metrics::counter!("headwater_transcode_dropped_frames_total",
                    "stream" => self.stream.to_string())
                .increment(1);
            }
        }
        let now = Instant::now();
        if let Some(rung) = session.governor.shed(now) {
            let lag = session.governor.lag().unwrap_or_default();
            transcoder.shed(rung);
            session.governor.stopped(rung);
            let index = session.renditions[rung];
            let name = self.renditions.list[index].name.clone();
            warn!(stream = %self.stream, rendition = %name, ?lag, max_lag = ?self.ladder.max_lag,
                "cannot transcode in real time: shedding the most expensive rendition");
            metrics::counter!("headwater_transcode_renditions_shed_total",
                "stream" => self.stream.to_string(), "rendition" => name.to_string())
            .increment(1);
            self.renditions.shed(index);
            metrics::gauge!("headwater_transcode_renditions_active", "stream" => self.stream.to_string())
                .set(self.transcoded_rungs() as f64);
        }
    }

    fn start_session(&mut self) -> Option<Session> {
        let mut renditions = Vec::new();
        let mut rungs: Vec<Rung> = Vec::new();
        for (index, r) in self.renditions.list.iter().enumerate() {
            if let (true, Kind::Transcoded(rung)) = (r.active, &r.kind) {
                renditions.push(index);
                rungs.push((**rung).clone());
            }
        }
        let mut transcoder = match Transcoder::start(self.stream.as_str(), &rungs) {
            Ok(t) => t,
            Err(e) => {
                error!(stream = %self.stream, error = %e, "cannot start transcoding: serving the source only");
                for index in renditions {
                    self.renditions.shed(index);
                }
                return None;
            }
        };
        if let Some(config) = &self.video_config {
            let _ = transcoder.push_config(config.clone());
        }
        let costs: Vec<f64> = rungs.iter().map(Rung::cost).collect();
        Some(Session {
            transcoder: Some(transcoder),
            governor: Governor::new(
                &costs,
                usize::from(self.source.is_some()),
                self.ladder.max_lag,
            ),
            renditions,
            carried: None,
            dropped: 0,
            last_gauges: Instant::now(),
        })
    }

    fn on_output(&mut self, output: Output) {
        let Some(session) = &mut self.session else {
            return;
        };
        let rung = match &output {
            Output::Config { rung, .. }
            | Output::Frame { rung, .. }
            | Output::Failed { rung, .. }
            | Output::Finished { rung } => *rung,
        };
        let Some(&index) = session.renditions.get(rung) else {
            return;
        };
        match output {
            Output::Config { config, .. } => {
                self.renditions.list[index]
                    .cutter
                    .config(IngestEvent::VideoConfig(config));
            }
            Output::Frame {
                frame,
                boundary,
                arrived,
                ..
            } => {
                if !session.governor.is_active(rung) {
                    return;
                }
                session
                    .governor
                    .output(rung, frame.dts.ticks + i64::from(frame.cts));
                let name = &self.renditions.list[index].name;
                if let Some(arrived) = arrived {
                    metrics::histogram!("headwater_transcode_latency_seconds",
                        "rendition" => name.to_string())
                    .record(arrived.elapsed().as_secs_f64());
                }
                let now = Instant::now();
                if now.duration_since(session.last_gauges) >= GAUGE_INTERVAL {
                    session.last_gauges = now;
                    let stream = self.stream.to_string();
                    if let Some(rate) = session.governor.realtime_factor(now) {
                        metrics::gauge!("headwater_transcode_realtime_factor", "stream" => stream.clone())
                            .set(rate);
                    }
                    if let Some(lag) = session.governor.lag() {
                        metrics::gauge!("headwater_transcode_lag_seconds", "stream" => stream)
                            .set(lag.as_secs_f64());
                    }
                }
                let closed_by = boundary.and(arrived);
                match self.renditions.list[index].cutter.video(frame, boundary) {
                    Ok(segments) => self.renditions.publish(index, segments, closed_by),
                    Err(error) => {
                        warn!(stream = %self.stream, rendition = %self.renditions.list[index].name,
                            %error, "dropping a segment")
                    }
                }
            }
            Output::Failed { error, .. } => {
                session.governor.stopped(rung);
                let name = &self.renditions.list[index].name;
                error!(stream = %self.stream, rendition = %name, error = %error,
                    source = std::error::Error::source(&error).map(ToString::to_string),
                    "transcoding failed: rendition ended");
                self.renditions.shed(index);
                metrics::gauge!("headwater_transcode_renditions_active", "stream" => self.stream.to_string())
                    .set(self.transcoded_rungs() as f64);
            }
            Output::Finished { .. } => session.governor.stopped(rung),
        }
    }

    /// Marks the stream Ended, unless a publisher was handed over in the meantime.
    fn end_unless_reconnected(
        &self,
        handoffs: &mut mpsc::UnboundedReceiver<Attached>,
    ) -> Option<Attached> {
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
}

//! MPEG-TS demuxer: transport stream bytes (as SRT delivers them) -> [`IngestEvent`]s.
//!
//! Owns packet sync, PAT/PMT, PES reassembly, continuity counters and the 33-bit clock; the first
//! H.264 (`stream_type` 0x1B) and AAC/ADTS (0x0F) streams of the first program become the video
//! and audio tracks. Video access units are converted from Annex B to AVCC (4-byte lengths),
//! with in-band SPS/PPS turned into [`IngestEvent::VideoConfig`] (through the FLV record builder)
//! and removed from the samples; ADTS frames lose their header and give an
//! [`IngestEvent::AudioConfig`] with a 2-byte AudioSpecificConfig. Timestamps stay at 90 kHz.
//!
//! It never panics and never fails as a whole: damaged input (lost packets, bad sections, bad
//! PES headers) drops what it touches, is counted in [`DemuxStats`] and reported through
//! [`Demuxer::take_errors`], and demuxing carries on. It does no I/O; `srt` feeds it.

mod adts;
mod clock;
mod h264;
mod packet;
mod pes;
mod psi;

pub use clock::Unwrap33;

use crate::frame::{IngestEvent, MediaFrame, MediaTime, Track};
use bytes::Bytes;
use packet::{NULL_PID, PACKET_SIZE, SYNC_BYTE};
use std::collections::HashMap;

/// MPEG-TS timestamps tick at 90 kHz.
pub const TIMESCALE: u32 = 90_000;
/// Largest PES packet reassembled (a very large keyframe); bigger ones are dropped.
const MAX_PES: usize = 8 << 20;
/// Largest PSI section buffered.
const MAX_SECTION: usize = 4096;
/// Unparsed ADTS bytes kept between PES packets.
const MAX_AUDIO_PENDING: usize = 64 << 10;
/// Longest span of video held back at the start while waiting for the audio configuration
/// (2 s at 90 kHz); past it video goes out alone.
const MAX_HOLD_TICKS: i64 = 2 * 90_000;
/// Errors kept for [`Demuxer::take_errors`]; more are only counted.
const MAX_KEPT_ERRORS: usize = 32;

/// Something wrong in the input; never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    /// Bytes skipped to find the next 0x47 sync byte.
    #[error("lost packet sync ({skipped} bytes skipped)")]
    Sync {
        /// How many bytes were skipped.
        skipped: usize,
    },
    /// A packet with an impossible adaptation field.
    #[error("malformed TS packet on PID {pid:#x}")]
    Packet {
        /// The packet's PID.
        pid: u16,
    },
    /// A continuity counter skipped: packets were lost; the PES in progress is dropped.
    #[error("continuity counter error on PID {pid:#x} (expected {expected}, got {got})")]
    Continuity {
        /// The PID.
        pid: u16,
        /// The counter that should have come.
        expected: u8,
        /// The counter that came.
        got: u8,
    },
    /// The sender flagged a packet as damaged (`transport_error_indicator`).
    #[error("transport error indicator on PID {pid:#x}")]
    Transport {
        /// The PID.
        pid: u16,
    },
    /// A PAT or PMT section that is truncated, of the wrong table or fails its CRC.
    #[error("bad {table} section")]
    Section {
        /// "PAT" or "PMT".
        table: &'static str,
    },
    /// A PES packet whose header is malformed, or that is too large.
    #[error("bad PES packet on PID {pid:#x}")]
    Pes {
        /// The PID.
        pid: u16,
    },
    /// A PES packet without a presentation timestamp.
    #[error("PES packet without PTS on PID {pid:#x}")]
    NoTimestamp {
        /// The PID.
        pid: u16,
    },
    /// SPS/PPS that do not make an AVC configuration.
    #[error("unusable H.264 parameter sets")]
    ParameterSets(#[source] crate::flv::FlvError),
    /// Bytes in the audio stream that are not a supported ADTS frame.
    #[error("bad ADTS frame")]
    Adts,
}

/// Counters over everything demuxed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// Transport packets parsed.
    pub packets: u64,
    /// Continuity counter errors (lost or reordered packets).
    pub continuity_errors: u64,
    /// Every other input error ([`TsError`] other than `Continuity`).
    pub malformed: u64,
    /// Video access units emitted.
    pub video_frames: u64,
    /// Audio access units emitted.
    pub audio_frames: u64,
    /// Video access units dropped because no SPS/PPS had been seen yet.
    pub video_before_config: u64,
    /// The video access unit in progress when the stream ended (dropped: it may be truncated).
    pub video_dropped_at_end: u64,
    /// Audio access units dropped because they came before the first video configuration.
    pub audio_before_video: u64,
    /// `stream_type`s listed in the PMT that are not demuxed (e.g. 0x24 HEVC, 0x03 MP3).
    pub ignored_stream_types: Vec<u8>,
}

/// One elementary stream being reassembled.
#[derive(Debug)]
struct Elementary {
    pid: u16,
    track: Track,
    pes: Vec<u8>,
    /// The PES in progress lost a packet: dropped at its end.
    broken: bool,
}

impl Elementary {
    fn new(pid: u16, track: Track) -> Self {
        Self {
            pid,
            track,
            pes: Vec::new(),
            broken: false,
        }
    }
}

/// Audio timing: frames are stamped from the last PTS plus the samples emitted since.
#[derive(Debug, Default)]
struct AudioClock {
    pending: Vec<u8>,
    anchor: Option<i64>,
    samples: u64,
}

/// The transport stream demuxer of one publisher.
#[derive(Debug, Default)]
pub struct Demuxer {
    buffer: Vec<u8>,
    pmt_pid: Option<u16>,
    sections: HashMap<u16, Vec<u8>>,
    continuity: HashMap<u16, u8>,
    video: Option<Elementary>,
    audio: Option<Elementary>,
    clock: Unwrap33,
    audio_clock: AudioClock,
    video_record: Option<Bytes>,
    audio_asc: Option<Bytes>,
    /// The audio configuration seen before the first video configuration: sent right after
    /// it, before the first video frame, so the first init section has both tracks.
    audio_waiting: Option<crate::AacConfig>,
    /// Video events held at the start until the audio configuration is known, so that the
    /// packager's first init section has both tracks (muxers such as ffmpeg's put the first
    /// audio PES after several video frames).
    held: Vec<IngestEvent>,
    hold_expired: bool,
    stats: DemuxStats,
    errors: Vec<TsError>,
}

impl Demuxer {
    /// A demuxer waiting for a PAT.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> &DemuxStats {
        &self.stats
    }

    /// The errors since the last call (at most 32; the rest are only counted).
    pub fn take_errors(&mut self) -> Vec<TsError> {
        std::mem::take(&mut self.errors)
    }

    fn error(&mut self, error: TsError) {
        if matches!(error, TsError::Continuity { .. }) {
            self.stats.continuity_errors += 1;
        } else {
            self.stats.malformed += 1;
        }
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(error);
        }
    }

    /// Demuxes `bytes` (any split of the stream); returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<IngestEvent> {
        let mut events = Vec::new();
        let mut input = bytes;
        // Complete a packet left over from the previous call first.
        if !self.buffer.is_empty() {
            let need = PACKET_SIZE - self.buffer.len();
            let take = need.min(input.len());
            self.buffer
                .extend_from_slice(input.get(..take).unwrap_or_default());
            input = input.get(take..).unwrap_or_default();
            if self.buffer.len() < PACKET_SIZE {
                return events;
            }
            let packet = std::mem::take(&mut self.buffer);
            if packet.first() == Some(&SYNC_BYTE) {
                self.packet(&packet, &mut events);
            } else {
                self.error(TsError::Sync {
                    skipped: packet.len(),
                });
            }
        }
        loop {
            // Find the next sync byte.
            let Some(start) = input.iter().position(|&b| b == SYNC_BYTE) else {
                if !input.is_empty() {
                    self.error(TsError::Sync {
                        skipped: input.len(),
                    });
                }
                break;
            };
            if start > 0 {
                self.error(TsError::Sync { skipped: start });
            }
            input = input.get(start..).unwrap_or_default();
            match input.get(..PACKET_SIZE) {
                Some(packet) => {
                    self.packet(packet, &mut events);
                    input = input.get(PACKET_SIZE..).unwrap_or_default();
                }
                None => {
                    self.buffer.extend_from_slice(input);
                    break;
                }
            }
        }
        events
    }

    /// Ends the stream: emits what is held and the bounded PES packets still in progress. An
    /// unbounded (video) PES in progress is dropped: it has no length to check, and a publisher
    /// that stops mid-PES (srt-live-transmit drops its last partial read) would hand players a
    /// truncated picture.
    pub fn flush(&mut self) -> Vec<IngestEvent> {
        let mut events = Vec::new();
        if let Some(video) = self.video.as_mut() {
            if !std::mem::take(&mut video.pes).is_empty() {
                self.stats.video_dropped_at_end += 1;
            }
        }
        for track in [Track::Video, Track::Audio] {
            let slot = match track {
                Track::Video => &mut self.video,
                Track::Audio => &mut self.audio,
            };
            if let Some(es) = slot.as_mut() {
                let pes = std::mem::take(&mut es.pes);
                let broken = std::mem::take(&mut es.broken);
                let pid = es.pid;
                if !broken && !pes.is_empty() {
                    self.finish_pes(pid, track, &pes, &mut events);
                }
            }
        }
        events.append(&mut self.held);
        events
    }

    fn packet(&mut self, bytes: &[u8], events: &mut Vec<IngestEvent>) {
        let packet = match packet::parse(bytes) {
            Ok(packet) => packet,
            Err(_) => {
                let pid = bytes
                    .get(1..3)
                    .map_or(0, |b| u16::from_be_bytes([b[0] & 0x1f, b[1]]));
                self.error(TsError::Packet { pid });
                return;
            }
        };
        self.stats.packets += 1;
        if packet.pid == NULL_PID {
            return;
        }
        if packet.transport_error {
            self.error(TsError::Transport { pid: packet.pid });
            self.mark_broken(packet.pid);
            return;
        }
        if packet.has_payload {
            let last = self.continuity.insert(packet.pid, packet.continuity);
            if let Some(last) = last {
                let expected = (last + 1) & 0x0f;
                if !packet.discontinuity && packet.continuity == last {
                    // A duplicate packet (allowed once): same payload again.
                    return;
                }
                if !packet.discontinuity && packet.continuity != expected {
                    self.error(TsError::Continuity {
                        pid: packet.pid,
                        expected,
                        got: packet.continuity,
                    });
                    self.mark_broken(packet.pid);
                }
            }
        }
        if packet.payload.is_empty() {
            return;
        }
        if packet.pid == 0 {
            self.section(0, packet.unit_start, packet.payload);
        } else if Some(packet.pid) == self.pmt_pid {
            self.section(packet.pid, packet.unit_start, packet.payload);
        } else if self.video.as_ref().is_some_and(|e| e.pid == packet.pid) {
            self.pes_payload(Track::Video, packet.unit_start, packet.payload, events);
        } else if self.audio.as_ref().is_some_and(|e| e.pid == packet.pid) {
            self.pes_payload(Track::Audio, packet.unit_start, packet.payload, events);
        }
    }

    fn mark_broken(&mut self, pid: u16) {
        for es in [self.video.as_mut(), self.audio.as_mut()]
            .into_iter()
            .flatten()
        {
            if es.pid == pid && !es.pes.is_empty() {
                es.broken = true;
            }
        }
        if pid == 0 || Some(pid) == self.pmt_pid {
            self.sections.remove(&pid);
        }
        if self.audio.as_ref().is_some_and(|e| e.pid == pid) {
            // Whatever ADTS bytes were pending no longer continue into the next PES.
            self.audio_clock.pending.clear();
        }
    }

    /// Reassembles PSI sections on `pid` (0 = PAT, else the PMT) and applies complete ones.
    fn section(&mut self, pid: u16, unit_start: bool, payload: &[u8]) {
        let mut complete = Vec::new();
        if unit_start {
            let pointer = usize::from(payload.first().copied().unwrap_or(0));
            let Some(tail) = payload.get(1 + pointer..) else {
                self.error(TsError::Section {
                    table: table_name(pid),
                });
                return;
            };
            if let Some(previous) = self.sections.get_mut(&pid) {
                previous.extend_from_slice(payload.get(1..1 + pointer).unwrap_or_default());
                if psi::section_size(previous).is_some_and(|size| previous.len() >= size) {
                    complete.push(std::mem::take(previous));
                }
            }
            self.sections.insert(pid, tail.to_vec());
        } else if let Some(buffer) = self.sections.get_mut(&pid) {
            if !buffer.is_empty() {
                buffer.extend_from_slice(payload);
            }
        }
        if let Some(buffer) = self.sections.get_mut(&pid) {
            if psi::section_size(buffer).is_some_and(|size| buffer.len() >= size) {
                complete.push(std::mem::take(buffer));
            } else if buffer.len() > MAX_SECTION || buffer.first() == Some(&0xff) {
                // Oversized, or stuffing where a table id should be.
                buffer.clear();
            }
        }
        for section in complete {
            if pid == 0 {
                self.apply_pat(&section);
            } else {
                self.apply_pmt(&section);
            }
        }
    }

    fn apply_pat(&mut self, section: &[u8]) {
        match psi::parse_pat(section) {
            Ok(Some(pmt_pid)) if Some(pmt_pid) != self.pmt_pid => {
                if let Some(old) = self.pmt_pid {
                    self.sections.remove(&old);
                }
                self.pmt_pid = Some(pmt_pid);
            }
            Ok(_) => {}
            Err(_) => self.error(TsError::Section { table: "PAT" }),
        }
    }

    fn apply_pmt(&mut self, section: &[u8]) {
        let streams = match psi::parse_pmt(section) {
            Ok(streams) => streams,
            Err(_) => {
                self.error(TsError::Section { table: "PMT" });
                return;
            }
        };
        let mut video = None;
        let mut audio = None;
        for es in streams {
            match es.stream_type {
                psi::STREAM_TYPE_H264 if video.is_none() => video = Some(es.pid),
                psi::STREAM_TYPE_AAC_ADTS if audio.is_none() => audio = Some(es.pid),
                other => {
                    if !self.stats.ignored_stream_types.contains(&other)
                        && self.stats.ignored_stream_types.len() < 16
                    {
                        self.stats.ignored_stream_types.push(other);
                    }
                }
            }
        }
        if self.video.as_ref().map(|e| e.pid) != video {
            self.video = video.map(|pid| Elementary::new(pid, Track::Video));
        }
        if self.audio.as_ref().map(|e| e.pid) != audio {
            self.audio = audio.map(|pid| Elementary::new(pid, Track::Audio));
            self.audio_clock = AudioClock::default();
        }
    }

    fn pes_payload(
        &mut self,
        track: Track,
        unit_start: bool,
        payload: &[u8],
        events: &mut Vec<IngestEvent>,
    ) {
        let slot = match track {
            Track::Video => &mut self.video,
            Track::Audio => &mut self.audio,
        };
        let Some(es) = slot.as_mut() else { return };
        let pid = es.pid;
        let mut finished = None;
        if unit_start {
            let previous = std::mem::replace(&mut es.pes, payload.to_vec());
            if !std::mem::take(&mut es.broken) && !previous.is_empty() {
                finished = Some(previous);
            }
        } else if !es.pes.is_empty() && !es.broken {
            es.pes.extend_from_slice(payload);
        }
        let mut too_large = false;
        if es.pes.len() > MAX_PES {
            es.pes.clear();
            es.broken = false;
            too_large = true;
        }
        // A bounded PES (audio) is complete as soon as its declared length arrived.
        let mut complete = None;
        if !es.broken {
            if let Ok(header) = pes::parse_header(&es.pes) {
                if header.total_size.is_some_and(|total| es.pes.len() >= total) {
                    complete = Some(std::mem::take(&mut es.pes));
                }
            }
        }
        let track = es.track;
        if too_large {
            self.error(TsError::Pes { pid });
        }
        if let Some(pes) = finished {
            self.finish_pes(pid, track, &pes, events);
        }
        if let Some(pes) = complete {
            self.finish_pes(pid, track, &pes, events);
        }
    }

    /// Turns one complete PES packet into events.
    fn finish_pes(&mut self, pid: u16, track: Track, pes: &[u8], events: &mut Vec<IngestEvent>) {
        let header = match pes::parse_header(pes) {
            Ok(header) => header,
            Err(_) => {
                self.error(TsError::Pes { pid });
                return;
            }
        };
        let end = header
            .total_size
            .map_or(pes.len(), |total| total.min(pes.len()));
        let data = pes.get(header.payload_offset..end).unwrap_or_default();
        match track {
            Track::Video => self.video_access_unit(pid, header, data, events),
            Track::Audio => self.audio_frames(header, data, events),
        }
    }

    fn video_access_unit(
        &mut self,
        pid: u16,
        header: pes::PesHeader,
        data: &[u8],
        events: &mut Vec<IngestEvent>,
    ) {
        let Some(pts) = header.pts else {
            self.error(TsError::NoTimestamp { pid });
            return;
        };
        let raw_dts = header.dts.unwrap_or(pts);
        let unit = h264::convert(data);
        if let Some((sps, pps)) = &unit.parameter_sets {
            match h264::config(sps, pps) {
                Ok(config) => {
                    if self.video_record.as_ref() != Some(&config.record) {
                        self.video_record = Some(config.record.clone());
                        self.emit_video(IngestEvent::VideoConfig(config), events);
                        if let Some(audio) = self.audio_waiting.take() {
                            self.emit_audio_config(audio, events);
                        }
                    }
                }
                Err(error) => self.error(TsError::ParameterSets(error)),
            }
        }
        if unit.avcc.is_empty() {
            return;
        }
        if self.video_record.is_none() {
            self.stats.video_before_config += 1;
            return;
        }
        let dts = self.clock.unwrap(raw_dts);
        let cts = clock::composition_offset(pts, raw_dts);
        self.stats.video_frames += 1;
        let frame = IngestEvent::Frame(MediaFrame {
            track: Track::Video,
            dts: MediaTime::new(dts, TIMESCALE),
            cts: i32::try_from(cts).unwrap_or(0),
            keyframe: unit.keyframe,
            data: unit.avcc,
        });
        self.emit_video(frame, events);
    }

    /// Sends a video event, or holds it while the start waits for the audio configuration.
    fn emit_video(&mut self, event: IngestEvent, events: &mut Vec<IngestEvent>) {
        let waiting = !self.hold_expired && self.audio.is_some() && self.audio_asc.is_none();
        if !waiting {
            events.push(event);
            return;
        }
        self.held.push(event);
        let dts = |e: &IngestEvent| match e {
            IngestEvent::Frame(f) => Some(f.dts.ticks),
            _ => None,
        };
        let first = self.held.iter().find_map(dts);
        let last = self.held.iter().rev().find_map(dts);
        if let (Some(first), Some(last)) = (first, last) {
            if last - first > MAX_HOLD_TICKS {
                self.hold_expired = true;
                events.append(&mut self.held);
            }
        }
    }

    /// Sends a new audio configuration; at the start it goes after the held video
    /// configuration and before the held video frames (the order RTMP publishers use).
    fn emit_audio_config(&mut self, config: crate::AacConfig, events: &mut Vec<IngestEvent>) {
        self.audio_asc = Some(config.asc.clone());
        let (configs, frames): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|e| matches!(e, IngestEvent::VideoConfig(_)));
        events.extend(configs);
        events.push(IngestEvent::AudioConfig(config));
        events.extend(frames);
    }

    fn audio_frames(&mut self, header: pes::PesHeader, data: &[u8], events: &mut Vec<IngestEvent>) {
        if let Some(pts) = header.pts {
            let at = self.clock.unwrap(pts);
            if self.audio_clock.pending.is_empty() || self.audio_clock.anchor.is_none() {
                self.audio_clock.pending.clear();
                self.audio_clock.anchor = Some(at);
                self.audio_clock.samples = 0;
            }
        }
        if self.audio_clock.anchor.is_none() {
            // Audio before any timestamp cannot be placed.
            return;
        }
        self.audio_clock.pending.extend_from_slice(data);
        let mut offset = 0;
        let mut bad = false;
        loop {
            let rest = self.audio_clock.pending.get(offset..).unwrap_or_default();
            match adts::parse_header(rest) {
                Err(adts::AdtsError::Truncated) => break,
                Err(_) => {
                    bad = true;
                    // Resynchronise on the next syncword candidate.
                    offset += rest
                        .iter()
                        .skip(1)
                        .position(|&b| b == 0xff)
                        .map_or(rest.len(), |p| p + 1);
                }
                Ok(frame) => {
                    let Some(raw) = rest.get(frame.header_len..frame.frame_len) else {
                        break;
                    };
                    let raw = Bytes::copy_from_slice(raw);
                    offset += frame.frame_len;
                    if self.video.is_some() && self.video_record.is_none() {
                        // Configs go out video first, as RTMP publishers send them (the stream
                        // task plans its renditions on the first video config); audio before
                        // the first video config precedes the first keyframe and is not
                        // packaged anyway.
                        self.stats.audio_before_video += 1;
                        self.audio_waiting = Some(frame.config());
                        continue;
                    }
                    let config = frame.config();
                    if self.audio_asc.as_ref() != Some(&config.asc) {
                        self.emit_audio_config(config, events);
                    }
                    let anchor = self.audio_clock.anchor.unwrap_or(0);
                    let elapsed = i128::from(self.audio_clock.samples) * i128::from(TIMESCALE)
                        / i128::from(frame.sample_rate);
                    let dts = anchor.saturating_add(i64::try_from(elapsed).unwrap_or(0));
                    self.audio_clock.samples += u64::from(crate::AacConfig::SAMPLES_PER_FRAME);
                    self.stats.audio_frames += 1;
                    events.push(IngestEvent::Frame(MediaFrame {
                        track: Track::Audio,
                        dts: MediaTime::new(dts, TIMESCALE),
                        cts: 0,
                        keyframe: true,
                        data: raw,
                    }));
                }
            }
        }
        self.audio_clock
            .pending
            .drain(..offset.min(self.audio_clock.pending.len()));
        if self.audio_clock.pending.len() > MAX_AUDIO_PENDING {
            self.audio_clock.pending.clear();
            bad = true;
        }
        if bad {
            self.error(TsError::Adts);
        }
    }
}

fn table_name(pid: u16) -> &'static str {
    if pid == 0 {
        "PAT"
    } else {
        "PMT"
    }
}

#[cfg(test)]
mod tests;

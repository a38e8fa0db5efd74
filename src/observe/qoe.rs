//! Viewer QoE per stream, aggregated from the CMCD that players send with their requests.
//!
//! A session is a CMCD `sid`. Startup time is the time from a session's first request to its
//! first request without `su` (the player stopped reporting start-up). Sessions idle for longer
//! than the window are forgotten; memory per stream is bounded. Exposed as Prometheus metrics
//! (label `stream` only) and as a JSON snapshot for the API.

use super::cmcd::Cmcd;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Sessions tracked per stream at most; beyond it new sessions are counted but not tracked.
const MAX_SESSIONS: usize = 100_000;
/// Recent samples kept per stream for percentiles.
const MAX_SAMPLES: usize = 2_000;

#[derive(Debug)]
struct Session {
    first_seen: Instant,
    last_seen: Instant,
    startup: Option<Duration>,
    saw_startup_flag: bool,
    last_bitrate_kbps: Option<u64>,
}

#[derive(Debug, Default)]
struct StreamQoe {
    sessions: HashMap<String, Session>,
    startup_secs: VecDeque<f64>,
    buffer_ms: VecDeque<u64>,
    throughput_kbps: VecDeque<u64>,
    bitrates: HashMap<u64, u64>,
    starvations: u64,
    switches: u64,
    requests: u64,
}

fn push_bounded<T>(samples: &mut VecDeque<T>, value: T) {
    if samples.len() == MAX_SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value);
}

/// Percentiles of a sample set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest sample.
    pub max: f64,
}

fn distribution(samples: impl Iterator<Item = f64>) -> Option<Distribution> {
    let mut sorted: Vec<f64> = samples.collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some(Distribution {
        count: sorted.len(),
        p50: at(0.5),
        p90: at(0.9),
        max: at(1.0),
    })
}

/// What the QoE endpoint reports for one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QoeSnapshot {
    /// The stream.
    pub stream: String,
    /// Sessions seen within the window.
    pub sessions: usize,
    /// Requests that carried CMCD.
    pub requests: u64,
    /// Startup times in seconds, of sessions that reported `su`.
    pub startup_seconds: Option<Distribution>,
    /// Buffer starvation events (`bs`).
    pub buffer_starvations: u64,
    /// Buffer length in milliseconds (`bl`).
    pub buffer_length_ms: Option<Distribution>,
    /// Requests per encoded bitrate in kbps (`br`).
    pub requested_bitrate_kbps: std::collections::BTreeMap<u64, u64>,
    /// Bitrate changes within sessions (ABR switches).
    pub bitrate_switches: u64,
    /// Measured throughput in kbps (`mtp`).
    pub throughput_kbps: Option<Distribution>,
}

/// QoE aggregates for every stream.
#[derive(Debug)]
pub struct Qoe {
    window: Duration,
    streams: Mutex<HashMap<String, StreamQoe>>,
}

impl Qoe {
    /// Aggregates sessions active within `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            streams: Mutex::default(),
        }
    }

    /// Accounts one request's CMCD for `stream` (a stream that exists: the caller checks).
    pub fn record(&self, stream: &str, cmcd: &Cmcd) {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let qoe = streams.entry(stream.to_owned()).or_default();
        qoe.requests += 1;
        let labels = [("stream", stream.to_owned())];
        if cmcd.starved {
            qoe.starvations += 1;
            metrics::counter!("headwater_qoe_buffer_starvations_total", &labels).increment(1);
        }
        if let Some(bl) = cmcd.buffer_ms {
            push_bounded(&mut qoe.buffer_ms, bl);
            metrics::histogram!("headwater_qoe_buffer_length_seconds", &labels)
                .record(bl as f64 / 1000.0);
        }
        if let Some(mtp) = cmcd.throughput_kbps {
            push_bounded(&mut qoe.throughput_kbps, mtp);
            metrics::histogram!("headwater_qoe_throughput_bits_per_second", &labels)
                .record(mtp as f64 * 1000.0);
        }
        if let Some(br) = cmcd.bitrate_kbps {
            if qoe.bitrates.len() < 64 || qoe.bitrates.contains_key(&br) {
                *qoe.bitrates.entry(br).or_default() += 1;
            }
            metrics::histogram!("headwater_qoe_requested_bitrate_bits_per_second", &labels)
                .record(br as f64 * 1000.0);
        }
        let Some(sid) = &cmcd.session else {
            return;
        };
        if qoe.sessions.len() >= MAX_SESSIONS && !qoe.sessions.contains_key(sid) {
            let window = self.window;
            qoe.sessions
                .retain(|_, s| now.duration_since(s.last_seen) <= window);
            if qoe.sessions.len() >= MAX_SESSIONS {
                return;
            }
        }
        let session = qoe.sessions.entry(sid.clone()).or_insert_with(|| Session {
            first_seen: now,
            last_seen: now,
            startup: None,
            saw_startup_flag: false,
            last_bitrate_kbps: None,
        });
        session.last_seen = now;
        if cmcd.startup {
            session.saw_startup_flag = true;
        } else if session.saw_startup_flag && session.startup.is_none() {
            let startup = now.duration_since(session.first_seen);
            session.startup = Some(startup);
            push_bounded(&mut qoe.startup_secs, startup.as_secs_f64());
            metrics::histogram!("headwater_qoe_startup_seconds", &labels)
                .record(startup.as_secs_f64());
        }
        if let Some(br) = cmcd.bitrate_kbps {
            if session.last_bitrate_kbps.is_some_and(|last| last != br) {
                qoe.switches += 1;
                metrics::counter!("headwater_qoe_bitrate_switches_total", &labels).increment(1);
            }
            session.last_bitrate_kbps = Some(br);
        }
    }

    /// The current aggregates of `stream`, or `None` when no player reported CMCD for it.
    pub fn snapshot(&self, stream: &str) -> Option<QoeSnapshot> {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let qoe = streams.get_mut(stream)?;
        let window = self.window;
        qoe.sessions
            .retain(|_, s| now.duration_since(s.last_seen) <= window);
        metrics::gauge!("headwater_qoe_sessions", "stream" => stream.to_owned())
            .set(qoe.sessions.len() as f64);
        Some(QoeSnapshot {
            stream: stream.to_owned(),
            sessions: qoe.sessions.len(),
            requests: qoe.requests,
            startup_seconds: distribution(qoe.startup_secs.iter().copied()),
            buffer_starvations: qoe.starvations,
            buffer_length_ms: distribution(qoe.buffer_ms.iter().map(|&v| v as f64)),
            requested_bitrate_kbps: qoe.bitrates.iter().map(|(k, v)| (*k, *v)).collect(),
            bitrate_switches: qoe.switches,
            throughput_kbps: distribution(qoe.throughput_kbps.iter().map(|&v| v as f64)),
        })
    }

    /// Refreshes the per-stream session gauges (called before each scrape).
    pub fn refresh_gauges(&self) {
        let names: Vec<String> = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for name in names {
            let _ = self.snapshot(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmcd(sid: &str, su: bool, br: u64) -> Cmcd {
        Cmcd {
            session: Some(sid.into()),
            startup: su,
            bitrate_kbps: Some(br),
            buffer_ms: Some(1000),
            ..Cmcd::default()
        }
    }

    #[test]
    fn startup_switches_and_starvation() {
        let qoe = Qoe::new(Duration::from_secs(60));
        qoe.record("s", &cmcd("a", true, 800));
        std::thread::sleep(Duration::from_millis(30));
        qoe.record("s", &cmcd("a", true, 800));
        qoe.record("s", &cmcd("a", false, 1400));
        qoe.record(
            "s",
            &Cmcd {
                starved: true,
                ..cmcd("a", false, 800)
            },
        );
        qoe.record("s", &cmcd("b", false, 800));
        let snapshot = qoe.snapshot("s").expect("stream");
        assert_eq!(snapshot.sessions, 2);
        assert_eq!(snapshot.requests, 5);
        let startup = snapshot.startup_seconds.expect("one startup");
        assert_eq!(
            startup.count, 1,
            "only the session that reported su has a startup time"
        );
        assert!(startup.p50 >= 0.03, "{startup:?}");
        assert_eq!(snapshot.bitrate_switches, 2);
        assert_eq!(snapshot.buffer_starvations, 1);
        assert_eq!(snapshot.requested_bitrate_kbps.get(&800), Some(&4));
        assert!(qoe.snapshot("other").is_none());
    }

    #[test]
    fn idle_sessions_leave_the_window() {
        let qoe = Qoe::new(Duration::from_millis(20));
        qoe.record("s", &cmcd("a", false, 800));
        std::thread::sleep(Duration::from_millis(40));
        qoe.record("s", &cmcd("b", false, 800));
        assert_eq!(qoe.snapshot("s").expect("stream").sessions, 1);
    }
}

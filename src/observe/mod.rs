//! Observability: the Prometheus recorder behind the `metrics` facade, process metrics, CMCD
//! parsing and viewer QoE aggregates, readiness, and tracing logs.
//!
//! A leaf module: everyone may record metrics; only `main` (or a test) installs the recorder.
//! Metric names follow `headwater_<area>_<what>_<unit>`; labels are bounded (route class,
//! method, status class, protocol, stream name, tier), never a path or a client address.

pub mod batched;
pub mod cmcd;
pub mod qoe;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Buckets for request and fetch durations (seconds).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for viewer startup time and buffer length (seconds).
const PLAYER_SECONDS_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0];
/// Buckets for bitrates and throughput (bits per second).
const BITRATE_BUCKETS: [f64; 10] = [2e5, 4e5, 8e5, 1.5e6, 3e6, 5e6, 8e6, 1.2e7, 2.5e7, 5e7];

/// The installed recorder and the process collector; renders `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Installs the process-wide Prometheus recorder. Durations, QoE times and bitrates are
    /// histograms with fixed buckets; other histograms (segment publish latency) are rendered as
    /// summaries with exact quantiles over a sliding window.
    pub fn install() -> Result<Self, metrics_exporter_prometheus::BuildError> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".into()),
                &DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full("headwater_qoe_startup_seconds".into()),
                &PLAYER_SECONDS_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full("headwater_qoe_buffer_length_seconds".into()),
                &PLAYER_SECONDS_BUCKETS,
            )?
            .set_buckets_for_metric(Matcher::Suffix("_bits_per_second".into()), &BITRATE_BUCKETS)?
            .install_recorder()?;
        let process = metrics_process::Collector::new("headwater_");
        process.describe();
        Ok(Self { handle, process })
    }

    /// Collects process metrics (RSS, CPU, open fds ...) and renders the exposition text.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// Installs the recorder and returns its handle (see [`Metrics::install`]).
pub fn install_metrics() -> Result<Metrics, metrics_exporter_prometheus::BuildError> {
    Metrics::install()
}

/// Whether this node should receive traffic (`/readyz`): set once every listener is bound and
/// the cache is open, cleared when shutdown begins so load balancers drain it first.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the node ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the log flushing thread; dropping it writes out every pending line.
pub type LogGuard = batched::BatchGuard<std::io::Stderr>;

/// Sets up `tracing` output on stderr, batched (see [`batched`]); `RUST_LOG` overrides the
/// default `info` filter. Keep the guard until exit; `None` when the flushing thread could not
/// start (lines then go straight to stderr).
pub fn init_logging(format: LogFormat) -> Option<LogGuard> {
    match batched::batched(std::io::stderr()) {
        Ok((writer, guard)) => {
            install_logging(format, writer);
            Some(guard)
        }
        Err(_) => {
            install_logging(format, std::io::stderr);
            None
        }
    }
}

fn install_logging<W>(format: LogFormat, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: in files and journals they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorded_metrics_are_rendered() {
        let handle = super::install_metrics().expect("install");
        metrics::counter!("headwater_test_total", "route" => "x").increment(3);
        metrics::histogram!("headwater_test_duration_seconds").record(0.003);
        let text = handle.render();
        assert!(
            text.contains("headwater_test_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("headwater_process_resident_memory_bytes"),
            "{text}"
        );
        assert!(
            text.contains("headwater_test_total{route=\"x\"} 3"),
            "{text}"
        );
    }
}

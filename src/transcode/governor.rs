//! The governor: measures how far a stream's transcoded rungs run behind its source and how fast
//! they produce media, and decides which rung to shed when the machine cannot keep up.
//!
//! Lag = newest source presentation time handed to the decoder - newest presentation time the
//! slowest active rung has encoded. When it exceeds `max_lag`, the most expensive active rung
//! (pixels per second) is shed; the next one at the earliest `max_lag` of wall time later, so
//! the remaining rungs get a chance to catch up. The last rendition of a stream is never shed.
//! Pure logic: time is passed in.

use super::gop::TIMESCALE;
use std::time::{Duration, Instant};

/// Window over which the realtime factor is measured.
const RATE_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct RungState {
    cost: f64,
    active: bool,
    newest_pts: Option<i64>,
}

/// Per-stream lag and rate tracking; see the module docs.
#[derive(Debug, Clone)]
pub struct Governor {
    max_lag: i64,
    max_lag_wall: Duration,
    /// Renditions that are not transcoded (the passthrough source) and always stay.
    others: usize,
    rungs: Vec<RungState>,
    first_input_pts: Option<i64>,
    newest_input_pts: Option<i64>,
    last_shed: Option<Instant>,
    window: Option<(Instant, i64)>,
    realtime_factor: Option<f64>,
}

impl Governor {
    /// A governor for rungs of the given costs; `others` renditions are never shed.
    pub fn new(costs: &[f64], others: usize, max_lag: Duration) -> Self {
        let max_lag_ms = i64::try_from(max_lag.as_millis()).unwrap_or(i64::MAX / 90);
        Self {
            max_lag: max_lag_ms.saturating_mul(i64::from(TIMESCALE) / 1000),
            max_lag_wall: max_lag,
            others,
            rungs: costs
                .iter()
                .map(|&cost| RungState {
                    cost,
                    active: true,
                    newest_pts: None,
                })
                .collect(),
            first_input_pts: None,
            newest_input_pts: None,
            last_shed: None,
            window: None,
            realtime_factor: None,
        }
    }

    /// A source picture (presentation time, output ticks) was handed to the decoder.
    pub fn input(&mut self, pts: i64) {
        self.first_input_pts.get_or_insert(pts);
        self.newest_input_pts = Some(self.newest_input_pts.map_or(pts, |n| n.max(pts)));
    }

    /// A rung produced a frame presented at `pts`.
    pub fn output(&mut self, rung: usize, pts: i64) {
        if let Some(r) = self.rungs.get_mut(rung) {
            r.newest_pts = Some(r.newest_pts.map_or(pts, |n| n.max(pts)));
        }
    }

    /// A rung stopped (shed, failed or finished): it no longer counts.
    pub fn stopped(&mut self, rung: usize) {
        if let Some(r) = self.rungs.get_mut(rung) {
            r.active = false;
        }
    }

    /// Whether the rung still counts.
    pub fn is_active(&self, rung: usize) -> bool {
        self.rungs.get(rung).is_some_and(|r| r.active)
    }

    /// Presentation time the slowest active rung has reached.
    fn slowest(&self) -> Option<i64> {
        self.rungs
            .iter()
            .filter(|r| r.active)
            .map(|r| r.newest_pts.or(self.first_input_pts).unwrap_or(0))
            .min()
    }

    /// How far the slowest active rung runs behind the source.
    pub fn lag(&self) -> Option<Duration> {
        let ticks = self.newest_input_pts? - self.slowest()?;
        Some(Duration::from_secs_f64(
            ticks.max(0) as f64 / f64::from(TIMESCALE),
        ))
    }

    /// Media seconds the slowest active rung produced per wall second, over the last window
    /// (about 1.0 when keeping up with a live source; below 1.0 when falling behind).
    pub fn realtime_factor(&mut self, now: Instant) -> Option<f64> {
        let slowest = self.slowest()?;
        match self.window {
            Some((start, pts)) if now.duration_since(start) >= RATE_WINDOW => {
                let media = (slowest - pts) as f64 / f64::from(TIMESCALE);
                self.realtime_factor = Some(media / now.duration_since(start).as_secs_f64());
                self.window = Some((now, slowest));
            }
            Some(_) => {}
            None => self.window = Some((now, slowest)),
        }
        self.realtime_factor
    }

    /// The rung to shed now, if any: the most expensive active one, when the lag exceeds the
    /// limit and the last shed was at least `max_lag` ago. The caller sheds it and reports
    /// [`Governor::stopped`].
    pub fn shed(&mut self, now: Instant) -> Option<usize> {
        let lag = self.newest_input_pts? - self.slowest()?;
        if lag <= self.max_lag {
            return None;
        }
        if self
            .last_shed
            .is_some_and(|at| now.duration_since(at) < self.max_lag_wall)
        {
            return None;
        }
        let active = self.rungs.iter().filter(|r| r.active).count();
        if self.others == 0 && active <= 1 {
            return None;
        }
        let (index, _) = self
            .rungs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.active)
            .max_by(|a, b| a.1.cost.total_cmp(&b.1.cost))?;
        self.last_shed = Some(now);
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = TIMESCALE as i64;

    #[test]
    fn sheds_the_most_expensive_rung_then_waits() {
        let mut g = Governor::new(&[3.0, 9.0, 1.0], 1, Duration::from_secs(2));
        let t0 = Instant::now();
        g.input(0);
        for rung in 0..3 {
            g.output(rung, 0);
        }
        g.input(2 * SEC);
        assert_eq!(g.shed(t0), None, "exactly at the limit is fine");
        g.input(3 * SEC);
        assert_eq!(g.lag(), Some(Duration::from_secs(3)));
        assert_eq!(g.shed(t0), Some(1));
        g.stopped(1);
        assert_eq!(g.shed(t0 + Duration::from_secs(1)), None, "cool-down");
        assert_eq!(g.shed(t0 + Duration::from_secs(2)), Some(0));
        g.stopped(0);
        g.output(2, 3 * SEC);
        assert_eq!(g.shed(t0 + Duration::from_secs(9)), None, "caught up");
    }

    #[test]
    fn the_last_rendition_is_never_shed() {
        let mut g = Governor::new(&[3.0], 0, Duration::from_secs(1));
        g.input(0);
        g.input(10 * SEC);
        assert_eq!(g.shed(Instant::now()), None);
        let mut with_source = Governor::new(&[3.0], 1, Duration::from_secs(1));
        with_source.input(0);
        with_source.input(10 * SEC);
        assert_eq!(with_source.shed(Instant::now()), Some(0));
    }

    #[test]
    fn realtime_factor_over_a_window() {
        let mut g = Governor::new(&[1.0], 1, Duration::from_secs(4));
        let t0 = Instant::now();
        g.input(0);
        g.output(0, 0);
        assert_eq!(g.realtime_factor(t0), None);
        g.output(0, 3 * SEC);
        let rate = g
            .realtime_factor(t0 + Duration::from_secs(2))
            .expect("measured");
        assert!((rate - 1.5).abs() < 1e-9, "{rate}");
    }
}

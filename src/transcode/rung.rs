//! Rungs: the configured transcoded renditions resolved against one source (output size, frame
//! rate, cost), and which of them a source skips.

use crate::config::RenditionConfig;
use crate::names::RenditionName;

/// One transcoded rendition of one stream, resolved against its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    /// The configured rendition.
    pub config: RenditionConfig,
    /// Output width in pixels (even; keeps the source's aspect ratio).
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Output frame rate: the source's, capped at `max_fps`.
    pub fps: f64,
}

impl Rung {
    /// The rendition's name.
    pub fn name(&self) -> &RenditionName {
        &self.config.name
    }

    /// Relative encoding cost (pixels per second); the most expensive rung is shed first.
    pub fn cost(&self) -> f64 {
        f64::from(self.width) * f64::from(self.height) * self.fps
    }

    /// The configured VBV maximum rate in bits per second.
    pub fn maxrate_bps(&self) -> u64 {
        u64::from(self.config.maxrate_kbps) * 1000
    }
}

/// Width for `height` keeping the aspect ratio of `source` (width, height), rounded to the
/// nearest even number (as ffmpeg's `scale=-2:height`).
pub fn scaled_width(source: (u32, u32), height: u32) -> u32 {
    let (w, h) = (u64::from(source.0), u64::from(source.1.max(1)));
    let half = (w * u64::from(height) + h) / (2 * h);
    u32::try_from((half * 2).max(2)).unwrap_or(u32::MAX - 1)
}

/// The rungs a source of `size` (width, height) at `fps` gets, and the names of those skipped
/// because they are taller than the source.
pub fn plan(
    renditions: &[RenditionConfig],
    size: (u32, u32),
    fps: f64,
) -> (Vec<Rung>, Vec<RenditionName>) {
    let mut rungs = Vec::new();
    let mut skipped = Vec::new();
    for config in renditions {
        if config.height > size.1 {
            skipped.push(config.name.clone());
            continue;
        }
        rungs.push(Rung {
            width: scaled_width(size, config.height),
            height: config.height,
            fps: fps.min(f64::from(config.max_fps)),
            config: config.clone(),
        });
    }
    (rungs, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LadderConfig;

    #[test]
    fn taller_rungs_are_skipped_and_widths_keep_the_aspect() {
        let ladder = LadderConfig::default();
        let (rungs, skipped) = plan(&ladder.renditions, (640, 360), 30.0);
        assert_eq!(skipped.len(), 2, "720p and 480p are taller than 360");
        assert_eq!((rungs[0].width, rungs[0].height), (640, 360));
        let (rungs, skipped) = plan(&ladder.renditions, (1280, 720), 60.0);
        assert!(skipped.is_empty());
        let sizes: Vec<_> = rungs.iter().map(|r| (r.width, r.height, r.fps)).collect();
        assert_eq!(
            sizes,
            [(1280, 720, 30.0), (854, 480, 30.0), (640, 360, 30.0)]
        );
        assert_eq!(scaled_width((1440, 1080), 240), 320);
        assert_eq!(scaled_width((1000, 1000), 33), 34);
        assert_eq!(scaled_width((640, 360), 240), 426);
    }
}

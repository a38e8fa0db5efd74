//! `[ladder]`: the renditions every published stream is turned into.

use super::{invalid, ConfigError};
use crate::names::{RenditionName, StreamName};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// x264 presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// H.264 profiles an encoded rendition may use.
pub const H264_PROFILES: [&str; 3] = ["baseline", "main", "high"];

/// The name of the passthrough rendition.
pub const SOURCE_RENDITION: &str = "source";

/// `[ladder]`: the adaptive bitrate ladder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderConfig {
    /// Include the publisher's H.264 copied as-is (no re-encode) as the rendition `source`.
    /// Segments can then only be cut on the source's keyframes. Default `true`.
    pub source: bool,
    /// When a stream's slowest transcoded rendition falls this far behind its source, the
    /// stream's most expensive transcoded rendition is shed (logged, counted in metrics, its
    /// playlist ended). At least 1s. Default `4s`.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// Transcoded renditions (libx264). Those taller than the source are skipped.
    #[serde(default)]
    pub renditions: Vec<RenditionConfig>,
    /// Per-stream ladders replacing `source` and `renditions` for one stream.
    #[serde(default)]
    pub overrides: Vec<LadderOverride>,
}

/// One `[[ladder.renditions]]` entry: an H.264 rendition encoded with libx264.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionConfig {
    /// Name in URLs (`/live/<stream>/<name>/index.m3u8`); `source` is reserved.
    pub name: RenditionName,
    /// Output height in pixels (even); the width keeps the source's aspect ratio.
    pub height: u32,
    /// Target video bitrate in kbit/s (x264 ABR).
    pub video_kbps: u32,
    /// VBV maximum rate in kbit/s; at least `video_kbps`.
    pub maxrate_kbps: u32,
    /// VBV buffer size in kbit.
    pub bufsize_kbps: u32,
    /// x264 preset, `ultrafast` to `placebo`.
    pub preset: String,
    /// H.264 profile: `baseline`, `main` or `high`.
    pub profile: String,
    /// Frame rate cap in frames per second; faster sources drop frames evenly.
    pub max_fps: u32,
}

/// One `[[ladder.overrides]]` entry: the ladder of one stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderOverride {
    /// The stream this ladder applies to.
    pub stream: StreamName,
    /// As `ladder.source`.
    pub source: bool,
    /// As `ladder.renditions`.
    #[serde(default)]
    pub renditions: Vec<RenditionConfig>,
}

/// The ladder one stream uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLadder {
    /// Include the passthrough `source` rendition.
    pub source: bool,
    /// Transcoded renditions.
    pub renditions: Vec<RenditionConfig>,
    /// See [`LadderConfig::max_lag`].
    pub max_lag: Duration,
}

fn rung(
    name: &str,
    height: u32,
    video_kbps: u32,
    maxrate_kbps: u32,
    profile: &str,
) -> RenditionConfig {
    RenditionConfig {
        name: RenditionName::parse(name).expect("literal is a valid name"),
        height,
        video_kbps,
        maxrate_kbps,
        bufsize_kbps: video_kbps * 2,
        preset: "veryfast".into(),
        profile: profile.into(),
        max_fps: 30,
    }
}

impl Default for LadderConfig {
    /// Source + 720p 3000k, 480p 1400k, 360p 800k (x264 veryfast, 30 fps cap).
    fn default() -> Self {
        Self {
            source: true,
            max_lag: Duration::from_secs(4),
            renditions: vec![
                rung("720p", 720, 3000, 3300, "high"),
                rung("480p", 480, 1400, 1540, "high"),
                rung("360p", 360, 800, 880, "main"),
            ],
            overrides: Vec::new(),
        }
    }
}

impl LadderConfig {
    /// Only the source, passed through: no transcoding.
    pub fn passthrough() -> Self {
        Self {
            renditions: Vec::new(),
            ..Self::default()
        }
    }

    /// The ladder of `stream`: its override, or the default.
    pub fn for_stream(&self, stream: &StreamName) -> StreamLadder {
        match self.overrides.iter().find(|o| &o.stream == stream) {
            Some(o) => StreamLadder {
                source: o.source,
                renditions: o.renditions.clone(),
                max_lag: self.max_lag,
            },
            None => StreamLadder {
                source: self.source,
                renditions: self.renditions.clone(),
                max_lag: self.max_lag,
            },
        }
    }

    /// Checks every rendition; the error names the field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_lag < Duration::from_secs(1) {
            return Err(invalid("ladder.max_lag", "must be at least 1s"));
        }
        validate_renditions("ladder", self.source, &self.renditions)?;
        let mut streams = HashSet::new();
        for (i, o) in self.overrides.iter().enumerate() {
            let path = format!("ladder.overrides[{i}]");
            if !streams.insert(&o.stream) {
                return Err(invalid(format!("{path}.stream"), "is listed twice"));
            }
            validate_renditions(&path, o.source, &o.renditions)?;
        }
        Ok(())
    }
}

fn validate_renditions(
    path: &str,
    source: bool,
    renditions: &[RenditionConfig],
) -> Result<(), ConfigError> {
    if !source && renditions.is_empty() {
        return Err(invalid(
            format!("{path}.renditions"),
            "must list at least one rendition when source = false",
        ));
    }
    let mut names = HashSet::new();
    for (i, r) in renditions.iter().enumerate() {
        let field = |name: &str| format!("{path}.renditions[{i}].{name}");
        if r.name.as_str() == SOURCE_RENDITION {
            return Err(invalid(
                field("name"),
                "\"source\" is reserved for the passthrough rendition",
            ));
        }
        if !names.insert(r.name.as_str()) {
            return Err(invalid(field("name"), "is listed twice"));
        }
        if r.height % 2 != 0 || !(32..=4320).contains(&r.height) {
            return Err(invalid(
                field("height"),
                "must be an even number of pixels from 32 to 4320",
            ));
        }
        if r.video_kbps == 0 || r.video_kbps > 200_000 {
            return Err(invalid(field("video_kbps"), "must be from 1 to 200000"));
        }
        if r.maxrate_kbps < r.video_kbps || r.maxrate_kbps > 400_000 {
            return Err(invalid(
                field("maxrate_kbps"),
                "must be at least video_kbps and at most 400000",
            ));
        }
        if r.bufsize_kbps == 0 || r.bufsize_kbps > 800_000 {
            return Err(invalid(field("bufsize_kbps"), "must be from 1 to 800000"));
        }
        if !X264_PRESETS.contains(&r.preset.as_str()) {
            return Err(invalid(
                field("preset"),
                format!(
                    "unknown x264 preset {:?}; one of {}",
                    r.preset,
                    X264_PRESETS.join(", ")
                ),
            ));
        }
        if !H264_PROFILES.contains(&r.profile.as_str()) {
            return Err(invalid(
                field("profile"),
                format!(
                    "unknown H.264 profile {:?}; one of {}",
                    r.profile,
                    H264_PROFILES.join(", ")
                ),
            ));
        }
        if r.max_fps == 0 || r.max_fps > 240 {
            return Err(invalid(field("max_fps"), "must be from 1 to 240"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{assert_refused_edits, Config, DEFAULT_TOML};

    #[test]
    fn bad_ladders_name_their_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "preset = \"veryfast\"",
                "preset = \"fastish\"",
                "ladder.renditions[0].preset: unknown x264 preset \"fastish\"; one of ultrafast, \
                 superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo",
            ),
            (
                "video_kbps = 1400",
                "video_kbps = 0",
                "ladder.renditions[1].video_kbps: must be from 1 to 200000",
            ),
            (
                "height = 360",
                "height = 361",
                "ladder.renditions[2].height: must be an even number of pixels from 32 to 4320",
            ),
            (
                "maxrate_kbps = 3300",
                "maxrate_kbps = 2000",
                "ladder.renditions[0].maxrate_kbps: must be at least video_kbps and at most 400000",
            ),
            (
                "profile = \"main\"",
                "profile = \"high10\"",
                "ladder.renditions[2].profile: unknown H.264 profile \"high10\"; one of baseline, \
                 main, high",
            ),
            (
                "name = \"480p\"",
                "name = \"source\"",
                "ladder.renditions[1].name: \"source\" is reserved for the passthrough rendition",
            ),
            (
                "max_lag = \"4s\"",
                "max_lag = \"10ms\"",
                "ladder.max_lag: must be at least 1s",
            ),
        ];
        assert_refused_edits(cases);
    }

    #[test]
    fn overrides_replace_the_ladder_of_one_stream() {
        let text = format!(
            "{DEFAULT_TOML}\n[[ladder.overrides]]\nstream = \"demo\"\nsource = false\n\
             [[ladder.overrides.renditions]]\nname = \"low\"\nheight = 240\nvideo_kbps = 400\n\
             maxrate_kbps = 440\nbufsize_kbps = 800\npreset = \"ultrafast\"\nprofile = \"main\"\n\
             max_fps = 15\n"
        );
        let config = Config::from_toml(&text).expect("valid");
        let demo = crate::names::StreamName::parse("demo").expect("name");
        let ladder = config.ladder.for_stream(&demo);
        assert!(!ladder.source);
        assert_eq!(ladder.renditions.len(), 1);
        let other = crate::names::StreamName::parse("other").expect("name");
        assert_eq!(config.ladder.for_stream(&other).renditions.len(), 3);
        let bad = text.replace("height = 240", "height = 0");
        assert_eq!(
            Config::from_toml(&bad).expect_err("bad").to_string(),
            "ladder.overrides[0].renditions[0].height: must be an even number of pixels from 32 \
             to 4320"
        );
    }
}

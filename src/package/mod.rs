//! Packaging: frames -> CMAF segments (segmenter + fMP4 muxer) and HLS playlists.
//!
//! Uses only ingest frame types; knows nothing about the store, cache or HTTP. The stream task
//! drives it and hands its output (segments, rendered playlists) to the store.

pub mod cutter;
pub mod fmp4;
pub mod playlist;
pub mod segmenter;

pub use cutter::Cutter;
pub use playlist::{BitrateStats, MediaPlaylist, VariantInfo};
pub use segmenter::{InitSection, Segment, SegmentError};

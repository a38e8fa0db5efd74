//! Headwater ingest: protocol servers that turn publishers into typed media frames.
//!
//! No FFmpeg and no HTTP here; the `headwater` crate consumes [`IngestEvent`]s through the
//! [`Publish`] hook that the RTMP server calls.

mod connections;
pub mod flv;
pub mod frame;
pub mod rtmp;
pub mod srt;
pub mod ts;

pub use frame::{AacConfig, AvcConfig, IngestEvent, MediaFrame, MediaTime, Track};

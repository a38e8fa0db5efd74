//! Transcoding: one published feed into an adaptive bitrate ladder, with FFmpeg's libraries
//! (through `ffmpeg-next`) inside the process.
//!
//! Owns the segment-boundary decision ([`gop`]) and the codec threads. Uses only ingest frame
//! types; knows nothing of packaging, the store or HTTP. The stream task drives it.

pub mod gop;

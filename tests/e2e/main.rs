//! End-to-end tests against real clients: ffmpeg publishes over RTMP, HTTP + ffprobe read HLS.

mod bad_input;
mod cdn;
mod common;
mod gstreamer;
mod hls;
mod observability;
mod ladder;
mod reconnect;
mod shield;

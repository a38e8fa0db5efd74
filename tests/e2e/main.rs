//! End-to-end tests against real clients: ffmpeg publishes over RTMP, HTTP + ffprobe read HLS.

mod api;
mod bad_input;
mod browser;
mod cdn;
mod chat;
mod clients;
mod common;
mod gstreamer;
mod hls;
mod ladder;
mod observability;
mod reconnect;
mod shield;
mod shutdown;
mod srt;
mod transports;
mod web;

//! Feeds arbitrary bytes to both FLV tag parsers: they must return, never panic.
#![no_main]

use bytes::Bytes;
use headwater_ingest::flv::{parse_audio, parse_video};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = parse_video(body.clone());
    let _ = parse_audio(body);
});

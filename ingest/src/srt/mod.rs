//! SRT ingest: a UDP listener that accepts caller-mode publishers sending MPEG-TS.
//!
//! The key comes from the SRT `streamid`, either plain (`<key>`, or `<app>/<key>`) or in the
//! access-control form (`#!::r=live/<key>,m=publish`). Publishers are authorized through the same
//! [`Publish`](crate::rtmp::Publish) hook as RTMP, before the handshake is answered, so auth, one
//! publisher per key and reconnects behave exactly as for RTMP; the transport stream is demuxed by
//! [`crate::ts`] into the same [`IngestEvent`](crate::IngestEvent)s. The protocol itself (ARQ,
//! AES, latency) is `srt-tokio`'s. This module knows nothing about streams, packaging or HTTP.

mod server;
mod stream_id;

pub use server::{bind, serve, SrtListenError, SrtSettings};
pub use stream_id::{parse_stream_id, StreamIdError, StreamTarget};

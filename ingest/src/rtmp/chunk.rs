//! The RTMP chunk stream: a sans-IO reader that reassembles messages from interleaved chunks,
//! and a writer that splits messages into chunks.
//!
//! Every chunk starts with a basic header (2 bits `fmt` and a chunk stream id, csid, in 1, 2 or
//! 3 bytes) followed by a message header whose size depends on `fmt`:
//!
//! | fmt | bytes | fields                                                                  |
//! |-----|-------|-------------------------------------------------------------------------|
//! | 0   | 11    | timestamp (24 bit), length (24), type id (8), message stream id (32 LE) |
//! | 1   | 7     | timestamp delta, length, type id                                        |
//! | 2   | 3     | timestamp delta                                                         |
//! | 3   | 0     | everything as the previous chunk on this csid                           |
//!
//! A 24-bit timestamp (or delta) of `0xFFFFFF` means a 32-bit extended timestamp follows the
//! message header. Like ffmpeg, librtmp and SRS, the extended timestamp is also present on fmt 3
//! chunks of a chunk stream whose last fmt 0/1/2 header used one, whether the fmt 3 chunk continues
//! a message or starts a new one. A fmt 3 chunk that starts a new message adds the last header's
//! timestamp field to the previous timestamp, as ffmpeg and SRS read it.
//!
//! The reader is defensive against hostile peers: all arithmetic is checked or wrapping, the
//! bytes reserved by incomplete messages across all chunk streams and the number of chunk streams
//! are capped ([`Limits`]), and a new message header on a chunk stream that still has an
//! incomplete message drops that message instead of trusting either length. It applies Set Chunk
//! Size and Abort itself (they change how the following chunks parse) and still returns them.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use tracing::debug;

/// Chunk size both directions start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size a Set Chunk Size message can carry (the high bit must be zero).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Largest message: the length field has 24 bits.
pub const MAX_MESSAGE_LEN: u32 = 0xFF_FFFF;
/// Smallest chunk stream id (0 and 1 select the 2- and 3-byte basic header forms).
pub const MIN_CSID: u32 = 2;
/// Largest chunk stream id (64 + 65535, the 3-byte form).
pub const MAX_CSID: u32 = 65_599;
/// A 24-bit timestamp field with this value means an extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Bytes of payload allocated for a new message before its data arrives beyond that, so a
/// declared length alone never makes us allocate much.
const INITIAL_RESERVE: usize = 64 * 1024;

/// RTMP message type ids used by the chunk layer and the session.
pub mod msg_type {
    /// Set Chunk Size (protocol control).
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (protocol control).
    pub const ABORT: u8 = 2;
    /// Acknowledgement (protocol control).
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (protocol control).
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (protocol control).
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3 encoded.
    pub const DATA_AMF3: u8 = 15;
    /// Command message, AMF3 encoded (a format byte, then AMF0 in practice).
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 encoded (`@setDataFrame`, `onMetaData`).
    pub const DATA_AMF0: u8 = 18;
    /// Command message, AMF0 encoded (`connect`, `publish`, ...).
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message.
    pub const AGGREGATE: u8 = 22;
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream id it arrived on (or is to be sent on).
    pub csid: u32,
    /// Timestamp in milliseconds (32 bits, wraps).
    pub timestamp: u32,
    /// Message type id, see [`msg_type`].
    pub type_id: u8,
    /// Message stream id (0 for connection-level messages).
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Resource limits of a [`ChunkReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sum of the declared lengths of all incomplete messages.
    pub max_partial_bytes: usize,
    /// Number of distinct chunk stream ids a peer may use.
    pub max_chunk_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_partial_bytes: 32 * 1024 * 1024,
            max_chunk_streams: 64,
        }
    }
}

/// Why the chunk stream cannot be read further. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A fmt 2 or 3 chunk on a chunk stream that never had a full header.
    #[error("chunk of type {fmt} on chunk stream {csid}, which has no previous header")]
    NoPreviousHeader {
        /// The chunk stream id.
        csid: u32,
        /// The chunk type.
        fmt: u8,
    },
    /// The peer opened more chunk streams than [`Limits::max_chunk_streams`].
    #[error("more than {0} chunk streams")]
    TooManyChunkStreams(usize),
    /// Incomplete messages would reserve more than [`Limits::max_partial_bytes`].
    #[error("incomplete messages would hold {needed} bytes (limit {limit})")]
    TooMuchBuffered {
        /// Bytes that would be reserved.
        needed: usize,
        /// The limit.
        limit: usize,
    },
    /// Set Chunk Size with 0 (after clearing the reserved high bit).
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    /// A protocol control message too short for its fields.
    #[error("truncated {0} message")]
    TruncatedControl(&'static str),
}

/// Why a message cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The chunk stream id is outside 2..=65599.
    #[error("chunk stream id {0} out of range")]
    InvalidCsid(u32),
    /// The payload is longer than a 24-bit length can say.
    #[error("message of {0} bytes is too long for RTMP")]
    TooLong(usize),
    /// A chunk size of 0 or above 0x7FFFFFFF.
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
}

/// What the reader remembers per chunk stream id.
#[derive(Debug)]
struct ChunkStream {
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// The last fmt 0/1/2 header's timestamp field, extended value resolved: what a fmt 3
    /// chunk starting a new message adds to `timestamp`.
    delta: u32,
    /// The last fmt 0/1/2 header's timestamp field was 0xFFFFFF, so fmt 3 chunks carry 4
    /// extended timestamp bytes too.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Payload of the incomplete message, if one is in progress.
    partial: Option<BytesMut>,
}

/// A parsed chunk header (basic header, message header and extended timestamp).
#[derive(Debug, Clone, Copy)]
struct Header {
    fmt: u8,
    csid: u32,
    /// 24-bit timestamp field (fmt 0-2).
    timestamp: u32,
    /// Length and type id (fmt 0-1).
    length: u32,
    type_id: u8,
    /// Message stream id (fmt 0).
    stream_id: u32,
    /// The 4 extended timestamp bytes, when present.
    extended: Option<u32>,
}

/// Reads big-endian fields from a byte slice; `None` when the slice is too short.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn be24(&mut self) -> Option<u32> {
        let b = self.take(3)?;
        Some(b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x)))
    }

    fn be32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    fn le32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }
}

/// Reassembles RTMP messages from received bytes.
///
/// Push bytes with [`push`](Self::push), then call [`next_message`](Self::next_message) until it
/// returns `Ok(None)`. Chunk bodies are consumed as they arrive, so the receive buffer only
/// holds at most one incomplete chunk header plus the latest push.
#[derive(Debug)]
pub struct ChunkReader {
    buf: BytesMut,
    chunk_size: u32,
    streams: HashMap<u32, ChunkStream>,
    /// The chunk whose body is being read: its csid and the body bytes still to come.
    body: Option<(u32, u32)>,
    /// Sum of the declared lengths of incomplete messages.
    reserved: usize,
    limits: Limits,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl ChunkReader {
    /// A reader at the default chunk size (128).
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            body: None,
            reserved: 0,
            limits,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes reserved by incomplete messages (for tests and metrics).
    pub fn reserved_bytes(&self) -> usize {
        self.reserved
    }

    /// Appends received bytes. Drain with [`next_message`](Self::next_message) after each push.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            if let Some((csid, left)) = self.body {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                if let Some(message) = self.read_body(csid, left) {
                    self.apply_control(&message)?;
                    return Ok(Some(message));
                }
                continue;
            }
            let Some((header, used)) = self.parse_header()? else {
                return Ok(None);
            };
            self.buf.advance(used);
            if let Some(message) = self.start_chunk(header)? {
                self.apply_control(&message)?;
                return Ok(Some(message));
            }
        }
    }

    /// Parses the chunk header at the front of the buffer without consuming it.
    fn parse_header(&self) -> Result<Option<(Header, usize)>, ChunkError> {
        let mut cursor = Cursor {
            bytes: &self.buf,
            pos: 0,
        };
        let Some(first) = cursor.u8() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let csid = match first & 0x3F {
            0 => match cursor.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(None),
            },
            1 => match cursor.take(2) {
                Some(&[lo, hi]) => 64 + u32::from(lo) + 256 * u32::from(hi),
                _ => return Ok(None),
            },
            low => u32::from(low),
        };
        let previous = self.streams.get(&csid);
        let mut header = Header {
            fmt,
            csid,
            timestamp: 0,
            length: 0,
            type_id: 0,
            stream_id: 0,
            extended: None,
        };
        // fmt 1 on a fresh chunk stream is accepted (librtmp sends control messages that way;
        // the missing stream id is 0). fmt 2 and 3 need a previous header.
        if previous.is_none() && fmt >= 2 {
            return Err(ChunkError::NoPreviousHeader { csid, fmt });
        }
        let extended = if fmt <= 2 {
            let Some(timestamp) = cursor.be24() else {
                return Ok(None);
            };
            header.timestamp = timestamp;
            if fmt <= 1 {
                let (Some(length), Some(type_id)) = (cursor.be24(), cursor.u8()) else {
                    return Ok(None);
                };
                header.length = length;
                header.type_id = type_id;
            }
            if fmt == 0 {
                let Some(stream_id) = cursor.le32() else {
                    return Ok(None);
                };
                header.stream_id = stream_id;
            }
            timestamp == EXTENDED_TIMESTAMP
        } else {
            previous.is_some_and(|stream| stream.extended)
        };
        if extended {
            let Some(value) = cursor.be32() else {
                return Ok(None);
            };
            header.extended = Some(value);
        }
        Ok(Some((header, cursor.pos)))
    }

    /// Applies a chunk header; returns a message when it completes one (zero length).
    fn start_chunk(&mut self, header: Header) -> Result<Option<Message>, ChunkError> {
        let csid = header.csid;
        if !self.streams.contains_key(&csid) {
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(ChunkError::TooManyChunkStreams(
                    self.limits.max_chunk_streams,
                ));
            }
            self.streams.insert(
                csid,
                ChunkStream {
                    timestamp: 0,
                    delta: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    partial: None,
                },
            );
        }
        let chunk_size = self.chunk_size;
        let Some(stream) = self.streams.get_mut(&csid) else {
            return Ok(None);
        };

        if header.fmt == 3 {
            if let Some(partial) = &stream.partial {
                // Continuation of the message in progress; the extended timestamp (if any) repeats
                // the message's and is ignored.
                let left = stream.length.saturating_sub(len_u32(partial.len()));
                self.body = Some((csid, left.min(chunk_size)));
                return Ok(None);
            }
        }

        // A new message. Drop an incomplete one on this chunk stream rather than trusting either
        // length (a length that shrinks mid-message is how other readers underflow).
        if let Some(dropped) = stream.partial.take() {
            debug!(
                csid,
                had = dropped.len(),
                expected = stream.length,
                "new message header on a chunk stream with an incomplete message; dropped it"
            );
            self.reserved = self.reserved.saturating_sub(stream.length as usize);
        }
        match header.fmt {
            0 => {
                let value = header.extended.unwrap_or(header.timestamp);
                stream.timestamp = value;
                stream.delta = value;
                stream.extended = header.timestamp == EXTENDED_TIMESTAMP;
                stream.length = header.length;
                stream.type_id = header.type_id;
                stream.stream_id = header.stream_id;
            }
            1 | 2 => {
                let value = header.extended.unwrap_or(header.timestamp);
                stream.timestamp = stream.timestamp.wrapping_add(value);
                stream.delta = value;
                stream.extended = header.timestamp == EXTENDED_TIMESTAMP;
                if header.fmt == 1 {
                    stream.length = header.length;
                    stream.type_id = header.type_id;
                }
            }
            _ => {
                let delta = header.extended.unwrap_or(stream.delta);
                stream.timestamp = stream.timestamp.wrapping_add(delta);
            }
        }

        let length = stream.length;
        if length == 0 {
            return Ok(Some(Message {
                csid,
                timestamp: stream.timestamp,
                type_id: stream.type_id,
                stream_id: stream.stream_id,
                payload: Bytes::new(),
            }));
        }
        let needed = self.reserved.saturating_add(length as usize);
        if needed > self.limits.max_partial_bytes {
            return Err(ChunkError::TooMuchBuffered {
                needed,
                limit: self.limits.max_partial_bytes,
            });
        }
        self.reserved = needed;
        stream.partial = Some(BytesMut::new());
        self.body = Some((csid, length.min(chunk_size)));
        Ok(None)
    }

    /// Moves body bytes of the current chunk into its message; returns the message if complete.
    fn read_body(&mut self, csid: u32, left: u32) -> Option<Message> {
        let n = (left as usize).min(self.buf.len());
        let rest = left.saturating_sub(len_u32(n));
        self.body = (rest > 0).then_some((csid, rest));
        let Some(stream) = self.streams.get_mut(&csid) else {
            // Unreachable: a body always belongs to a known stream. Skip it rather than panic.
            self.buf.advance(n);
            self.body = None;
            return None;
        };
        let length = stream.length as usize;
        let partial = stream.partial.get_or_insert_with(BytesMut::new);
        // Copied once into a buffer of the message's own size (not sliced out of the receive
        // buffer, which would keep a whole read alive for as long as a small frame is queued).
        // Reserve what the declared length needs, but trust it only past the first 64 KiB.
        let needed = partial.len().saturating_add(n);
        if needed > partial.capacity() {
            let target = if partial.capacity() == 0 {
                length.min(INITIAL_RESERVE)
            } else {
                length
            };
            partial.reserve(target.max(needed).saturating_sub(partial.len()));
        }
        partial.extend_from_slice(self.buf.get(..n).unwrap_or_default());
        self.buf.advance(n);
        if partial.len() < length {
            return None;
        }
        let payload = stream.partial.take().unwrap_or_default().freeze();
        self.reserved = self.reserved.saturating_sub(length);
        Some(Message {
            csid,
            timestamp: stream.timestamp,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            payload,
        })
    }

    /// Set Chunk Size and Abort change how the following chunks are read.
    fn apply_control(&mut self, message: &Message) -> Result<(), ChunkError> {
        match message.type_id {
            msg_type::SET_CHUNK_SIZE => {
                let size = be32_prefix(&message.payload)
                    .ok_or(ChunkError::TruncatedControl("Set Chunk Size"))?
                    & MAX_CHUNK_SIZE;
                if size == 0 {
                    return Err(ChunkError::InvalidChunkSize(size));
                }
                debug!(size, "peer chunk size");
                self.chunk_size = size;
            }
            msg_type::ABORT => {
                let csid =
                    be32_prefix(&message.payload).ok_or(ChunkError::TruncatedControl("Abort"))?;
                if let Some(stream) = self.streams.get_mut(&csid) {
                    if stream.partial.take().is_some() {
                        self.reserved = self.reserved.saturating_sub(stream.length as usize);
                        debug!(csid, "peer aborted a message");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn be32_prefix(bytes: &[u8]) -> Option<u32> {
    let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// `usize` to `u32`, saturating (lengths here are at most 24 bits).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Splits messages into chunks.
///
/// Every message starts with a fmt 0 chunk (simple and always valid); its continuation chunks
/// are fmt 3, repeating the extended timestamp when the message has one (as ffmpeg expects).
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    chunk_size: u32,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    /// A writer at the default chunk size (128).
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// The outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the outgoing chunk size. Call it right after writing the Set Chunk Size message
    /// that announces it.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), WriteError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(WriteError::InvalidChunkSize(size));
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Appends `message`, split into chunks, to `out`.
    pub fn write(&self, message: &Message, out: &mut Vec<u8>) -> Result<(), WriteError> {
        let csid = message.csid;
        if !(MIN_CSID..=MAX_CSID).contains(&csid) {
            return Err(WriteError::InvalidCsid(csid));
        }
        let length = message.payload.len();
        let length24 = u32::try_from(length)
            .ok()
            .filter(|&l| l <= MAX_MESSAGE_LEN)
            .ok_or(WriteError::TooLong(length))?;
        let extended = message.timestamp >= EXTENDED_TIMESTAMP;
        let ts_field = if extended {
            EXTENDED_TIMESTAMP
        } else {
            message.timestamp
        };

        let chunk_size = usize::try_from(self.chunk_size)
            .unwrap_or(usize::MAX)
            .max(1);
        out.reserve(18 + length + (length / chunk_size) * 7);
        basic_header(out, 0, csid);
        out.extend_from_slice(&ts_field.to_be_bytes()[1..]);
        out.extend_from_slice(&length24.to_be_bytes()[1..]);
        out.push(message.type_id);
        out.extend_from_slice(&message.stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&message.timestamp.to_be_bytes());
        }

        let mut continuation = Vec::with_capacity(7);
        basic_header(&mut continuation, 3, csid);
        if extended {
            continuation.extend_from_slice(&message.timestamp.to_be_bytes());
        }
        for (i, chunk) in message.payload.chunks(chunk_size).enumerate() {
            if i > 0 {
                out.extend_from_slice(&continuation);
            }
            out.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// Writes a basic header for a csid already checked to be in 2..=65599.
fn basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        0..=63 => out.push(fmt | csid as u8),
        64..=319 => out.extend_from_slice(&[fmt, (csid - 64) as u8]),
        _ => {
            let id = csid.saturating_sub(64);
            out.extend_from_slice(&[fmt | 1, id as u8, (id >> 8) as u8]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Message {
        Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn read_all(reader: &mut ChunkReader) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(message) = reader.next_message().expect("valid chunks") {
            out.push(message);
        }
        out
    }

    fn set_chunk_size(size: u32) -> Message {
        message(2, 0, msg_type::SET_CHUNK_SIZE, 0, &size.to_be_bytes())
    }

    #[test]
    fn reads_a_single_chunk_message() {
        let mut reader = ChunkReader::default();
        reader.push(&[
            0x03, 0, 0, 10, 0, 0, 3, 20, 1, 0, 0,
            0, // fmt 0, csid 3, ts 10, len 3, type 20, sid 1
            b'a', b'b', b'c',
        ]);
        assert_eq!(read_all(&mut reader), vec![message(3, 10, 20, 1, b"abc")]);
        assert_eq!(reader.reserved_bytes(), 0);
    }

    #[test]
    fn reads_the_ffmpeg_connect_split_at_128_bytes() {
        let bytes = include_bytes!("testdata/ffmpeg_connect.bin");
        let mut reader = ChunkReader::default();
        reader.push(bytes);
        let messages = read_all(&mut reader);
        assert_eq!(messages.len(), 1);
        let connect = &messages[0];
        assert_eq!(
            (connect.csid, connect.type_id, connect.stream_id),
            (3, 20, 0)
        );
        assert_eq!(connect.payload.len(), 140);
        assert!(connect.payload.starts_with(b"\x02\x00\x07connect"));
    }

    #[test]
    fn header_forms_inherit_from_the_previous_header() {
        let mut bytes = vec![0x04, 0, 0, 100, 0, 0, 2, 8, 1, 0, 0, 0, 1, 2]; // fmt 0: ts 100, len 2, audio
        bytes.extend_from_slice(&[0x44, 0, 0, 20, 0, 0, 1, 9, 3]); // fmt 1: +20, len 1, video
        bytes.extend_from_slice(&[0x84, 0, 0, 5, 4]); // fmt 2: +5
        bytes.extend_from_slice(&[0xC4, 5]); // fmt 3, new message: +5 again
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        assert_eq!(
            read_all(&mut reader),
            vec![
                message(4, 100, 8, 1, &[1, 2]),
                message(4, 120, 9, 1, &[3]),
                message(4, 125, 9, 1, &[4]),
                message(4, 130, 9, 1, &[5]),
            ]
        );
    }

    #[test]
    fn fmt3_after_fmt0_adds_the_fmt0_timestamp_like_ffmpeg() {
        let mut bytes = vec![0x06, 0, 0, 21, 0, 0, 1, 8, 1, 0, 0, 0, 7];
        bytes.extend_from_slice(&[0xC6, 8]);
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        let stamps: Vec<u32> = read_all(&mut reader).iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, vec![21, 42]);
    }

    #[test]
    fn two_and_three_byte_csids() {
        let writer = ChunkWriter::new();
        let mut bytes = Vec::new();
        for csid in [64, 319, 320, MAX_CSID] {
            writer
                .write(&message(csid, 1, 9, 1, &[csid as u8; 300]), &mut bytes)
                .expect("write");
        }
        assert_eq!(&bytes[..2], &[0x00, 0x00]);
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        let csids: Vec<u32> = read_all(&mut reader).iter().map(|m| m.csid).collect();
        assert_eq!(csids, vec![64, 319, 320, MAX_CSID]);
    }

    #[test]
    fn extended_timestamp_on_fmt3_continuation_chunks() {
        let ts = 0x0123_4567;
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut bytes = Vec::new();
        ChunkWriter::new()
            .write(&message(6, ts, 9, 1, &payload), &mut bytes)
            .expect("write");
        // 12 header + 4 ext + 128, then (1 + 4 + 128), then (1 + 4 + 44).
        assert_eq!(bytes.len(), 16 + 128 + 5 + 128 + 5 + 44);
        assert_eq!(&bytes[1..4], &[0xFF, 0xFF, 0xFF]);
        assert_eq!(bytes[144], 0xC6);
        assert_eq!(&bytes[145..149], &ts.to_be_bytes());
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        assert_eq!(read_all(&mut reader), vec![message(6, ts, 9, 1, &payload)]);
    }

    #[test]
    fn extended_delta_on_fmt3_new_message() {
        // fmt 1 with an extended delta, then a fmt 3 chunk starting a new message: it carries
        // its own 4-byte extended delta.
        let mut bytes = vec![0x05, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0x45, 0xFF, 0xFF, 0xFF, 0, 0, 1, 9, 0x01, 0, 0, 0, 2]);
        bytes.extend_from_slice(&[0xC5, 0x01, 0, 0, 0, 3]);
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        let stamps: Vec<u32> = read_all(&mut reader).iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, vec![0, 0x0100_0000, 0x0200_0000]);
    }

    #[test]
    fn timestamp_deltas_wrap_around() {
        let mut bytes = vec![0x04, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8, 1, 0, 0, 0];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.push(1);
        bytes.extend_from_slice(&[0x84, 0, 0, 2, 2]); // +2 wraps to 1
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        let stamps: Vec<u32> = read_all(&mut reader).iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, vec![u32::MAX, 1]);
    }

    #[test]
    fn interleaved_audio_and_video_on_different_csids() {
        let video: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let audio: Vec<u8> = (0..150u32).map(|i| (i * 3) as u8).collect();
        let mut v = Vec::new();
        let mut a = Vec::new();
        let writer = ChunkWriter::new();
        writer
            .write(&message(6, 40, 9, 1, &video), &mut v)
            .expect("v");
        writer
            .write(&message(4, 41, 8, 1, &audio), &mut a)
            .expect("a");
        // v: [12 + 128][1 + 72]; a: [12 + 128][1 + 22]. Interleave chunk by chunk.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&v[..140]);
        bytes.extend_from_slice(&a[..140]);
        bytes.extend_from_slice(&v[140..]);
        bytes.extend_from_slice(&a[140..]);
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        assert_eq!(
            read_all(&mut reader),
            vec![message(6, 40, 9, 1, &video), message(4, 41, 8, 1, &audio)]
        );
    }

    #[test]
    fn set_chunk_size_mid_stream_changes_how_chunks_split() {
        let mut writer = ChunkWriter::new();
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = Vec::new();
        writer
            .write(&message(6, 0, 9, 1, &big), &mut bytes)
            .expect("128");
        writer
            .write(&set_chunk_size(4096), &mut bytes)
            .expect("scs");
        writer.set_chunk_size(4096).expect("size");
        writer
            .write(&message(6, 33, 9, 1, &big), &mut bytes)
            .expect("4096");
        // High bit set: must be cleared, leaving 1000.
        writer
            .write(&set_chunk_size(0x8000_0000 | 1000), &mut bytes)
            .expect("scs");
        writer.set_chunk_size(1000).expect("size");
        writer
            .write(&message(6, 66, 9, 1, &big), &mut bytes)
            .expect("1000");
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        let messages = read_all(&mut reader);
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[2], message(6, 33, 9, 1, &big));
        assert_eq!(messages[4], message(6, 66, 9, 1, &big));
        assert_eq!(reader.chunk_size(), 1000);
    }

    #[test]
    fn chunk_size_zero_is_an_error() {
        let mut bytes = Vec::new();
        ChunkWriter::new()
            .write(&set_chunk_size(0x8000_0000), &mut bytes)
            .expect("write");
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        assert_eq!(reader.next_message(), Err(ChunkError::InvalidChunkSize(0)));
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let payload = [7u8; 300];
        let mut msg = Vec::new();
        ChunkWriter::new()
            .write(&message(6, 0, 9, 1, &payload), &mut msg)
            .expect("write");
        let mut bytes = msg[..140].to_vec(); // first chunk only
        ChunkWriter::new()
            .write(
                &message(2, 0, msg_type::ABORT, 0, &6u32.to_be_bytes()),
                &mut bytes,
            )
            .expect("abort");
        bytes.extend_from_slice(&msg); // the whole message again
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        let messages = read_all(&mut reader);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].type_id, msg_type::ABORT);
        assert_eq!(messages[1], message(6, 0, 9, 1, &payload));
        assert_eq!(reader.reserved_bytes(), 0);
    }

    #[test]
    fn new_header_mid_message_drops_the_partial_message() {
        // 300-byte message, one chunk of it, then a fmt 1 header shrinking the length to 10.
        let mut bytes = vec![0x05, 0, 0, 0, 0, 1, 0x2C, 9, 1, 0, 0, 0];
        bytes.extend_from_slice(&[1u8; 128]);
        bytes.extend_from_slice(&[0x45, 0, 0, 1, 0, 0, 10, 9]);
        bytes.extend_from_slice(&[2u8; 10]);
        let mut reader = ChunkReader::default();
        reader.push(&bytes);
        assert_eq!(read_all(&mut reader), vec![message(5, 1, 9, 1, &[2u8; 10])]);
        assert_eq!(reader.reserved_bytes(), 0);
    }

    #[test]
    fn fmt2_or_3_on_a_fresh_chunk_stream_is_an_error() {
        for first in [0x83u8, 0xC3] {
            let mut reader = ChunkReader::default();
            reader.push(&[first, 0, 0, 0, 0]);
            assert!(matches!(
                reader.next_message(),
                Err(ChunkError::NoPreviousHeader { csid: 3, .. })
            ));
        }
    }

    #[test]
    fn fmt1_on_a_fresh_chunk_stream_is_accepted_like_librtmp_sends_it() {
        let mut reader = ChunkReader::default();
        reader.push(&[0x42, 0, 0, 0, 0, 0, 6, 4, 0, 6, 0, 0, 0, 1]);
        assert_eq!(
            read_all(&mut reader),
            vec![message(2, 0, 4, 0, &[0, 6, 0, 0, 0, 1])]
        );
    }

    #[test]
    fn too_many_chunk_streams() {
        let mut reader = ChunkReader::new(Limits {
            max_chunk_streams: 3,
            ..Limits::default()
        });
        let mut bytes = Vec::new();
        for csid in 2..6 {
            ChunkWriter::new()
                .write(&message(csid, 0, 9, 1, &[]), &mut bytes)
                .expect("write");
        }
        reader.push(&bytes);
        for _ in 0..3 {
            assert!(reader.next_message().expect("ok").is_some());
        }
        assert_eq!(
            reader.next_message(),
            Err(ChunkError::TooManyChunkStreams(3))
        );
    }

    #[test]
    fn partial_bytes_are_capped_across_chunk_streams() {
        let mut reader = ChunkReader::new(Limits {
            max_partial_bytes: 1000,
            ..Limits::default()
        });
        // Two 600-byte messages started on csid 4 and 5, neither finished.
        let mut bytes = vec![0x04, 0, 0, 0, 0, 0x02, 0x58, 9, 1, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0x05, 0, 0, 0, 0, 0x02, 0x58, 9, 1, 0, 0, 0]);
        // The first chunk on csid 4 is 128 bytes; give it all so the next header parses.
        bytes.splice(12..13, [0u8; 128]);
        reader.push(&bytes);
        assert!(matches!(
            reader.next_message(),
            Err(ChunkError::TooMuchBuffered { needed: 1200, .. })
        ));
    }

    #[test]
    fn byte_at_a_time_gives_the_same_messages() {
        let writer = ChunkWriter::new();
        let mut bytes = Vec::new();
        for i in 0..5u32 {
            writer
                .write(
                    &message(3 + i, i * 1000, 9, 1, &vec![i as u8; 100 * i as usize]),
                    &mut bytes,
                )
                .expect("write");
        }
        let mut whole = ChunkReader::default();
        whole.push(&bytes);
        let expected = read_all(&mut whole);
        let mut reader = ChunkReader::default();
        let mut got = Vec::new();
        for byte in &bytes {
            reader.push(std::slice::from_ref(byte));
            got.extend(read_all(&mut reader));
        }
        assert_eq!(got, expected);
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn writer_rejects_bad_input() {
        let writer = ChunkWriter::new();
        let mut out = Vec::new();
        assert_eq!(
            writer.write(&message(1, 0, 9, 1, &[]), &mut out),
            Err(WriteError::InvalidCsid(1))
        );
        assert_eq!(
            writer.write(&message(MAX_CSID + 1, 0, 9, 1, &[]), &mut out),
            Err(WriteError::InvalidCsid(MAX_CSID + 1))
        );
        let big = message(3, 0, 9, 1, &vec![0; MAX_MESSAGE_LEN as usize + 1]);
        assert!(matches!(
            writer.write(&big, &mut out),
            Err(WriteError::TooLong(_))
        ));
        assert!(out.is_empty());
        let mut writer = ChunkWriter::new();
        assert!(writer.set_chunk_size(0).is_err());
        assert!(writer.set_chunk_size(MAX_CHUNK_SIZE + 1).is_err());
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            prop_oneof![2u32..64, 64u32..320, 320u32..=MAX_CSID],
            prop_oneof![0u32..0x100, 0xFF_FF00u32..0x100_0100, any::<u32>()],
            1u8..=22,
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..2000),
        )
            .prop_filter("not a control message", |(_, _, t, _, _)| {
                *t != msg_type::SET_CHUNK_SIZE && *t != msg_type::ABORT
            })
            .prop_map(|(csid, timestamp, type_id, stream_id, payload)| Message {
                csid,
                timestamp,
                type_id,
                stream_id,
                payload: Bytes::from(payload),
            })
    }

    proptest! {
        /// Writer -> reader round trip for random messages, chunk sizes and read splits.
        #[test]
        fn round_trip(
            messages in prop::collection::vec(arb_message(), 1..12),
            chunk_size in prop_oneof![1u32..16, 16u32..300, 300u32..5000],
            split in 1usize..700,
        ) {
            let mut writer = ChunkWriter::new();
            let mut bytes = Vec::new();
            writer.write(&set_chunk_size(chunk_size), &mut bytes).expect("scs");
            writer.set_chunk_size(chunk_size).expect("size");
            for message in &messages {
                writer.write(message, &mut bytes).expect("write");
            }
            let mut reader = ChunkReader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(split) {
                reader.push(piece);
                while let Some(message) = reader.next_message().expect("valid") {
                    got.push(message);
                }
            }
            prop_assert_eq!(got.len(), messages.len() + 1);
            prop_assert_eq!(&got[1..], &messages[..]);
            prop_assert_eq!(reader.reserved_bytes(), 0);
        }

        /// Arbitrary bytes never panic and never hold more than the limit.
        #[test]
        fn arbitrary_bytes_never_panic(pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..8)) {
            let mut reader = ChunkReader::default();
            'feed: for piece in pieces {
                reader.push(&piece);
                loop {
                    match reader.next_message() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
                prop_assert!(reader.reserved_bytes() <= Limits::default().max_partial_bytes);
            }
        }
    }
}

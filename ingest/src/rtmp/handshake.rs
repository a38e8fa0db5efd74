//! Server side of the RTMP "simple" handshake, as a sans-IO state machine.
//!
//! The client sends C0 (one version byte, which must be 3) and C1 (1536 bytes); we answer with
//! S0 (version 3), S1 (our time, four zero bytes, 1528 random-ish bytes) and S2 (an echo of C1);
//! the client finishes with C2 (1536 bytes, an echo of S1 that we do not verify). Because S1
//! carries a zero version field, clients (ffmpeg, OBS/librtmp, GStreamer) fall back to the simple
//! handshake: the Flash Player 9 digest handshake is deliberately not implemented.
//!
//! [`Handshake::feed`] takes whatever bytes arrived, in pieces of any size, and returns what to
//! send and, once C2 is complete, the bytes that followed it (the start of the chunk stream).

use std::hash::{BuildHasher, Hasher};

/// The only RTMP version we speak (plain, unencrypted RTMP).
pub const RTMP_VERSION: u8 = 3;
/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// C0 asked for a version other than 3 (e.g. 6 for RTMPE, or simply not RTMP).
    #[error("unsupported RTMP version {0} in C0 (expected 3)")]
    UnsupportedVersion(u8),
    /// Bytes were fed after the handshake had completed.
    #[error("handshake already completed")]
    AlreadyDone,
}

/// What one [`Handshake::feed`] call produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes to write to the peer now (S0+S1+S2 once C0+C1 are in, otherwise empty).
    pub to_send: Vec<u8>,
    /// `Some(leftover)` once C2 is complete: the bytes received after C2, which belong to the
    /// chunk stream. `None` while the handshake needs more input.
    pub done: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for C0 (1 byte) and C1 (1536 bytes).
    AwaitC0C1,
    /// S0+S1+S2 sent; waiting for C2.
    AwaitC2,
    /// C2 received.
    Done,
}

/// The server half of one connection's handshake.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    /// Bytes of the current phase received so far (C0+C1, then C2).
    pending: Vec<u8>,
    /// Our epoch, written into S1 and S2 (milliseconds; any value is valid).
    time: u32,
    /// Seed for S1's filler bytes.
    seed: u64,
}

impl Default for Handshake {
    fn default() -> Self {
        Self::new()
    }
}

impl Handshake {
    /// A handshake with a random-ish S1 (seeded from the process's hash keys).
    pub fn new() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self::with_seed(0, hasher.finish())
    }

    /// A handshake with a fixed S1 time and filler seed (for tests).
    pub fn with_seed(time: u32, seed: u64) -> Self {
        Self {
            state: State::AwaitC0C1,
            pending: Vec::with_capacity(1 + HANDSHAKE_SIZE),
            time,
            seed,
        }
    }

    /// Whether C2 has been received.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes newly received bytes. Never buffers more than one handshake packet: bytes past
    /// C2 are returned in [`Progress::done`].
    pub fn feed(&mut self, mut input: &[u8]) -> Result<Progress, HandshakeError> {
        let mut progress = Progress::default();
        loop {
            match self.state {
                State::AwaitC0C1 => {
                    if let Some(&version) = self.pending.first().or(input.first()) {
                        if version != RTMP_VERSION {
                            return Err(HandshakeError::UnsupportedVersion(version));
                        }
                    }
                    input = self.fill(input, 1 + HANDSHAKE_SIZE);
                    let Some(c1) = self.pending.get(1..) else {
                        return Ok(progress);
                    };
                    if c1.len() < HANDSHAKE_SIZE {
                        return Ok(progress);
                    }
                    progress.to_send = self.response(c1);
                    self.pending.clear();
                    self.state = State::AwaitC2;
                }
                State::AwaitC2 => {
                    input = self.fill(input, HANDSHAKE_SIZE);
                    if self.pending.len() < HANDSHAKE_SIZE {
                        return Ok(progress);
                    }
                    // C2 should echo S1; clients differ, and nothing depends on it: not checked.
                    self.pending = Vec::new();
                    self.state = State::Done;
                    progress.done = Some(input.to_vec());
                    return Ok(progress);
                }
                State::Done => return Err(HandshakeError::AlreadyDone),
            }
        }
    }

    /// Moves bytes from `input` into `pending` until it holds `want`; returns the rest.
    fn fill<'a>(&mut self, input: &'a [u8], want: usize) -> &'a [u8] {
        let take = want.saturating_sub(self.pending.len()).min(input.len());
        let (head, rest) = input.split_at(take);
        self.pending.extend_from_slice(head);
        rest
    }

    /// S0 + S1 + S2 for the given C1.
    fn response(&self, c1: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE);
        out.push(RTMP_VERSION);
        // S1: time, four zero bytes (no FP9 digest scheme), filler.
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        let mut state = self.seed | 1;
        while out.len() < 1 + HANDSHAKE_SIZE {
            // xorshift64: cheap filler; S1's randomness has no security role in RTMP.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let room = 1 + HANDSHAKE_SIZE - out.len();
            let bytes = state.to_le_bytes();
            out.extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
        // S2: C1's time, our time of reading it, C1's random bytes.
        let mut s2 = c1.to_vec();
        s2.resize(HANDSHAKE_SIZE, 0);
        if let Some(time2) = s2.get_mut(4..8) {
            time2.copy_from_slice(&self.time.to_be_bytes());
        }
        out.extend_from_slice(&s2);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1() -> Vec<u8> {
        let mut bytes = vec![RTMP_VERSION];
        bytes.extend((0..HANDSHAKE_SIZE).map(|i| (i * 7) as u8));
        bytes
    }

    #[test]
    fn answers_c0c1_with_s0s1s2_and_returns_leftover_after_c2() {
        let mut handshake = Handshake::with_seed(1234, 42);
        let c0c1 = c0c1();
        let progress = handshake.feed(&c0c1).expect("c0c1");
        assert!(progress.done.is_none());
        let reply = progress.to_send;
        assert_eq!(reply.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(reply[0], RTMP_VERSION);
        assert_eq!(&reply[1..5], &1234u32.to_be_bytes());
        assert_eq!(&reply[5..9], &[0, 0, 0, 0]);
        // S2 echoes C1's time and random part.
        let s2 = &reply[1 + HANDSHAKE_SIZE..];
        assert_eq!(&s2[..4], &c0c1[1..5]);
        assert_eq!(&s2[8..], &c0c1[9..]);

        let mut c2 = reply[1..1 + HANDSHAKE_SIZE].to_vec();
        c2.extend_from_slice(b"chunks");
        let progress = handshake.feed(&c2).expect("c2");
        assert!(progress.to_send.is_empty());
        assert_eq!(progress.done.as_deref(), Some(&b"chunks"[..]));
        assert!(handshake.is_done());
        assert_eq!(handshake.feed(b"x"), Err(HandshakeError::AlreadyDone));
    }

    #[test]
    fn accepts_input_one_byte_at_a_time() {
        let mut handshake = Handshake::with_seed(0, 7);
        let mut all = c0c1();
        all.extend_from_slice(&[9u8; HANDSHAKE_SIZE]);
        let mut sent = Vec::new();
        for (i, byte) in all.iter().enumerate() {
            let progress = handshake.feed(std::slice::from_ref(byte)).expect("feed");
            sent.extend(progress.to_send);
            // Done exactly on C2's last byte, with nothing left over.
            assert_eq!(progress.done.is_some(), i == all.len() - 1);
            if i == 1 + HANDSHAKE_SIZE - 1 {
                assert_eq!(sent.len(), 1 + 2 * HANDSHAKE_SIZE, "S0S1S2 right after C1");
            }
        }
        assert!(handshake.is_done());
    }

    #[test]
    fn everything_in_one_read_completes_at_once() {
        let mut handshake = Handshake::new();
        let mut all = c0c1();
        all.extend_from_slice(&[0u8; HANDSHAKE_SIZE]);
        let progress = handshake.feed(&all).expect("feed");
        assert_eq!(progress.to_send.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(progress.done, Some(Vec::new()));
    }

    #[test]
    fn rejects_other_versions_on_the_first_byte() {
        let mut handshake = Handshake::new();
        assert_eq!(
            handshake.feed(&[6]),
            Err(HandshakeError::UnsupportedVersion(6))
        );
        let mut handshake = Handshake::new();
        assert_eq!(
            handshake.feed(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::UnsupportedVersion(b'G'))
        );
    }

    #[test]
    fn empty_input_is_no_progress() {
        let mut handshake = Handshake::new();
        assert_eq!(handshake.feed(&[]), Ok(Progress::default()));
    }

    #[test]
    fn real_ffmpeg_c0c1_is_accepted() {
        // ffmpeg 5.1 advertises Flash Player version 9.0.124.2 in C1; the simple reply suits it.
        let c0c1 = include_bytes!("testdata/ffmpeg_c0c1.bin");
        let mut handshake = Handshake::new();
        let progress = handshake.feed(c0c1).expect("ffmpeg c0c1");
        assert_eq!(progress.to_send.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(&progress.to_send[1 + HANDSHAKE_SIZE + 8..], &c0c1[9..]);
    }
}

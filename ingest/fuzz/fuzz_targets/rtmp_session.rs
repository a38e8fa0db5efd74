//! Feeds arbitrary bytes through the RTMP handshake, chunk reader and session the way the
//! server drives them: they must return or fail, never panic, and what the session sends back
//! must always be a valid chunk stream of decodable AMF0 commands.
//!
//! Input layout: `flags`, `split`, then the bytes a client would send.
//! * `flags & 1`: the bytes start with the handshake (C0, C1, C2); otherwise a valid handshake
//!   is prepended so mutations reach the chunk layer at once.
//! * `flags & 2`: reject connect requests; `flags & 4`: reject publish requests.
//! * `split + 1`: the size of the reads the bytes arrive in.
#![no_main]

use headwater_ingest::flv::{parse_audio, parse_video};
use headwater_ingest::rtmp::amf0;
use headwater_ingest::rtmp::chunk::{msg_type, ChunkReader};
use headwater_ingest::rtmp::handshake::{Handshake, HANDSHAKE_SIZE, RTMP_VERSION};
use headwater_ingest::rtmp::session::{Event, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, split, rest @ ..] = data else {
        return;
    };
    let stream: Vec<u8> = if flags & 1 != 0 {
        rest.to_vec()
    } else {
        let mut bytes = vec![RTMP_VERSION];
        bytes.extend_from_slice(&[0; 2 * HANDSHAKE_SIZE]);
        bytes.extend_from_slice(rest);
        bytes
    };
    let (reject_connect, reject_publish) = (flags & 2 != 0, flags & 4 != 0);

    let mut handshake = Handshake::with_seed(0, 1);
    let mut session: Option<Session> = None;
    // Our own output, read back: it must always parse.
    let mut echo = ChunkReader::default();
    for piece in stream.chunks(usize::from(*split) + 1) {
        let session = match &mut session {
            Some(session) => {
                session.receive(piece);
                session
            }
            None => match handshake.feed(piece) {
                Err(_) => return,
                Ok(progress) => {
                    let Some(leftover) = progress.done else {
                        continue;
                    };
                    let mut new = Session::new();
                    new.receive(&leftover);
                    session.insert(new)
                }
            },
        };
        let mut refused = false;
        loop {
            match session.next_event() {
                Ok(Some(Event::Connect(request))) if reject_connect => {
                    session.reject_connect(&request, "no");
                    refused = true;
                    break;
                }
                Ok(Some(Event::Connect(request))) => session.accept_connect(&request),
                Ok(Some(Event::Publish(request))) if reject_publish => {
                    session.reject_publish(&request, "NetStream.Publish.BadName", "no");
                    refused = true;
                    break;
                }
                Ok(Some(Event::Publish(request))) => session.accept_publish(&request),
                Ok(Some(Event::Video(media))) => {
                    let _ = parse_video(media.payload);
                }
                Ok(Some(Event::Audio(media))) => {
                    let _ = parse_audio(media.payload);
                }
                Ok(Some(Event::PublishFinished { .. })) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        echo.push(&session.take_output());
        loop {
            match echo.next_message() {
                Ok(Some(message)) => {
                    if message.type_id == msg_type::COMMAND_AMF0 {
                        if let Err(error) = amf0::decode_all(&message.payload) {
                            panic!("session sent undecodable AMF0: {error}");
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => panic!("session sent an invalid chunk stream: {error}"),
            }
        }
        if refused {
            return;
        }
    }
});

//! The chat's JSON frames. Client -> server: `{"type":"message","text":...}`. Server ->
//! client: `joined`, `message`, `deleted`, `error`.

use crate::api::store::ChatRecord;
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// A frame a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Post a message (needs a display name given at join).
    Message {
        /// The text (trimmed; at most `chat.max_message_chars` characters).
        text: String,
    },
}

/// One message as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct MessageFrame {
    /// Unique id, increasing in the order messages were accepted (history cursor).
    pub id: i64,
    /// The poster's display name.
    pub name: String,
    /// The text.
    pub text: String,
    /// When the server accepted it, Unix milliseconds.
    pub ts: i64,
    /// The stream's media time then, seconds since the stream started, on the clock of the
    /// playlists' PROGRAM-DATE-TIME; null when the stream was not live.
    pub stream_time: Option<f64>,
}

impl From<&ChatRecord> for MessageFrame {
    fn from(m: &ChatRecord) -> Self {
        Self {
            id: m.id,
            name: m.name.clone(),
            text: m.text.clone(),
            ts: m.sent_at,
            stream_time: m.stream_time_ms.map(|ms| ms as f64 / 1000.0),
        }
    }
}

/// A frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// First frame of a connection: the room and its last messages (oldest first).
    Joined {
        /// The stream.
        stream: String,
        /// The display name given at join, if any.
        name: Option<String>,
        /// False without a display name: the connection may read but not post.
        can_post: bool,
        /// The last messages, oldest first.
        messages: Vec<MessageFrame>,
    },
    /// A new message.
    Message(MessageFrame),
    /// A moderator deleted a message.
    Deleted {
        /// Its id.
        id: i64,
    },
    /// Something the client did was refused, or the connection is about to close.
    Error {
        /// Machine-readable code (`bad_frame`, `too_long`, `rate_limited`, `read_only`, ...).
        code: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl ServerFrame {
    /// The JSON text of this frame.
    pub fn to_text(&self) -> Utf8Bytes {
        // Serialising these types cannot fail: string keys, no maps, finite or null floats.
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from("{\"type\":\"error\",\"code\":\"internal\"}"))
            .into()
    }

    /// An `error` frame.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

//! The metadata store: stream metadata and history, and stream keys (hashed). One trait,
//! [`MetaStore`], so another engine (PostgreSQL for multi-node setups) can take SQLite's place;
//! the SQL in [`sqlite`] sticks to what both accept (no `INSERT OR ...`, no row values).
//!
//! Calls are synchronous (blocking I/O): the API runs them on the blocking pool, and nothing on
//! the media path ever calls them.

pub mod sqlite;

use crate::names::StreamName;
use serde::Serialize;

/// Why the metadata store failed. Always an internal (500) error for the API: bad input is
/// rejected before it gets here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine reported an error.
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    /// The database file or its directory could not be created.
    #[error("cannot create the data directory {path}")]
    Directory {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A row holds a value this version cannot read (e.g. written by a newer version).
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A blocking call did not finish (its thread panicked or the runtime shut down).
    #[error("store call did not complete")]
    Join,
}

/// The lifecycle state a stream last reached, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordedStatus {
    /// Known (a key or metadata exists) but never published.
    Offline,
    /// A stream instance is running.
    Live,
    /// The last instance ended.
    Ended,
}

impl RecordedStatus {
    /// The value stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Live => "live",
            Self::Ended => "ended",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "offline" => Some(Self::Offline),
            "live" => Some(Self::Live),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// A stream's recorded metadata. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    /// Public name.
    pub name: StreamName,
    /// Title set by an operator.
    pub title: Option<String>,
    /// Description set by an operator.
    pub description: Option<String>,
    /// Tags set by an operator (sorted, unique).
    pub tags: Vec<String>,
    /// Last recorded lifecycle state.
    pub status: RecordedStatus,
    /// Start of the latest instance.
    pub started_at: Option<i64>,
    /// End of the latest instance (None while live).
    pub ended_at: Option<i64>,
    /// Sort key of listings: the latest start, or the creation time.
    pub sort_at: i64,
}

/// One past or current stream instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    /// Instance id (as in its URIs).
    pub instance: String,
    /// Start, Unix milliseconds.
    pub started_at: i64,
    /// End, Unix milliseconds; None while running.
    pub ended_at: Option<i64>,
}

/// Position after the last row of a page: rows continue with a smaller `sort_at`, or an equal
/// one and a larger name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// `sort_at` of the last row.
    pub sort_at: i64,
    /// Name of the last row.
    pub name: String,
}

/// A page of the stream listing.
#[derive(Debug, Clone, Default)]
pub struct StreamQuery {
    /// Only this status.
    pub status: Option<RecordedStatus>,
    /// Only streams with this tag.
    pub tag: Option<String>,
    /// Continue after this row.
    pub after: Option<After>,
    /// Rows to return.
    pub limit: u32,
}

/// Fields a PATCH changes; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct StreamPatch {
    /// New title.
    pub title: Option<Option<String>>,
    /// New description.
    pub description: Option<Option<String>>,
    /// New tags (replacing the old ones).
    pub tags: Option<Vec<String>>,
}

/// A stream key as stored (never its secret; the hash is stored beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// Public id.
    pub id: String,
    /// The stream it publishes.
    pub stream: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// What revoking a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The key was active and is now revoked.
    Now(KeyRecord),
    /// The key had been revoked before.
    Already,
    /// No key has this id.
    Unknown,
}

/// One chat message as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRecord {
    /// Unique id, increasing in the order messages were accepted (a history cursor).
    pub id: i64,
    /// The stream whose room it was posted in.
    pub stream: StreamName,
    /// The poster's display name.
    pub name: String,
    /// The text.
    pub text: String,
    /// When it was accepted, Unix milliseconds.
    pub sent_at: i64,
    /// The stream's media time then, milliseconds (None: the stream was not live).
    pub stream_time_ms: Option<i64>,
}

/// Stream metadata and keys, durable across restarts.
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// Streams for a listing page, newest first.
    fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamRecord>, StoreError>;
    /// One stream's metadata.
    fn stream(&self, name: &StreamName) -> Result<Option<StreamRecord>, StoreError>;
    /// The latest instances of a stream, newest first.
    fn sessions(&self, name: &StreamName, limit: u32) -> Result<Vec<SessionRecord>, StoreError>;
    /// Records a stream (offline) unless it is known.
    fn ensure_stream(&self, name: &StreamName, now: i64) -> Result<(), StoreError>;
    /// Applies a patch; None when the stream is unknown.
    fn update_stream(
        &self,
        name: &StreamName,
        patch: &StreamPatch,
        now: i64,
    ) -> Result<Option<StreamRecord>, StoreError>;
    /// Records a new instance (creating the stream if needed) and marks it live.
    fn stream_started(&self, name: &StreamName, instance: &str, at: i64) -> Result<(), StoreError>;
    /// Records the end of an instance.
    fn stream_ended(&self, name: &StreamName, instance: &str, at: i64) -> Result<(), StoreError>;
    /// At start-up: instances recorded as running were cut by a stop or a crash; ends them.
    fn end_interrupted(&self, at: i64) -> Result<usize, StoreError>;
    /// Stores a new key (and its stream, if unknown) with the hash of its secret.
    fn insert_key(&self, key: &KeyRecord, hash: &str) -> Result<(), StoreError>;
    /// Keys not revoked, oldest first, with their hashes.
    fn active_keys(&self) -> Result<Vec<(KeyRecord, String)>, StoreError>;
    /// Revokes a key.
    fn revoke_key(&self, id: &str, at: i64) -> Result<Revoked, StoreError>;
    /// Statements executed so far (for the cache's effect in metrics and benchmarks).
    fn queries(&self) -> u64;
    /// Stores chat messages (one transaction).
    fn insert_chat_messages(&self, messages: &[ChatRecord]) -> Result<(), StoreError>;
    /// A stream's chat messages with an id below `before` (all when None), newest first.
    fn chat_messages(
        &self,
        stream: &StreamName,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatRecord>, StoreError>;
    /// Deletes a chat message; false when the stream has no message with this id.
    fn delete_chat_message(&self, stream: &StreamName, id: i64) -> Result<bool, StoreError>;
    /// Bans (`banned`) or unbans a display name (compared in lowercase) in a stream's chat;
    /// true when that changed something.
    fn set_chat_ban(
        &self,
        stream: &StreamName,
        name: &str,
        banned: bool,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Display names banned in a stream's chat (lowercase).
    fn chat_bans(&self, stream: &StreamName) -> Result<Vec<String>, StoreError>;
}

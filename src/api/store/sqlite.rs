//! SQLite implementation of [`MetaStore`]: one file `headwater.db` under the data directory (or
//! memory only), WAL journal, migrations applied at open.
//!
//! One connection behind a mutex: writes are rare (stream start/end, key changes, edits) and
//! reads are mostly answered by the API's cache, so there is nothing for a pool to do.

use super::{
    ChatRecord, KeyRecord, MetaStore, RecordedStatus, Revoked, SessionRecord, StoreError,
    StreamPatch, StreamQuery, StreamRecord,
};
use crate::names::StreamName;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The database file's name under the data directory.
pub const DATABASE_FILE: &str = "headwater.db";

/// Schema versions, applied in order, each once (recorded in `schema_migrations`). Portable
/// SQL: BIGINT times in Unix milliseconds, TEXT ids, composite keys instead of rowids.
const MIGRATIONS: &[&str] = &[
    // 1: streams, their instances and tags; stream keys.
    "CREATE TABLE streams (
        name TEXT PRIMARY KEY,
        title TEXT,
        description TEXT,
        tags TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        started_at BIGINT,
        ended_at BIGINT,
        sort_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX streams_by_status_start ON streams (status, sort_at);
    CREATE INDEX streams_by_start ON streams (sort_at, name);
    CREATE TABLE stream_tags (
        stream TEXT NOT NULL REFERENCES streams (name),
        tag TEXT NOT NULL,
        PRIMARY KEY (tag, stream)
    );
    CREATE TABLE stream_sessions (
        stream TEXT NOT NULL REFERENCES streams (name),
        instance TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        PRIMARY KEY (stream, instance)
    );
    CREATE INDEX sessions_by_stream_start ON stream_sessions (stream, started_at);
    CREATE TABLE stream_keys (
        id TEXT PRIMARY KEY,
        stream TEXT NOT NULL REFERENCES streams (name),
        key_hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE INDEX keys_by_stream ON stream_keys (stream);",
    // 2: chat messages and bans (no foreign key: a room exists for any valid stream name).
    "CREATE TABLE chat_messages (
        id BIGINT PRIMARY KEY,
        stream TEXT NOT NULL,
        name TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at BIGINT NOT NULL,
        stream_time_ms BIGINT
    );
    CREATE INDEX chat_messages_by_stream_id ON chat_messages (stream, id);
    CREATE INDEX chat_messages_by_stream_time ON chat_messages (stream, sent_at);
    CREATE TABLE chat_bans (
        stream TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (stream, name)
    );",
];

/// Tags are stored joined by this (tags themselves are validated to exclude it).
const TAG_SEPARATOR: char = ',';

/// The SQLite metadata store.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
    queries: AtomicU64,
}

const STREAM_COLUMNS: &str =
    "name, title, description, tags, status, started_at, ended_at, sort_at";

fn stream_row(row: &Row<'_>) -> rusqlite::Result<(String, StreamRecordRaw)> {
    Ok((
        row.get(0)?,
        StreamRecordRaw {
            title: row.get(1)?,
            description: row.get(2)?,
            tags: row.get(3)?,
            status: row.get(4)?,
            started_at: row.get(5)?,
            ended_at: row.get(6)?,
            sort_at: row.get(7)?,
        },
    ))
}

struct StreamRecordRaw {
    title: Option<String>,
    description: Option<String>,
    tags: String,
    status: String,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    sort_at: i64,
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt {
        table: "streams",
        message,
    }
}

fn record((name, raw): (String, StreamRecordRaw)) -> Result<StreamRecord, StoreError> {
    Ok(StreamRecord {
        name: StreamName::parse(&name).map_err(|e| corrupt(e.to_string()))?,
        title: raw.title,
        description: raw.description,
        tags: raw
            .tags
            .split(TAG_SEPARATOR)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        status: RecordedStatus::parse(&raw.status)
            .ok_or_else(|| corrupt(format!("unknown status {:?}", raw.status)))?,
        started_at: raw.started_at,
        ended_at: raw.ended_at,
        sort_at: raw.sort_at,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/headwater.db` and applies pending migrations. An
    /// empty `data_dir` opens a private in-memory database.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let connection = if data_dir.as_os_str().is_empty() {
            Connection::open_in_memory()?
        } else {
            std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Directory {
                path: data_dir.display().to_string(),
                source,
            })?;
            let connection = Connection::open(data_dir.join(DATABASE_FILE))?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "NORMAL")?;
            connection
        };
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let store = Self {
            connection: Mutex::new(connection),
            queries: AtomicU64::new(0),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.lock();
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL
            )",
        )?;
        let applied: i64 = connection.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )?;
        for (index, sql) in MIGRATIONS.iter().enumerate() {
            let version = index as i64 + 1;
            if version <= applied {
                continue;
            }
            let tx = connection.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now_millis()],
            )?;
            tx.commit()?;
            tracing::info!(version, "metadata store: migration applied");
        }
        Ok(())
    }
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Inserts a stream row unless one exists (portable: no `INSERT OR IGNORE`).
fn ensure_stream(tx: &Connection, name: &str, now: i64) -> rusqlite::Result<()> {
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM streams WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?;
    if exists.is_none() {
        tx.execute(
            "INSERT INTO streams (name, status, sort_at, created_at, updated_at)
             VALUES (?1, 'offline', ?2, ?2, ?2)",
            params![name, now],
        )?;
    }
    Ok(())
}

impl MetaStore for SqliteStore {
    fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamRecord>, StoreError> {
        let mut sql = format!("SELECT {STREAM_COLUMNS} FROM streams WHERE 1 = 1");
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(status) = query.status {
            values.push(status.as_str().to_owned().into());
            sql.push_str(&format!(" AND status = ?{}", values.len()));
        }
        if let Some(tag) = &query.tag {
            values.push(tag.clone().into());
            sql.push_str(&format!(
                " AND name IN (SELECT stream FROM stream_tags WHERE tag = ?{})",
                values.len()
            ));
        }
        if let Some(after) = &query.after {
            values.push(after.sort_at.into());
            let at = values.len();
            values.push(after.name.clone().into());
            let name = values.len();
            sql.push_str(&format!(
                " AND (sort_at < ?{at} OR (sort_at = ?{at} AND name > ?{name}))"
            ));
        }
        values.push(i64::from(query.limit).into());
        sql.push_str(&format!(
            " ORDER BY sort_at DESC, name ASC LIMIT ?{}",
            values.len()
        ));
        let connection = self.lock();
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), stream_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(record).collect()
    }

    fn stream(&self, name: &StreamName) -> Result<Option<StreamRecord>, StoreError> {
        let connection = self.lock();
        let row = connection
            .prepare_cached(&format!(
                "SELECT {STREAM_COLUMNS} FROM streams WHERE name = ?1"
            ))?
            .query_row([name.as_str()], stream_row)
            .optional()?;
        row.map(record).transpose()
    }

    fn sessions(&self, name: &StreamName, limit: u32) -> Result<Vec<SessionRecord>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT instance, started_at, ended_at FROM stream_sessions
             WHERE stream = ?1 ORDER BY started_at DESC LIMIT ?2",
        )?;
        let rows = statement
            .query_map(params![name.as_str(), i64::from(limit)], |row| {
                Ok(SessionRecord {
                    instance: row.get(0)?,
                    started_at: row.get(1)?,
                    ended_at: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn ensure_stream(&self, name: &StreamName, now: i64) -> Result<(), StoreError> {
        let connection = self.lock();
        ensure_stream(&connection, name.as_str(), now)?;
        Ok(())
    }

    fn update_stream(
        &self,
        name: &StreamName,
        patch: &StreamPatch,
        now: i64,
    ) -> Result<Option<StreamRecord>, StoreError> {
        {
            let mut connection = self.lock();
            let tx = connection.transaction()?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM streams WHERE name = ?1",
                    [name.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            if let Some(title) = &patch.title {
                tx.execute(
                    "UPDATE streams SET title = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name.as_str(), title, now],
                )?;
            }
            if let Some(description) = &patch.description {
                tx.execute(
                    "UPDATE streams SET description = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name.as_str(), description, now],
                )?;
            }
            if let Some(tags) = &patch.tags {
                let joined = tags.join(&TAG_SEPARATOR.to_string());
                tx.execute(
                    "UPDATE streams SET tags = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name.as_str(), joined, now],
                )?;
                tx.execute("DELETE FROM stream_tags WHERE stream = ?1", [name.as_str()])?;
                for tag in tags {
                    tx.execute(
                        "INSERT INTO stream_tags (stream, tag) VALUES (?1, ?2)",
                        params![name.as_str(), tag],
                    )?;
                }
            }
            tx.commit()?;
        }
        self.stream(name)
    }

    fn stream_started(&self, name: &StreamName, instance: &str, at: i64) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        ensure_stream(&tx, name.as_str(), at)?;
        tx.execute(
            "UPDATE streams SET status = 'live', started_at = ?2, ended_at = NULL, sort_at = ?2,
             updated_at = ?2 WHERE name = ?1",
            params![name.as_str(), at],
        )?;
        tx.execute(
            "INSERT INTO stream_sessions (stream, instance, started_at) VALUES (?1, ?2, ?3)",
            params![name.as_str(), instance, at],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn stream_ended(&self, name: &StreamName, instance: &str, at: i64) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE stream_sessions SET ended_at = ?3 WHERE stream = ?1 AND instance = ?2",
            params![name.as_str(), instance, at],
        )?;
        // Only if no newer instance started meanwhile.
        tx.execute(
            "UPDATE streams SET status = 'ended', ended_at = ?3, updated_at = ?3
             WHERE name = ?1 AND started_at = (SELECT started_at FROM stream_sessions
                 WHERE stream = ?1 AND instance = ?2)",
            params![name.as_str(), instance, at],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn end_interrupted(&self, at: i64) -> Result<usize, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE stream_sessions SET ended_at = ?1 WHERE ended_at IS NULL",
            [at],
        )?;
        let ended = tx.execute(
            "UPDATE streams SET status = 'ended', ended_at = ?1, updated_at = ?1
             WHERE status = 'live'",
            [at],
        )?;
        tx.commit()?;
        Ok(ended)
    }

    fn insert_key(&self, key: &KeyRecord, hash: &str) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        ensure_stream(&tx, &key.stream, key.created_at)?;
        tx.execute(
            "INSERT INTO stream_keys (id, stream, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![key.id, key.stream, hash, key.created_at],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn active_keys(&self) -> Result<Vec<(KeyRecord, String)>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT id, stream, created_at, key_hash FROM stream_keys
             WHERE revoked_at IS NULL ORDER BY created_at, id",
        )?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    KeyRecord {
                        id: row.get(0)?,
                        stream: row.get(1)?,
                        created_at: row.get(2)?,
                    },
                    row.get(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn revoke_key(&self, id: &str, at: i64) -> Result<Revoked, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let key = tx
            .query_row(
                "SELECT id, stream, created_at, revoked_at FROM stream_keys WHERE id = ?1",
                [id],
                |row| {
                    Ok((
                        KeyRecord {
                            id: row.get(0)?,
                            stream: row.get(1)?,
                            created_at: row.get(2)?,
                        },
                        row.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()?;
        let outcome = match key {
            None => Revoked::Unknown,
            Some((_, Some(_))) => Revoked::Already,
            Some((key, None)) => {
                tx.execute(
                    "UPDATE stream_keys SET revoked_at = ?2 WHERE id = ?1",
                    params![id, at],
                )?;
                Revoked::Now(key)
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn insert_chat_messages(&self, messages: &[ChatRecord]) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chat_messages (id, stream, name, text, sent_at, stream_time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for m in messages {
                insert.execute(params![
                    m.id,
                    m.stream.as_str(),
                    m.name,
                    m.text,
                    m.sent_at,
                    m.stream_time_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn chat_messages(
        &self,
        stream: &StreamName,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatRecord>, StoreError> {
        let connection = self.lock();
        let mut select = connection.prepare_cached(
            "SELECT id, name, text, sent_at, stream_time_ms FROM chat_messages
             WHERE stream = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = select.query_map(
            params![stream.as_str(), before.unwrap_or(i64::MAX), limit],
            |row| {
                Ok(ChatRecord {
                    id: row.get(0)?,
                    stream: stream.clone(),
                    name: row.get(1)?,
                    text: row.get(2)?,
                    sent_at: row.get(3)?,
                    stream_time_ms: row.get(4)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_chat_message(&self, stream: &StreamName, id: i64) -> Result<bool, StoreError> {
        let deleted = self.lock().execute(
            "DELETE FROM chat_messages WHERE stream = ?1 AND id = ?2",
            params![stream.as_str(), id],
        )?;
        Ok(deleted > 0)
    }

    fn set_chat_ban(
        &self,
        stream: &StreamName,
        name: &str,
        banned: bool,
        at: i64,
    ) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM chat_bans WHERE stream = ?1 AND name = ?2",
                params![stream.as_str(), name],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .is_some();
        let changed = match (exists, banned) {
            (false, true) => tx.execute(
                "INSERT INTO chat_bans (stream, name, created_at) VALUES (?1, ?2, ?3)",
                params![stream.as_str(), name, at],
            )?,
            (true, false) => tx.execute(
                "DELETE FROM chat_bans WHERE stream = ?1 AND name = ?2",
                params![stream.as_str(), name],
            )?,
            _ => 0,
        };
        tx.commit()?;
        Ok(changed > 0)
    }

    fn chat_bans(&self, stream: &StreamName) -> Result<Vec<String>, StoreError> {
        let connection = self.lock();
        let mut select =
            connection.prepare_cached("SELECT name FROM chat_bans WHERE stream = ?1")?;
        let rows = select.query_map([stream.as_str()], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::store::After;

    fn name(s: &str) -> StreamName {
        StreamName::parse(s).expect("name")
    }

    #[test]
    fn migrations_history_keys_and_paging_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            for (i, s) in ["a", "b", "c"].iter().enumerate() {
                store
                    .stream_started(&name(s), "i1", 1_000 + i as i64)
                    .expect("start");
            }
            store.stream_ended(&name("a"), "i1", 5_000).expect("end");
            let key = KeyRecord {
                id: "k1".into(),
                stream: "d".into(),
                created_at: 7,
            };
            store.insert_key(&key, "hash").expect("key");
            let patch = StreamPatch {
                title: Some(Some("T".into())),
                tags: Some(vec!["x".into(), "y".into()]),
                ..StreamPatch::default()
            };
            assert!(store
                .update_stream(&name("b"), &patch, 9)
                .expect("patch")
                .is_some());
            assert!(store
                .update_stream(&name("zz"), &patch, 9)
                .expect("patch")
                .is_none());
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(store.end_interrupted(6_000).expect("recover"), 2);
        let a = store.stream(&name("a")).expect("a").expect("exists");
        assert_eq!(
            (a.status, a.started_at, a.ended_at),
            (RecordedStatus::Ended, Some(1_000), Some(5_000))
        );
        assert_eq!(
            store.sessions(&name("c"), 5).expect("s")[0].ended_at,
            Some(6_000)
        );
        assert_eq!(store.active_keys().expect("keys").len(), 1);
        let page = |after: Option<After>| {
            store
                .list_streams(&StreamQuery {
                    after,
                    limit: 2,
                    ..StreamQuery::default()
                })
                .expect("list")
        };
        let first = page(None);
        let names: Vec<_> = first.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["c", "b"]);
        let last = first.last().expect("row");
        let second = page(Some(After {
            sort_at: last.sort_at,
            name: last.name.to_string(),
        }));
        let names: Vec<_> = second.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["a", "d"]);
        let tagged = store
            .list_streams(&StreamQuery {
                tag: Some("y".into()),
                limit: 10,
                ..StreamQuery::default()
            })
            .expect("tagged");
        assert_eq!(tagged.len(), 1);
        assert_eq!(tagged[0].tags, ["x", "y"]);
        assert!(
            matches!(store.revoke_key("k1", 10).expect("revoke"), Revoked::Now(k) if k.stream == "d")
        );
        assert_eq!(store.revoke_key("k1", 11).expect("again"), Revoked::Already);
        assert_eq!(
            store.revoke_key("k2", 11).expect("unknown"),
            Revoked::Unknown
        );
        assert!(store.queries() > 0);
    }
}

//! Stream keys: `POST /keys` creates one (the secret is returned once and stored as its
//! SHA-256), `GET /keys` lists them, `DELETE /keys/{id}` revokes one and cuts a publisher
//! that is live on it. [`KeyCache`] holds the active keys in memory for the publish path.

use super::error::{ApiError, ErrorBody};
use super::store::{KeyRecord, MetaStore, Revoked, StoreError};
use super::{json, Admin, Api, ApiJson};
use crate::names::StreamName;
use crate::stream::{KeyDirectory, KeyGrant};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use utoipa::ToSchema;

/// The hash a key's secret is stored and looked up by.
fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// The active run-time keys, by the hash of their secret. Read on every publish (no I/O);
/// written on create and revoke, after the store.
#[derive(Debug, Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, (KeyRecord, StreamName)>>,
}

impl KeyCache {
    /// Loads every active key from the store.
    pub fn load(store: &dyn MetaStore) -> Result<Self, StoreError> {
        let mut by_hash = HashMap::new();
        for (record, hash) in store.active_keys()? {
            match StreamName::parse(&record.stream) {
                Ok(stream) => {
                    by_hash.insert(hash, (record, stream));
                }
                Err(error) => tracing::warn!(id = %record.id, %error, "skipping a stored key"),
            }
        }
        Ok(Self {
            by_hash: RwLock::new(by_hash),
        })
    }

    fn insert(&self, hash: String, record: KeyRecord, stream: StreamName) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, (record, stream));
    }

    fn remove(&self, id: &str) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (record, _)| record.id != id);
    }

    fn list(&self) -> Vec<KeyRecord> {
        let mut keys: Vec<KeyRecord> = self
            .by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(record, _)| record.clone())
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        keys
    }
}

impl KeyDirectory for KeyCache {
    fn lookup(&self, key: &str) -> Option<KeyGrant> {
        let by_hash = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        by_hash.get(&hash(key)).map(|(record, stream)| KeyGrant {
            id: record.id.clone(),
            stream: stream.clone(),
        })
    }
}

/// `POST /keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The stream the key publishes (1-64 of a-z A-Z 0-9 - _).
    pub stream: String,
}

/// A new key, with its secret (shown this once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// Public id (for `DELETE /keys/{id}`).
    pub id: String,
    /// The secret for `rtmp://host:1935/<app>/<key>`. Only its hash is stored.
    pub key: String,
    /// The stream it publishes.
    pub stream: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// A key as listed (never the secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// Public id.
    pub id: String,
    /// The stream it publishes.
    pub stream: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// `GET /keys` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Active keys, oldest first.
    pub keys: Vec<KeyInfo>,
}

/// Creates a stream key.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys",
    security(("admin" = [])),
    request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey, description = "Created; `key` is shown only this once"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn create(
    _admin: Admin,
    State(api): State<Api>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let stream = StreamName::parse(&body.stream)
        .map_err(|e| ApiError::BadRequest(format!("stream: {e}")))?;
    let secret = format!("hwk_{}", random_hex(24));
    let record = KeyRecord {
        id: format!("key_{}", random_hex(8)),
        stream: stream.to_string(),
        created_at: super::store::sqlite::now_millis(),
    };
    let hashed = hash(&secret);
    let stored = record.clone();
    let stored_hash = hashed.clone();
    api.blocking(move |s| s.insert_key(&stored, &stored_hash))
        .await?;
    api.inner.keys.insert(hashed, record.clone(), stream);
    api.inner.cache.changed();
    tracing::info!(id = %record.id, stream = %record.stream, "stream key created");
    Ok(json(
        StatusCode::CREATED,
        &CreatedKey {
            id: record.id,
            key: secret,
            stream: record.stream,
            created_at: super::streams::rfc3339(record.created_at),
        },
    ))
}

/// Lists the active stream keys (ids and streams, never secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    security(("admin" = [])),
    responses((status = 200, body = KeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn list(_admin: Admin, State(api): State<Api>) -> Response {
    let keys = api
        .inner
        .keys
        .list()
        .into_iter()
        .map(|k| KeyInfo {
            created_at: super::streams::rfc3339(k.created_at),
            id: k.id,
            stream: k.stream,
        })
        .collect();
    json(StatusCode::OK, &KeyList { keys })
}

/// Revokes a stream key; a publisher live on it is disconnected (within a second).
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    security(("admin" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Already revoked"),
        (status = 429, body = ErrorBody)))]
pub async fn revoke(
    _admin: Admin,
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::BadRequest(format!(
            "id: {:?} is not a key id",
            id.chars().take(80).collect::<String>()
        )));
    }
    let at = super::store::sqlite::now_millis();
    let revoked_id = id.clone();
    match api.blocking(move |s| s.revoke_key(&revoked_id, at)).await? {
        Revoked::Now(record) => {
            // Directory first, then the registry: a concurrent publish is refused or cut.
            api.inner.keys.remove(&record.id);
            let cut = api.inner.registry.revoke(&record.id);
            tracing::info!(id = %record.id, stream = %record.stream, publishers_cut = cut.len(), "stream key revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        Revoked::Already => Err(ApiError::Conflict(format!("key {id} is already revoked"))),
        Revoked::Unknown => Err(ApiError::NotFound(format!("no key {id}"))),
    }
}

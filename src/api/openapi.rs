//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' and types' annotations
//! (utoipa) once at start and served as bytes.

use super::error::ErrorBody;
use super::{keys, streams, viewers};
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// `GET /api/v1/streams/{name}/qoe` is served by the operations router (`serve::observe`); it
/// is documented here so the document lists every `/api/v1` route.
#[utoipa::path(get, path = "/api/v1/streams/{name}/qoe", tag = "viewers",
    params(("name" = String, Path, description = "Stream name")),
    responses((status = 200, description = "Viewer QoE aggregates from CMCD (sessions, startup, buffer, bitrates)"),
        (status = 404, body = ErrorBody, description = "No QoE data for the stream")))]
#[allow(dead_code)]
fn qoe() {}

/// The chat routes are served by `chat` (WebSocket and history); documented here so the
/// document lists every `/api/v1` route.
#[utoipa::path(get, path = "/api/v1/streams/{name}/chat", tag = "chat",
    params(("name" = String, Path, description = "Stream name"),
        ("name" = Option<String>, Query, description = "Display name (1-32 characters); without it the connection may read but not post")),
    responses((status = 101, description = "WebSocket: JSON frames `joined`, `message` {id, name, text, ts, stream_time}, `deleted`, `error`; clients send `{\"type\":\"message\",\"text\":...}`"),
        (status = 400, body = ErrorBody, description = "Bad stream or display name, or not a WebSocket upgrade")))]
#[allow(dead_code)]
fn chat() {}

/// `GET /api/v1/streams/{name}/chat/history`.
#[utoipa::path(get, path = "/api/v1/streams/{name}/chat/history", tag = "chat",
    params(("name" = String, Path, description = "Stream name"),
        ("before" = Option<i64>, Query, description = "Cursor: `next_before` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Messages per page, 1-200 (default 50)")),
    responses((status = 200, description = "Messages, newest first, and `next_before`"),
        (status = 400, body = ErrorBody, description = "Bad cursor or limit")))]
#[allow(dead_code)]
fn chat_history() {}

/// `DELETE /api/v1/streams/{name}/chat/messages/{id}` (admin).
#[utoipa::path(delete, path = "/api/v1/streams/{name}/chat/messages/{id}", tag = "chat",
    params(("name" = String, Path, description = "Stream name"), ("id" = i64, Path, description = "Message id")),
    responses((status = 204, description = "Deleted; `deleted` is broadcast to the room"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = [])))]
#[allow(dead_code)]
fn chat_delete() {}

/// `PUT /api/v1/streams/{name}/chat/bans/{display}` (admin).
#[utoipa::path(put, path = "/api/v1/streams/{name}/chat/bans/{display}", tag = "chat",
    params(("name" = String, Path, description = "Stream name"), ("display" = String, Path, description = "Display name to ban")),
    responses((status = 204, description = "Banned; live sessions with that name are closed (1008)"), (status = 401, body = ErrorBody)),
    security(("admin" = [])))]
#[allow(dead_code)]
fn chat_ban() {}

/// `DELETE /api/v1/streams/{name}/chat/bans/{display}` (admin).
#[utoipa::path(delete, path = "/api/v1/streams/{name}/chat/bans/{display}", tag = "chat",
    params(("name" = String, Path, description = "Stream name"), ("display" = String, Path, description = "Display name to unban")),
    responses((status = 204, description = "Unbanned"), (status = 401, body = ErrorBody)),
    security(("admin" = [])))]
#[allow(dead_code)]
fn chat_unban() {}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document")))]
pub async fn serve(
    axum::extract::State(api): axum::extract::State<super::Api>,
) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        api.inner.openapi.clone(),
    )
}

struct AdminAuth;

impl Modify for AdminAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (HEADWATER_ADMIN_TOKEN or api.admin_token)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Headwater API", description = "Streams, stream keys and viewers of a Headwater origin. Errors are `{\"error\", \"message\"}`; admin routes need `Authorization: Bearer <admin token>`; every route is rate-limited per client (429)."),
    paths(
        streams::list, streams::detail, streams::patch,
        keys::create, keys::list, keys::revoke,
        viewers::beacon, qoe, serve,
        chat, chat_history, chat_delete, chat_ban, chat_unban,
    ),
    components(schemas(
        ErrorBody, streams::Stream, streams::StreamDetail, streams::StreamList,
        streams::StreamStatus, streams::Rendition, streams::Ingest, streams::Playback,
        streams::Session, streams::PatchStream, viewers::ViewerCounts, viewers::Beacon,
        keys::CreateKey, keys::CreatedKey, keys::KeyInfo, keys::KeyList,
    )),
    modifiers(&AdminAuth),
)]
struct ApiDoc;

/// The document as JSON.
pub fn document() -> bytes::Bytes {
    ApiDoc::openapi()
        .to_json()
        .expect("the generated OpenAPI document serializes")
        .into()
}

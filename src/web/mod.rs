//! The web player: `/` lists live streams (from the API), `/watch/<stream>` plays one with
//! hls.js (native HLS on Safari), a quality selector, a live-latency readout and the chat.
//!
//! Plain HTML/CSS/JS embedded in the binary (works offline; hls.js is vendored at a pinned
//! version). Assets are served under content-hashed names with a one-year immutable lifetime and
//! strong ETags; pages revalidate (`no-cache`) so a new build's asset names are picked up at once.
//! Beside the media path: reads nothing but the API over HTTP from the browser.

use crate::cache::CachedObject;
use crate::names::StreamName;
use crate::serve::object::respond;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// hls.js version vendored in `src/web/assets/` (update both together).
pub const HLS_JS_VERSION: &str = "1.7.4";

struct Asset {
    /// Logical name used in page templates, e.g. `watch.js`.
    logical: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

const ASSETS: [Asset; 5] = [
    Asset {
        logical: "style.css",
        body: include_bytes!("assets/style.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        logical: "home.js",
        body: include_bytes!("assets/home.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        logical: "watch.js",
        body: include_bytes!("assets/watch.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        logical: "chat.js",
        body: include_bytes!("assets/chat.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        logical: "hls.min.js",
        body: include_bytes!("assets/hls-1.7.4.min.js"),
        content_type: "text/javascript; charset=utf-8",
    },
];

fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!(
        "\"{}\"",
        digest
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn object(body: Bytes, content_type: &'static str, cache_control: &'static str) -> CachedObject {
    CachedObject {
        status: 200,
        etag: HeaderValue::from_str(&etag(&body)).ok(),
        body,
        content_type: Some(HeaderValue::from_static(content_type)),
        cache_control: Some(HeaderValue::from_static(cache_control)),
        last_modified: None,
        fetched_at_ms: 0,
        source_age: 0,
    }
}

/// Everything the pages serve, built once.
struct Site {
    /// Hashed file name -> asset response.
    assets: HashMap<String, CachedObject>,
    /// Logical name -> URL path (`/assets/watch-1a2b3c4d.js`).
    urls: HashMap<&'static str, String>,
    home: CachedObject,
}

const PAGE_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=31536000, immutable";

static SITE: LazyLock<Site> = LazyLock::new(|| {
    let mut assets = HashMap::new();
    let mut urls = HashMap::new();
    for asset in &ASSETS {
        let hash: String = Sha256::digest(asset.body)
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let (stem, ext) = asset.logical.split_once('.').unwrap_or((asset.logical, ""));
        let file = format!("{stem}-{hash}.{ext}");
        urls.insert(asset.logical, format!("/assets/{file}"));
        assets.insert(
            file,
            object(
                Bytes::from_static(asset.body),
                asset.content_type,
                ASSET_CACHE,
            ),
        );
    }
    let home = page(&urls, "Live streams · Headwater", HOME_BODY, &["home.js"]);
    Site { assets, urls, home }
});

const HOME_BODY: &str = r#"<main>
  <h2>Live now</h2>
  <ul id="streams" class="streams" aria-live="polite"></ul>
  <p id="empty" class="empty">Nothing is live right now. Publish to <code>rtmp://this-host:1935/live/&lt;stream-key&gt;</code> and it appears here.</p>
</main>"#;

const WATCH_BODY: &str = r#"<main>
  <h2 id="title"></h2>
  <div class="watch">
    <div>
      <div class="stage"><video id="video" controls autoplay muted playsinline aria-label="Live video"></video></div>
      <div class="controls">
        <div><label for="quality">Quality</label><select id="quality" disabled><option value="-1">Auto</option></select></div>
        <div><span class="label">Latency:</span> <output id="latency" aria-live="off">–</output></div>
        <div id="status" class="status" role="status">Loading…</div>
      </div>
    </div>
    <section class="chat" aria-labelledby="chat-heading">
      <h3 id="chat-heading">Chat</h3>
      <ul id="chat-messages" aria-live="polite"></ul>
      <p id="chat-status" class="status" role="status">Connecting…</p>
      <form id="chat-form">
        <label for="chat-name">Name</label><input id="chat-name" maxlength="32" autocomplete="nickname">
        <label for="chat-text">Message</label><input id="chat-text" maxlength="500" autocomplete="off">
        <button type="submit">Send</button>
      </form>
    </section>
  </div>
</main>"#;

fn page(
    urls: &HashMap<&'static str, String>,
    title: &str,
    body: &str,
    scripts: &[&str],
) -> CachedObject {
    let url = |name: &str| urls.get(name).cloned().unwrap_or_default();
    let scripts: String = scripts
        .iter()
        .map(|s| format!("<script src=\"{}\" defer></script>\n", url(s)))
        .collect();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"{css}\">\n{scripts}</head>\n<body>\n\
         <header><h1><a href=\"/\">Headwater</a></h1><span>live video origin</span></header>\n{body}\n</body>\n</html>\n",
        css = url("style.css"),
    );
    object(Bytes::from(html), "text/html; charset=utf-8", PAGE_CACHE)
}

async fn home(headers: HeaderMap) -> Response {
    respond(&headers, &SITE.home, None)
}

async fn watch(Path(stream): Path<String>, headers: HeaderMap) -> Response {
    if StreamName::parse(&stream).is_err() {
        return (StatusCode::NOT_FOUND, "no such stream\n").into_response();
    }
    // The page is the same for every stream (the script reads the name from the URL).
    static WATCH: LazyLock<Arc<CachedObject>> = LazyLock::new(|| {
        Arc::new(page(
            &SITE.urls,
            "Watch · Headwater",
            WATCH_BODY,
            &["hls.min.js", "watch.js", "chat.js"],
        ))
    });
    respond(&headers, &WATCH, None)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match SITE.assets.get(&file) {
        Some(object) => respond(&headers, object, None),
        None => (
            StatusCode::NOT_FOUND,
            [("cache-control", "max-age=60")],
            "no such asset\n",
        )
            .into_response(),
    }
}

/// The pages and their assets.
pub fn router() -> Router {
    Router::new()
        .route("/", get(home))
        .route("/watch/{stream}", get(watch))
        .route("/assets/{file}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_reference_hashed_assets_that_exist() {
        let home = String::from_utf8(SITE.home.body.to_vec()).expect("utf-8");
        for name in ["style.css", "home.js"] {
            let url = &SITE.urls[name];
            assert!(home.contains(url.as_str()), "{url} not in the home page");
            let file = url.trim_start_matches("/assets/");
            assert!(SITE.assets.contains_key(file));
        }
        assert!(
            !home.contains("http://") && !home.contains("https://"),
            "no external links: the page must work offline"
        );
        let hls = &SITE.assets[SITE.urls["hls.min.js"].trim_start_matches("/assets/")];
        assert_eq!(
            hls.cache_control,
            Some(HeaderValue::from_static(ASSET_CACHE))
        );
        assert!(hls.body.len() > 100_000);
    }
}

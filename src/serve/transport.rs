//! What a transport adds around the shared Router: per-protocol-version metrics (requests and
//! response bytes actually sent) and, on TLS over TCP with HTTP/3 on, the `Alt-Svc` header.
//! The application itself is untouched: every transport serves the same Router.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::Counter;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// The `version` label values, by [`version_index`].
const VERSIONS: [&str; 5] = ["1.0", "1.1", "2", "3", "other"];

fn version_index(version: Version) -> usize {
    match version {
        Version::HTTP_09 | Version::HTTP_10 => 0,
        Version::HTTP_11 => 1,
        Version::HTTP_2 => 2,
        Version::HTTP_3 => 3,
        _ => 4,
    }
}

/// The `version` label of a request.
pub fn version_label(version: Version) -> &'static str {
    VERSIONS[version_index(version)]
}

/// One listener's request and response-byte counters per version, registered on first use
/// and reused after (no metric key built per request).
type VersionCounters = [OnceLock<(Counter, Counter)>; VERSIONS.len()];

/// Wraps the shared Router for one listener. `scheme` labels metrics (`http` or `https`);
/// `alt_svc` is the header value to advertise, if any.
pub fn layer(router: axum::Router, scheme: &'static str, alt_svc: Option<String>) -> axum::Router {
    let alt_svc = alt_svc.and_then(|v| HeaderValue::from_str(&v).ok());
    let counters: Arc<VersionCounters> = Arc::default();
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let alt_svc = alt_svc.clone();
            let counters = counters.clone();
            async move {
                let index = version_index(request.version());
                let (requests, bytes) = counters[index].get_or_init(|| {
                    let version = VERSIONS[index];
                    (
                        metrics::counter!(
                            "headwater_http_version_requests_total",
                            "version" => version, "scheme" => scheme
                        ),
                        metrics::counter!(
                            "headwater_http_version_response_bytes_total",
                            "version" => version, "scheme" => scheme
                        ),
                    )
                });
                requests.increment(1);
                let bytes = bytes.clone();
                let mut response = next.run(request).await;
                if let Some(value) = alt_svc {
                    response.headers_mut().insert(header::ALT_SVC, value);
                }
                let (parts, body) = response.into_parts();
                let counted = CountedBody { inner: body, bytes };
                Response::from_parts(parts, Body::new(counted))
            }
        },
    ))
}

/// A response body that counts the data bytes handed to the transport.
struct CountedBody {
    inner: Body,
    bytes: Counter,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes.increment(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
use std::pin::Pin;
use std::task::{Context, Poll};

/// The `version` label of a request.
pub fn version_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 | Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "other",
    }
}

/// Wraps the shared Router for one listener. `scheme` labels metrics (`http` or `https`);
/// `alt_svc` is the header value to advertise, if any.
pub fn layer(router: axum::Router, scheme: &'static str, alt_svc: Option<String>) -> axum::Router {
    let alt_svc = alt_svc.and_then(|v| HeaderValue::from_str(&v).ok());
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let alt_svc = alt_svc.clone();
            async move {
                let version = version_label(request.version());
                metrics::counter!(
                    "headwater_http_version_requests_total",
                    "version" => version, "scheme" => scheme
                )
                .increment(1);
                let mut response = next.run(request).await;
                if let Some(value) = alt_svc {
                    response.headers_mut().insert(header::ALT_SVC, value);
                }
                let (parts, body) = response.into_parts();
                let counted = CountedBody {
                    inner: body,
                    version,
                    scheme,
                };
                Response::from_parts(parts, Body::new(counted))
            }
        },
    ))
}

/// A response body that counts the data bytes handed to the transport.
struct CountedBody {
    inner: Body,
    version: &'static str,
    scheme: &'static str,
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
                metrics::counter!(
                    "headwater_http_version_response_bytes_total",
                    "version" => self.version, "scheme" => self.scheme
                )
                .increment(data.len() as u64);
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

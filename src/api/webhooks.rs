//! Webhooks: `stream.started`, `stream.ended` and `stream.key_rejected` posted as JSON to every
//! configured URL, signed with `X-Headwater-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! Never on the publish path: a dispatcher task reads the registry's lifecycle `broadcast`
//! (a lagging dispatcher loses events, counted) and `try_send`s each event into a bounded queue
//! per endpoint (full: dropped, counted). One worker per endpoint delivers in order: a timeout
//! per attempt, retries with exponential backoff plus up to 50 % jitter, and a circuit breaker
//! (`cache::breaker::Breaker`) that, once open, drops events at once (counted) until a trial
//! delivery after the cool-down succeeds.
//!
//! Metrics: `headwater_webhook_deliveries_total{result="delivered"|"failed"}`,
//! `headwater_webhook_attempts_total`, `headwater_webhook_dropped_total{reason="queue_full"|
//! "circuit_open"|"lagged"}`.

use crate::cache::breaker::Breaker;
use crate::config::WebhooksConfig;
use crate::stream::StreamEvent;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-headwater-signature";
/// The event type header (same as the body's `type`).
pub const EVENT_HEADER: &str = "x-headwater-event";

/// One event, serialized once for every endpoint.
#[derive(Debug, Clone)]
struct Delivery {
    kind: &'static str,
    body: bytes::Bytes,
    signature: String,
}

fn rfc3339(at: SystemTime) -> String {
    super::streams::rfc3339(super::millis(at))
}

/// The JSON body of an event: `{"type", "at", "stream"?, "instance"?, "peer"?}`.
pub fn body(event: &StreamEvent) -> (&'static str, serde_json::Value) {
    match event {
        StreamEvent::Started {
            stream,
            instance,
            at,
        } => (
            "stream.started",
            json!({"type": "stream.started", "at": rfc3339(*at), "stream": stream.as_str(), "instance": instance}),
        ),
        StreamEvent::Ended {
            stream,
            instance,
            at,
        } => (
            "stream.ended",
            json!({"type": "stream.ended", "at": rfc3339(*at), "stream": stream.as_str(), "instance": instance}),
        ),
        StreamEvent::KeyRejected { peer, at } => (
            "stream.key_rejected",
            json!({"type": "stream.key_rejected", "at": rfc3339(*at), "peer": peer.ip().to_string()}),
        ),
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn dropped(reason: &'static str, count: u64) {
    metrics::counter!("headwater_webhook_dropped_total", "reason" => reason).increment(count);
}

/// Starts the dispatcher and one worker per URL in `tasks`; they stop on `shutdown`.
pub fn start(
    config: &WebhooksConfig,
    events: broadcast::Receiver<StreamEvent>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client: webhooks are off");
            return;
        }
    };
    let mut queues = Vec::new();
    for url in &config.urls {
        let (sender, receiver) = mpsc::channel(config.queue);
        queues.push(sender);
        let worker = Worker {
            url: url.clone(),
            client: client.clone(),
            retries: config.retries,
            backoff: config.backoff,
            breaker: Arc::new(Breaker::new(
                config.breaker_failures,
                config.breaker_cooldown,
            )),
        };
        tasks.spawn(worker.run(receiver, shutdown.clone()));
    }
    let secret = config.secret.clone().unwrap_or_default().into_bytes();
    tasks.spawn(dispatch(events, queues, secret, shutdown.clone()));
}

async fn dispatch(
    mut events: broadcast::Receiver<StreamEvent>,
    queues: Vec<mpsc::Sender<Delivery>>,
    secret: Vec<u8>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                dropped("lagged", lost * queues.len() as u64);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (kind, value) = body(&event);
        let body = bytes::Bytes::from(value.to_string());
        let delivery = Delivery {
            kind,
            signature: sign(&secret, &body),
            body,
        };
        for queue in &queues {
            if queue.try_send(delivery.clone()).is_err() {
                dropped("queue_full", 1);
            }
        }
    }
}

struct Worker {
    url: String,
    client: reqwest::Client,
    retries: u32,
    backoff: Duration,
    breaker: Arc<Breaker>,
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Delivery>, shutdown: CancellationToken) {
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => return,
                delivery = queue.recv() => match delivery {
                    Some(delivery) => delivery,
                    None => return,
                },
            };
            if self.breaker.allow().is_err() {
                dropped("circuit_open", 1);
                continue;
            }
            let delivered = tokio::select! {
                () = shutdown.cancelled() => return,
                delivered = self.deliver(&delivery) => delivered,
            };
            self.breaker.record(delivered);
            let result = if delivered { "delivered" } else { "failed" };
            metrics::counter!("headwater_webhook_deliveries_total", "result" => result)
                .increment(1);
            if !delivered {
                tracing::warn!(url = %self.url, event = delivery.kind, retries = self.retries,
                    "webhook not delivered");
            }
        }
    }

    /// Tries once plus `retries` times; true on a 2xx.
    async fn deliver(&self, delivery: &Delivery) -> bool {
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let base = self.backoff.saturating_mul(1 << (attempt - 1).min(16));
                let jitter = base.mul_f64(rand::rng().random_range(0.0..0.5));
                tokio::time::sleep(base + jitter).await;
            }
            metrics::counter!("headwater_webhook_attempts_total").increment(1);
            let sent = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, &delivery.signature)
                .header(EVENT_HEADER, delivery.kind)
                .body(delivery.body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) => {
                    tracing::debug!(url = %self.url, status = response.status().as_u16(), attempt, "webhook refused")
                }
                Err(error) => tracing::debug!(url = %self.url, %error, attempt, "webhook failed"),
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

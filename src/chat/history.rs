//! Chat history: messages are written to the metadata store in batches by one background
//! task fed through a bounded queue. Posting never waits for the store: when the queue is full
//! a message is still delivered live but not kept (counted in
//! `headwater_chat_history_dropped_total`). Deletes go through the same queue, so a delete
//! always lands after the insert it undoes.

use crate::api::store::{ChatRecord, MetaStore, StoreError};
use crate::names::StreamName;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Messages written per transaction at most.
const BATCH: usize = 256;

/// Work for the writer.
#[derive(Debug)]
pub enum Persist {
    /// Store a message.
    Insert(ChatRecord),
    /// Delete a message; answers whether the store had it.
    Delete {
        /// The stream.
        stream: StreamName,
        /// The message id.
        id: i64,
        /// The answer.
        done: oneshot::Sender<Result<bool, StoreError>>,
    },
}

/// The sending side of the history queue.
#[derive(Debug, Clone)]
pub struct HistoryQueue(mpsc::Sender<Persist>);

impl HistoryQueue {
    /// Starts the writer; it stops (after writing what is queued) on `shutdown`.
    pub fn start(
        store: Arc<dyn MetaStore>,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self(tx), write(store, rx, shutdown))
    }

    /// Queues a message for history without waiting; false (and counted) when the queue is full.
    pub fn insert(&self, message: ChatRecord) -> bool {
        match self.0.try_send(Persist::Insert(message)) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("headwater_chat_history_dropped_total").increment(1);
                false
            }
        }
    }

    /// Deletes a message after every queued insert; answers whether the store had it.
    pub async fn delete(&self, stream: StreamName, id: i64) -> Result<bool, StoreError> {
        let (done, answer) = oneshot::channel();
        self.0
            .send(Persist::Delete { stream, id, done })
            .await
            .map_err(|_| StoreError::Join)?;
        answer.await.map_err(|_| StoreError::Join)?
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn MetaStore>,
    call: impl FnOnce(&dyn MetaStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&*store))
        .await
        .map_err(|_| StoreError::Join)?
}

async fn flush(store: &Arc<dyn MetaStore>, batch: &mut Vec<ChatRecord>) {
    if batch.is_empty() {
        return;
    }
    let messages = std::mem::take(batch);
    let count = messages.len() as u64;
    match blocking(store, move |s| s.insert_chat_messages(&messages)).await {
        Ok(()) => metrics::counter!("headwater_chat_history_written_total").increment(count),
        Err(error) => {
            metrics::counter!("headwater_chat_history_dropped_total").increment(count);
            tracing::error!(%error, source = std::error::Error::source(&error)
                .map(ToString::to_string), messages = count, "cannot write chat history");
        }
    }
}

async fn write(
    store: Arc<dyn MetaStore>,
    mut rx: mpsc::Receiver<Persist>,
    shutdown: CancellationToken,
) {
    let mut work = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => {
                rx.close();
                rx.recv_many(&mut work, usize::MAX).await
            }
            n = rx.recv_many(&mut work, BATCH) => n,
        };
        if received == 0 {
            return;
        }
        for item in work.drain(..) {
            match item {
                Persist::Insert(message) => batch.push(message),
                Persist::Delete { stream, id, done } => {
                    flush(&store, &mut batch).await;
                    let result =
                        blocking(&store, move |s| s.delete_chat_message(&stream, id)).await;
                    let _ = done.send(result);
                }
            }
        }
        flush(&store, &mut batch).await;
        if shutdown.is_cancelled() && rx.is_closed() && rx.is_empty() {
            return;
        }
    }
}

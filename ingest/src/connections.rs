//! The connection tasks of one listener: a slot limit, one task each, panics contained.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// A listener's live connections, each in its own task holding one of `limit` slots.
pub(crate) struct Connections {
    protocol: &'static str,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

impl Connections {
    /// Room for `limit` connections of `protocol` (a log label).
    pub(crate) fn new(protocol: &'static str, limit: usize) -> Self {
        Self {
            protocol,
            slots: Arc::new(Semaphore::new(limit)),
            tasks: JoinSet::new(),
        }
    }

    /// A slot for one more connection, or `None` when all are taken.
    pub(crate) fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Runs a connection in its own task; the slot is freed when the task ends.
    pub(crate) fn spawn(
        &mut self,
        slot: OwnedSemaphorePermit,
        connection: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            let _slot = slot;
            connection.await;
        });
    }

    /// Waits for a connection task to end (forever when there are none); a panic is logged
    /// and loses only that connection.
    pub(crate) async fn reap(&mut self) {
        match self.tasks.join_next().await {
            Some(Err(error)) if error.is_panic() => {
                tracing::error!(%error, protocol = self.protocol, "connection task panicked");
            }
            Some(_) => {}
            None => std::future::pending().await,
        }
    }

    /// Aborts every connection and waits for their tasks to end.
    pub(crate) async fn shutdown(&mut self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_limited_and_freed_when_a_task_ends_even_by_panic() {
        let mut connections = Connections::new("test", 2);
        let first = connections.slot().expect("first slot");
        let second = connections.slot().expect("second slot");
        assert!(
            connections.slot().is_none(),
            "a third connection got a slot"
        );
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        connections.spawn(first, async {
            let _ = released.await;
        });
        connections.spawn(second, async { panic!("a connection bug") });
        connections.reap().await;
        assert!(
            connections.slot().is_some(),
            "the panicked task kept its slot"
        );
        let _ = release.send(());
        connections.reap().await;
        let (a, b) = (connections.slot(), connections.slot());
        assert!(a.is_some() && b.is_some(), "slots not freed");
        // No tasks left: reaping waits instead of spinning.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), connections.reap());
        assert!(idle.await.is_err());
    }
}

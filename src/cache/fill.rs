//! Coalesced fills: one fetch per [`ObjectKey`] at a time, every other requester waits for it.
//!
//! The first requester of a missing object gets a [`FillPermit`] and fetches; the others get a
//! [`FillWaiter`] and receive a clone of the result the moment it is published. A permit dropped
//! without a result (the leader's task was cancelled or panicked) wakes the waiters with
//! [`FillError::Abandoned`], so nobody waits forever; waiters also give up after a timeout.

use super::key::ObjectKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// Why a coalesced fill produced no object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// The leader went away before publishing a result.
    #[error("the fill was abandoned")]
    Abandoned,
    /// The waiter gave up.
    #[error("no fill result within {0:?}")]
    Timeout(Duration),
}

type Slot<T> = watch::Receiver<Option<Result<T, FillError>>>;

/// The in-flight fills of one cache.
#[derive(Debug)]
pub struct Fills<T> {
    inflight: Arc<Mutex<HashMap<ObjectKey, Slot<T>>>>,
}

impl<T> Default for Fills<T> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

/// Either fetch (first requester) or wait (everyone else).
#[derive(Debug)]
pub enum Fill<T> {
    /// This request fetches and must publish the result through the permit.
    Leader(FillPermit<T>),
    /// Another request is fetching; wait for its result.
    Waiter(FillWaiter<T>),
}

impl<T: Clone> Fills<T> {
    /// Joins the fill of `key`, starting one if none is in flight.
    pub fn join(&self, key: &ObjectKey) -> Fill<T> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = inflight.get(key) {
            return Fill::Waiter(FillWaiter { slot: slot.clone() });
        }
        let (sender, slot) = watch::channel(None);
        inflight.insert(key.clone(), slot);
        Fill::Leader(FillPermit {
            key: key.clone(),
            inflight: self.inflight.clone(),
            sender: Some(sender),
        })
    }

    /// Number of fills in flight.
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no fill is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The right (and duty) to publish the result of one fill.
#[derive(Debug)]
pub struct FillPermit<T> {
    key: ObjectKey,
    inflight: Arc<Mutex<HashMap<ObjectKey, Slot<T>>>>,
    sender: Option<watch::Sender<Option<Result<T, FillError>>>>,
}

impl<T> FillPermit<T> {
    /// Publishes the result to every waiter and ends the fill.
    pub fn complete(mut self, result: Result<T, FillError>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<T, FillError>) {
        if let Some(sender) = self.sender.take() {
            // Waiters that arrive between this send and the removal see the result at once.
            sender.send_replace(Some(result));
            self.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
        }
    }
}

impl<T> Drop for FillPermit<T> {
    fn drop(&mut self) {
        self.finish(Err(FillError::Abandoned));
    }
}

/// A request waiting for someone else's fill.
#[derive(Debug)]
pub struct FillWaiter<T> {
    slot: Slot<T>,
}

impl<T: Clone> FillWaiter<T> {
    /// Waits up to `limit` for the fill's result.
    pub async fn wait(mut self, limit: Duration) -> Result<T, FillError> {
        match tokio::time::timeout(limit, self.slot.wait_for(Option::is_some)).await {
            Err(_) => Err(FillError::Timeout(limit)),
            // The sender is gone without a value only if the permit was leaked; treat as abandoned.
            Ok(Err(_)) => Err(FillError::Abandoned),
            Ok(Ok(value)) => value.clone().unwrap_or(Err(FillError::Abandoned)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s, None)
    }

    #[tokio::test]
    async fn one_leader_many_waiters_same_result() {
        let fills = Arc::new(Fills::<Arc<str>>::default());
        let leaders = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let fills = fills.clone();
            let leaders = leaders.clone();
            tasks.push(tokio::spawn(async move {
                match fills.join(&key("/a")) {
                    Fill::Leader(permit) => {
                        leaders.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        permit.complete(Ok("bytes".into()));
                        Ok("bytes".into())
                    }
                    Fill::Waiter(waiter) => waiter.wait(Duration::from_secs(5)).await,
                }
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").expect("result").as_ref(), "bytes");
        }
        assert_eq!(leaders.load(Ordering::SeqCst), 1);
        assert!(fills.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_leader_wakes_waiters_with_abandoned() {
        let fills = Fills::<u32>::default();
        let Fill::Leader(permit) = fills.join(&key("/a")) else {
            panic!("first is leader")
        };
        let Fill::Waiter(waiter) = fills.join(&key("/a")) else {
            panic!("second waits")
        };
        let waiting = tokio::spawn(waiter.wait(Duration::from_secs(5)));
        drop(permit);
        assert_eq!(waiting.await.expect("task"), Err(FillError::Abandoned));
        assert!(
            matches!(fills.join(&key("/a")), Fill::Leader(_)),
            "a new fill can start"
        );
    }

    #[tokio::test]
    async fn waiters_time_out_and_keys_are_independent() {
        let fills = Fills::<u32>::default();
        let _leader = fills.join(&key("/a"));
        assert!(matches!(fills.join(&key("/b")), Fill::Leader(_)));
        let Fill::Waiter(waiter) = fills.join(&key("/a")) else {
            panic!("waits")
        };
        assert_eq!(
            waiter.wait(Duration::from_millis(20)).await,
            Err(FillError::Timeout(Duration::from_millis(20)))
        );
    }

    #[tokio::test]
    async fn source_errors_are_shared_as_values() {
        let fills = Fills::<Result<u32, String>>::default();
        let Fill::Leader(permit) = fills.join(&key("/a")) else {
            panic!("leader")
        };
        let Fill::Waiter(waiter) = fills.join(&key("/a")) else {
            panic!("waits")
        };
        permit.complete(Ok(Err("upstream 503".into())));
        assert_eq!(
            waiter.wait(Duration::from_secs(1)).await,
            Ok(Err("upstream 503".into()))
        );
    }
}

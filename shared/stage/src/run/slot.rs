//! A flat-map task's processing slot, which it may give up while it waits
//! for something other than work.

use std::{future::Future, sync::Arc, time::Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A task's processing slot, which it may give up while it waits for
/// something other than work (a busy host), so that other messages go on.
pub(crate) struct Slot {
    pub(crate) slots: Arc<Semaphore>,
    /// Bounds the messages held while waiting without a slot.
    pub(crate) waiting_room: Arc<Semaphore>,
    pub(crate) permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// Time spent waiting without the slot, in nanoseconds: it does not
    /// count against SLUICE_MAX_PROCESSING_TIME.
    pub(crate) waited: std::sync::atomic::AtomicU64,
}

impl Slot {
    /// Awaits `wait`; if it cannot finish at once and the waiting room has
    /// a place, without holding the slot, which it then takes again.
    pub(crate) async fn release_while<F: Future>(&self, wait: F) -> F::Output {
        tokio::pin!(wait);
        tokio::select! {
            biased;
            output = &mut wait => return output,
            () = std::future::ready(()) => {}
        }
        let Ok(place) = self.waiting_room.clone().try_acquire_owned() else {
            return wait.await;
        };
        let started = Instant::now();
        drop(self.permit.lock().expect("never poisoned").take());
        let output = wait.await;
        drop(place);
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        *self.permit.lock().expect("never poisoned") = Some(permit);
        self.waited.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        output
    }
}

//! A flat-map task's processing slot, which it may give up while it waits
//! for something other than work.

use std::{future::Future, sync::Arc, time::Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A task's processing slot, which it may give up while it waits for
/// something other than work (a busy host), so that other messages go on.
///
/// A task never waits for anything else while holding a processing slot
/// that it could give up: a task that got its host and wants a processing
/// slot back must find the slots held by tasks at work, never by tasks
/// waiting for that host, or the two would wait on each other for ever.
/// What bounds the messages a replica holds is its place in hand, taken
/// before the message was pulled and kept until it is settled.
pub(crate) struct Slot {
    pub(crate) slots: Arc<Semaphore>,
    /// The message's place among those the replica may hold.
    pub(crate) _in_hand: OwnedSemaphorePermit,
    pub(crate) permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// Time spent waiting without the slot, in nanoseconds: it does not
    /// count against SLUICE_MAX_PROCESSING_TIME.
    pub(crate) waited: std::sync::atomic::AtomicU64,
}

impl Slot {
    /// Awaits `wait`; if it cannot finish at once, without holding the
    /// slot, which it then takes again.
    pub(crate) async fn release_while<F: Future>(&self, wait: F) -> F::Output {
        tokio::pin!(wait);
        tokio::select! {
            biased;
            output = &mut wait => return output,
            () = std::future::ready(()) => {}
        }
        let started = Instant::now();
        drop(self.permit.lock().expect("never poisoned").take());
        let output = wait.await;
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

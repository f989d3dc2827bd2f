//! Graceful drain: stop accepting, let in-flight work finish, close what is idle, and bound the
//! whole thing by the drain period.
//!
//! One [`Drain`] is shared by the listeners and every connection task. Connection tasks are
//! spawned through it so that shutdown can wait for exactly them; each task also holds a
//! [`DrainWatch`] and, when it fires, asks its HTTP connection to finish gracefully (HTTP/1 closes
//! once the current response is written, idle keep-alive connections close at once, HTTP/2 sends
//! GOAWAY). Plain TCP streams are left to finish on their own until the period ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// The drain state of one proxy.
#[derive(Clone, Debug)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    signal: watch::Sender<bool>,
    tasks: TaskTracker,
}

/// Keeps the drain from finishing while it lives; see [`Drain::hold`].
#[derive(Debug)]
pub struct DrainHold(#[allow(dead_code)] tokio_util::task::task_tracker::TaskTrackerToken);

/// A handle a task awaits to learn that draining started.
#[derive(Clone, Debug)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        Drain { inner: Arc::new(Inner { signal, tasks: TaskTracker::new() }) }
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch { rx: self.inner.signal.subscribe() }
    }

    /// Spawns a task that shutdown will wait for (a connection).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(fut);
    }

    /// Counts as one task until dropped, so the drain waits for it (an answer being written).
    pub fn hold(&self) -> DrainHold {
        DrainHold(self.inner.tasks.token())
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.signal.borrow()
    }

    /// Starts draining: listeners stop, connections are told to finish. Idempotent.
    pub fn start(&self) {
        self.inner.tasks.close();
        self.inner.signal.send_replace(true);
    }

    /// Waits until every tracked task has finished or `period` has passed; returns how many
    /// tasks were still running when it gave up (0 = clean drain).
    pub async fn finish(&self, period: Duration) -> usize {
        self.start();
        match tokio::time::timeout(period, self.inner.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.inner.tasks.len(),
        }
    }
}

impl DrainWatch {
    /// Resolves once draining has started (at once if it already has).
    pub async fn signaled(&mut self) {
        // An error means the Drain is gone, which is as good as a drain signal.
        let _ = self.rx.wait_for(|draining| *draining).await;
    }
}

//! Reloading the config file: on SIGHUP, and when the file changes (checked by polling its
//! size, modification time and content, which works for editors, `kubectl cp` and the atomic
//! symlink swaps of ConfigMap volumes alike).

use super::ConfigStore;
use std::sync::Arc;
use std::time::Duration;

/// Runs until the process ends.
pub async fn run(store: Arc<ConfigStore>, poll: Duration) {
    let Some(source) = store.source().cloned() else { return };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file change only");
            None
        }
    };
    let mut last = std::fs::read(&source.path).ok();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = std::fs::read(&source.path).ok();
        if !forced && now == last {
            continue;
        }
        if forced {
            tracing::info!(path = %source.path.display(), "SIGHUP: reloading config");
        }
        last = now;
        // Compiling is CPU work: keep it off the workers that serve connections.
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.reload()).await;
    }
}

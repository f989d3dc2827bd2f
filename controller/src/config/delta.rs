//! What one proxy must be sent: a snapshot of its view, or the difference between two views.
//!
//! Pure functions of worlds and views, so "who gets what after which change" is tested without
//! a stream (see `tests.rs` beside this file).

use std::sync::Arc;

use super::visibility::ProxyView;
use super::world::{Change, Entry, Key, World};

/// Resources to add or replace and resources to drop, for one proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Entries the proxy does not have, or has in an older form.
    pub upserts: Vec<(Key, Arc<Entry>)>,
    /// Entries the proxy has and must drop (deleted, or no longer visible to it).
    pub removals: Vec<Key>,
}

impl Delta {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }

    fn record(
        &mut self,
        key: &Key,
        old: Option<&Arc<Entry>>,
        new: Option<&Arc<Entry>>,
        old_view: &ProxyView,
        new_view: &ProxyView,
    ) {
        let was = old.filter(|entry| old_view.sees(entry));
        let now = new.filter(|entry| new_view.sees(entry));
        match (was, now) {
            (Some(was), Some(now)) if was.json == now.json => {}
            (_, Some(now)) => self.upserts.push((key.clone(), now.clone())),
            (Some(_), None) => self.removals.push(key.clone()),
            (None, None) => {}
        }
    }
}

/// Everything `view` sees of `world`: what a proxy without config is sent.
pub fn snapshot(world: &World, view: &ProxyView) -> Delta {
    let upserts = world
        .entries
        .iter()
        .filter(|(_, entry)| view.sees(entry))
        .map(|(key, entry)| (key.clone(), entry.clone()))
        .collect();
    Delta { upserts, removals: Vec::new() }
}

/// From what `old_view` saw of `old` to what `new_view` sees of `new`: used when a proxy
/// resumes from an older version, lags several versions behind, or its Sidecar changed.
pub fn between(old: &World, old_view: &ProxyView, new: &World, new_view: &ProxyView) -> Delta {
    let mut delta = Delta::default();
    for change in old.changes_to(new) {
        delta.record(&change.key, change.old.as_ref(), change.new.as_ref(), old_view, new_view);
    }
    if old_view != new_view {
        // The view changed: entries that did not change may have come into or gone out of it.
        for (key, entry) in &new.entries {
            if old.entries.get(key).is_some_and(|previous| Arc::ptr_eq(previous, entry) || previous == entry) {
                delta.record(key, Some(entry), Some(entry), old_view, new_view);
            }
        }
        delta.upserts.sort_by(|a, b| a.0.cmp(&b.0));
        delta.removals.sort();
    }
    delta
}

/// What one generation's `changes` mean for a proxy whose view stayed the same: the cost is
/// the size of the change, not of the world.
pub fn incremental(view: &ProxyView, changes: &[Change]) -> Delta {
    let mut delta = Delta::default();
    for change in changes {
        delta.record(&change.key, change.old.as_ref(), change.new.as_ref(), view, view);
    }
    delta
}

//! One proxy's stream: the first update, then one update per generation that touches its view,
//! and the proxy's ACKs and NACKs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use proto::config::{Nack, ProxyMessage, proxy_message};
use tokio::sync::mpsc;
use tonic::Status;

use super::delta;
use super::hub::{Generation, Hub};
use super::parts::{Content, Outbox, Queued, Update};
use super::visibility::{ProxyInfo, ProxyView};

/// The state of one proxy's stream.
pub struct Session {
    hub: Arc<Hub>,
    id: u64,
    /// `namespace/pod`, for logs.
    name: String,
    proxy: ProxyInfo,
    view: ProxyView,
    /// The generation the proxy has been brought to (sent, if not yet ACKed).
    generation: Arc<Generation>,
    /// The version of the last update sent.
    sent: String,
    /// Updates sent and not yet ACKed: generation number and when its change was seen.
    unacked: VecDeque<(u64, Instant)>,
    outbox: Outbox,
    /// Set when the queue overflowed: nothing more is queued until a full snapshot is.
    needs_resync: bool,
}

impl Session {
    /// Opens the session of `proxy`: completes its identity from the registry and sends its
    /// first update: only what changed since `resume_version` when that version is still
    /// known, a full snapshot otherwise.
    pub fn open(hub: Arc<Hub>, proxy: ProxyInfo, resume_version: &str, outbox: Outbox) -> Option<Self> {
        let name = format!("{}/{}", proxy.namespace, proxy.pod_name);
        let generation = hub.current();
        let proxy = proxy.completed(&generation.world);
        let view = ProxyView::new(&proxy, &generation.world, &hub.root_namespace);
        let id = hub.connect(name.clone());
        let mut session = Session {
            hub,
            id,
            name,
            proxy,
            view,
            generation: generation.clone(),
            sent: String::new(),
            unacked: VecDeque::new(),
            outbox,
            needs_resync: false,
        };
        let resumed = session.hub.generation_of(resume_version).map(|old| {
            let old_view = ProxyView::new(&session.proxy, &old.world, &session.hub.root_namespace);
            delta::between(&old.world, &old_view, &generation.world, &session.view)
        });
        let sent = match resumed {
            Some(delta) => {
                tracing::info!(proxy = %session.name, from = resume_version, upserts = delta.upserts.len(),
                    removals = delta.removals.len(), "proxy resumed");
                session.send(Content::Delta(delta), resume_version.to_string(), false, None, "resume")
            }
            None => session.send_snapshot(),
        };
        sent.then_some(session)
    }

    /// Serves the stream until the proxy hangs up or the controller stops.
    pub async fn run(mut self, mut inbound: impl Stream<Item = Result<ProxyMessage, Status>> + Unpin) {
        let mut generations = self.hub.subscribe();
        generations.mark_changed();
        loop {
            if self.needs_resync {
                let outbox = self.outbox.clone();
                tokio::select! {
                    permit = outbox.reserve() => match permit {
                        Ok(permit) => self.send_resync(permit),
                        Err(_) => break,
                    },
                    message = inbound.next() => match message {
                        Some(Ok(message)) => self.receive(message),
                        _ => break,
                    },
                }
                continue;
            }
            tokio::select! {
                changed = generations.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let latest = generations.borrow_and_update().clone();
                    if !self.advance(latest) {
                        break;
                    }
                }
                message = inbound.next() => match message {
                    Some(Ok(message)) => self.receive(message),
                    Some(Err(status)) => {
                        tracing::debug!(proxy = %self.name, %status, "stream ended by error");
                        break;
                    }
                    None => break,
                },
            }
        }
        tracing::info!(proxy = %self.name, "proxy disconnected");
    }

    /// Brings the proxy to `latest`; returns false when the stream is gone.
    fn advance(&mut self, latest: Arc<Generation>) -> bool {
        if latest.number <= self.generation.number {
            return true;
        }
        let view = ProxyView::new(&self.proxy, &latest.world, &self.hub.root_namespace);
        let delta = if latest.number == self.generation.number + 1 && view == self.view {
            delta::incremental(&self.view, &latest.changes)
        } else {
            delta::between(&self.generation.world, &self.view, &latest.world, &view)
        };
        // The change a lagging proxy waited for longest was seen with the first generation it missed.
        let seen = self.hub.generation(self.generation.number + 1).map(|next| next.seen).unwrap_or(latest.seen);
        self.view = view;
        self.generation = latest;
        if delta.is_empty() {
            return true;
        }
        self.send(Content::Delta(delta), self.sent.clone(), false, Some(seen), "incremental")
    }

    fn send_snapshot(&mut self) -> bool {
        let resources = self.generation.world.entries.values().filter(|entry| self.view.sees(entry)).count();
        tracing::info!(proxy = %self.name, resources, "sending full snapshot");
        self.send(self.snapshot(), String::new(), true, None, "full")
    }

    /// The current generation as this proxy sees it, read only as it is sent.
    fn snapshot(&self) -> Content {
        Content::Snapshot { world: self.generation.world.clone(), view: self.view.clone() }
    }

    /// Queues one update; when the queue is full, drops it and resyncs the proxy with a full
    /// snapshot once the queue has room. Returns false when the stream is gone.
    fn send(&mut self, content: Content, base: String, full: bool, seen: Option<Instant>, kind: &str) -> bool {
        let version = self.hub.version(self.generation.number);
        let update = Update { version: version.clone(), base_version: base, full, content };
        match self.outbox.try_send(Ok(Box::new(update))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(_)) => return self.resync(),
        }
        self.hub.metrics.pushes.with_label_values(&[kind]).inc();
        if let Some(seen) = seen {
            self.unacked.push_back((self.generation.number, seen));
        }
        self.sent = version.clone();
        self.hub.update_status(self.id, |status| status.sent = version);
        true
    }

    /// The proxy reads too slowly: rather than let its backlog grow, the next thing it gets,
    /// once its queue has room again, is a complete snapshot of the then current generation.
    fn resync(&mut self) -> bool {
        tracing::warn!(proxy = %self.name, "stream queue full; the proxy will be resynced with a full snapshot");
        self.hub.metrics.resyncs.inc();
        self.unacked.clear();
        self.needs_resync = true;
        true
    }

    fn send_resync(&mut self, permit: mpsc::Permit<'_, Queued>) {
        self.generation = self.hub.current();
        self.view = ProxyView::new(&self.proxy, &self.generation.world, &self.hub.root_namespace);
        let version = self.hub.version(self.generation.number);
        let content = self.snapshot();
        permit.send(Ok(Box::new(Update {
            version: version.clone(),
            base_version: String::new(),
            full: true,
            content,
        })));
        self.hub.metrics.pushes.with_label_values(&["full"]).inc();
        tracing::info!(proxy = %self.name, %version, "proxy resynced");
        self.sent = version.clone();
        self.hub.update_status(self.id, |status| status.sent = version);
        self.needs_resync = false;
    }

    fn receive(&mut self, message: ProxyMessage) {
        match message.message {
            Some(proxy_message::Message::Ack(ack)) => self.acked(&ack.version),
            Some(proxy_message::Message::Nack(nack)) => self.nacked(nack),
            Some(proxy_message::Message::Hello(_)) => {
                tracing::warn!(proxy = %self.name, "ignoring a second Hello on the stream");
            }
            None => {}
        }
    }

    fn acked(&mut self, version: &str) {
        let Some(number) = self.hub.number_of(version) else {
            tracing::warn!(proxy = %self.name, version, "ACK of a version this controller did not send");
            return;
        };
        let now = Instant::now();
        while let Some(&(sent, seen)) = self.unacked.front() {
            if sent > number {
                break;
            }
            if sent == number {
                self.hub.metrics.push_latency.observe(now.duration_since(seen).as_secs_f64());
            }
            self.unacked.pop_front();
        }
        tracing::debug!(proxy = %self.name, version, "proxy acked");
        self.hub.update_status(self.id, |status| status.acked = version.to_string());
    }

    fn nacked(&mut self, nack: Nack) {
        self.hub.metrics.nacks.inc();
        if let Some(number) = self.hub.number_of(&nack.version) {
            self.unacked.retain(|(sent, _)| *sent > number);
        }
        if nack.errors.is_empty() {
            tracing::warn!(proxy = %self.name, version = %nack.version, error = %nack.message, "proxy rejected config");
        }
        for error in &nack.errors {
            let resource = error
                .key
                .as_ref()
                .map(|key| format!("{} {}/{}", key.r#type, key.namespace, key.name))
                .unwrap_or_default();
            tracing::warn!(proxy = %self.name, version = %nack.version, %resource, error = %error.message,
                summary = %nack.message, "proxy rejected config");
        }
        self.hub.update_status(self.id, |status| status.nacked = Some((nack.version.clone(), nack.message.clone())));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}

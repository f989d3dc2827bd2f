//! From queued updates to messages on the wire, in parts of bounded size.
//!
//! A session queues an [`Update`] of shared entries (`Arc`s into the world), not encoded
//! messages: the response stream ([`Parts`]) turns it into messages only as tonic reads them.
//! For a proxy that set `Hello.accepts_parts` an update larger than [`PART_BYTES`] goes out in
//! parts, each with `more` set but the last.
//!
//! Why: tonic encodes every message whole into its stream's buffer, and that buffer keeps the
//! size of the largest message for as long as the stream lives. A first snapshot of a mesh of
//! 1000 Services × 2 endpoints is 733 KB, and 2000 streams sent theirs in one message each held
//! 1.7 GB (`benches/scale.rs`); in parts, each stream's buffer stays at its initial size
//! (`proto::codec::ENCODE_BUFFER`, 2 KB).
//! A snapshot is read from the shared world as its parts go out, never listed per stream.

use std::iter::Peekable;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use proto::config::{ConfigUpdate, Resource};
use tokio::sync::mpsc;
use tonic::Status;

use super::delta::Delta;
use super::visibility::ProxyView;
use super::world::{Entry, Key, World};

/// The most resource bytes (JSON and key) put in one part, unless one resource alone is
/// larger: with the message's own framing (versions, keys, gRPC's header) it stays within the
/// stream's encode buffer. Smaller parts cost more messages per snapshot (a first sync of 2000
/// proxies took 3.5 s in 6 KB parts, 13.5 s in these) for 12 MB less held by 2000 streams.
pub const PART_BYTES: usize = proto::codec::ENCODE_BUFFER - 512;

/// One update as queued for a stream.
#[derive(Clone, Debug)]
pub struct Update {
    /// The update's version.
    pub version: String,
    /// The version it applies on; empty for a full snapshot.
    pub base_version: String,
    /// Whether it is a full snapshot.
    pub full: bool,
    /// What it upserts and removes.
    pub content: Content,
}

/// What an update carries.
#[derive(Clone, Debug)]
pub enum Content {
    /// Upserts and removals, worked out.
    Delta(Delta),
    /// Everything `view` sees of `world`, read as the parts go out: a snapshot waiting to be
    /// sent costs its stream no list of the (thousands of) entries it holds.
    Snapshot {
        /// The world the snapshot is of.
        world: Arc<World>,
        /// The proxy's view of it.
        view: ProxyView,
    },
}

/// One item of a stream's queue. The update is boxed: a queue allocates room for 32 items at
/// a time whether or not they are used, and 32 unboxed updates take 5 KB per stream.
pub type Queued = Result<Box<Update>, Status>;

/// The sending end of a stream's queue.
pub type Outbox = mpsc::Sender<Queued>;

/// A stream's queue of updates, as the messages tonic sends.
pub struct Parts {
    updates: mpsc::Receiver<Queued>,
    /// The largest part; `usize::MAX` for a proxy that takes every update in one message.
    part_bytes: usize,
    /// The update being sent, and how far.
    current: Option<Cursor>,
    /// Set after a part with more to follow: the next poll returns `Pending` once.
    pause: bool,
}

impl Parts {
    /// The messages of `updates`, in parts of at most `part_bytes` when `in_parts`.
    pub fn new(updates: mpsc::Receiver<Queued>, in_parts: bool, part_bytes: usize) -> Self {
        let part_bytes = if in_parts { part_bytes.max(1) } else { usize::MAX };
        Self { updates, part_bytes, current: None, pause: false }
    }
}

impl Stream for Parts {
    type Item = Result<ConfigUpdate, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if std::mem::take(&mut this.pause) {
            // tonic gathers messages that are ready into one buffer until 32 KB; pausing
            // (and waking at once) makes it send each part by itself, so its buffer holds one.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let cursor = match &mut this.current {
            Some(cursor) => cursor,
            None => match ready!(this.updates.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                Some(Ok(update)) => this.current.insert(Cursor::new(*update)),
            },
        };
        let part = cursor.next_part(this.part_bytes);
        if part.more {
            this.pause = true;
        } else {
            this.current = None;
        }
        Poll::Ready(Some(Ok(part)))
    }
}

/// An update partly sent.
struct Cursor {
    update: Update,
    /// Upserts of a delta already sent.
    upserts: usize,
    /// Removals of a delta already sent.
    removals: usize,
    /// The last entry of a snapshot already sent.
    after: Option<Key>,
}

impl Cursor {
    fn new(update: Update) -> Self {
        Self { update, upserts: 0, removals: 0, after: None }
    }

    /// The next part: upserts, then removals, until `limit` bytes (at least one item).
    fn next_part(&mut self, limit: usize) -> ConfigUpdate {
        let (mut size, mut upserts, mut removals) = (0, Vec::new(), Vec::new());
        let more = match &self.update.content {
            Content::Delta(delta) => {
                let mut pending = delta.upserts[self.upserts..].iter().map(|(key, entry)| (key, entry)).peekable();
                take(&mut pending, limit, &mut size, &mut upserts);
                self.upserts += upserts.len();
                for key in &delta.removals[self.removals..] {
                    let cost = key_size(key);
                    if size + cost > limit && (!upserts.is_empty() || !removals.is_empty()) {
                        break;
                    }
                    size += cost;
                    removals.push(key.to_proto());
                }
                self.removals += removals.len();
                self.upserts < delta.upserts.len() || self.removals < delta.removals.len()
            }
            Content::Snapshot { world, view } => {
                let rest = match &self.after {
                    None => world.entries.range::<Key, _>(..),
                    Some(after) => world.entries.range::<Key, _>((Bound::Excluded(after), Bound::Unbounded)),
                };
                let mut pending = rest.filter(|(_, entry)| view.sees(entry)).peekable();
                if let Some(last) = take(&mut pending, limit, &mut size, &mut upserts) {
                    self.after = Some(last.clone());
                }
                pending.peek().is_some()
            }
        };
        ConfigUpdate {
            version: self.update.version.clone(),
            base_version: self.update.base_version.clone(),
            full: self.update.full,
            upserts,
            removals,
            more,
        }
    }
}

/// Moves entries from `pending` into `out` until `limit` bytes (at least one entry); returns
/// the key of the last one taken.
fn take<'a>(
    pending: &mut Peekable<impl Iterator<Item = (&'a Key, &'a Arc<Entry>)>>,
    limit: usize,
    size: &mut usize,
    out: &mut Vec<Resource>,
) -> Option<&'a Key> {
    let mut last = None;
    while let Some((key, entry)) = pending.peek() {
        let cost = upsert_size(key, entry);
        if !out.is_empty() && *size + cost > limit {
            break;
        }
        *size += cost;
        out.push(entry.to_proto(key));
        last = Some(*key);
        pending.next();
    }
    last
}

/// About what an upsert takes on the wire.
fn upsert_size(key: &Key, entry: &Entry) -> usize {
    key_size(key) + entry.json.len() + entry.resource_version.len() + 8
}

fn key_size(key: &Key) -> usize {
    // The type is at most ~40 bytes (`security.istio.io/RequestAuthentication`).
    40 + key.namespace.len() + key.name.len() + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::world::Audience;

    fn delta(upserts: &[&str], removals: &[&str]) -> Delta {
        let entry = |json: &str| {
            Arc::new(Entry {
                json: json.as_bytes().to_vec().into(),
                resource_version: String::new(),
                audience: Audience::Gateways,
            })
        };
        Delta {
            upserts: upserts.iter().map(|name| (Key::service(name), entry("{\"x\":1}"))).collect(),
            removals: removals.iter().map(|name| Key::endpoints(name)).collect(),
        }
    }

    fn parts(delta: Delta, limit: usize) -> Vec<ConfigUpdate> {
        let update =
            Update { version: "1.2".into(), base_version: "1.1".into(), full: false, content: Content::Delta(delta) };
        let mut cursor = Cursor::new(update);
        let mut parts = vec![cursor.next_part(limit)];
        while parts.last().unwrap().more {
            parts.push(cursor.next_part(limit));
        }
        parts
    }

    #[test]
    fn a_small_limit_sends_one_item_per_part_upserts_first() {
        let parts = parts(delta(&["a", "b"], &["c", "d"]), 1);
        let items: Vec<(usize, usize, bool)> =
            parts.iter().map(|part| (part.upserts.len(), part.removals.len(), part.more)).collect();
        assert_eq!(items, [(1, 0, true), (1, 0, true), (0, 1, true), (0, 1, false)]);
        assert!(parts.iter().all(|part| part.version == "1.2" && part.base_version == "1.1" && !part.full));
        assert_eq!(parts[2].removals[0].name, "c");
    }

    #[test]
    fn without_a_limit_an_update_is_one_message() {
        let parts = parts(delta(&["a", "b"], &["c"]), usize::MAX);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].upserts.len(), parts[0].removals.len(), parts[0].more), (2, 1, false));
    }

    #[test]
    fn an_empty_update_is_one_message() {
        let parts = parts(Delta::default(), 1);
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].more && parts[0].upserts.is_empty());
    }
}

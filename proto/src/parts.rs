//! Putting an update sent in parts back together (`ConfigUpdate.more`).
//!
//! A controller sends a proxy that set `Hello.accepts_parts` its large updates in parts of
//! bounded size; every part but the last has `more` set, and all carry the same version. The
//! receiving end feeds each message to an [`Assembly`] and applies what it returns.

use crate::config::ConfigUpdate;

/// A part that does not continue the update being assembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a part of update {found:?} arrived while update {expected:?} still had parts to come")]
pub struct PartError {
    /// The version of the incomplete update.
    pub expected: String,
    /// The version of the part that arrived instead.
    pub found: String,
}

/// The parts received so far of an update whose last part has not arrived.
#[derive(Debug, Default)]
pub struct Assembly {
    pending: Option<ConfigUpdate>,
}

impl Assembly {
    /// Adds one message from the stream: returns the whole update when `part` completes it
    /// (an update sent in one message completes at once), `None` while parts are to come.
    pub fn add(&mut self, part: ConfigUpdate) -> Result<Option<ConfigUpdate>, PartError> {
        let whole = match self.pending.take() {
            None => part,
            Some(mut pending) => {
                if part.version != pending.version
                    || part.base_version != pending.base_version
                    || part.full != pending.full
                {
                    return Err(PartError { expected: pending.version, found: part.version });
                }
                pending.upserts.extend(part.upserts);
                pending.removals.extend(part.removals);
                pending.more = part.more;
                pending
            }
        };
        if whole.more {
            self.pending = Some(whole);
            return Ok(None);
        }
        Ok(Some(whole))
    }

    /// Whether parts of an update are waiting for the rest.
    pub fn is_incomplete(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Resource, ResourceKey};

    fn key(name: &str) -> ResourceKey {
        ResourceKey { r#type: crate::SERVICE_TYPE.into(), namespace: String::new(), name: name.into() }
    }

    fn part(version: &str, upserts: &[&str], removals: &[&str], more: bool) -> ConfigUpdate {
        ConfigUpdate {
            version: version.into(),
            base_version: "6".into(),
            upserts: upserts
                .iter()
                .map(|name| Resource { key: Some(key(name)), json: b"{}".to_vec(), ..Resource::default() })
                .collect(),
            removals: removals.iter().map(|name| key(name)).collect(),
            more,
            ..ConfigUpdate::default()
        }
    }

    #[test]
    fn parts_come_back_as_one_update_when_the_last_arrives() {
        let mut assembly = Assembly::default();
        assert_eq!(assembly.add(part("7", &["a", "b"], &[], true)), Ok(None));
        assert!(assembly.is_incomplete());
        assert_eq!(assembly.add(part("7", &["c"], &["x"], true)), Ok(None));
        let whole = assembly.add(part("7", &[], &["y"], false)).unwrap().expect("complete");
        assert_eq!(whole, part("7", &["a", "b", "c"], &["x", "y"], false));
        assert!(!assembly.is_incomplete());
    }

    #[test]
    fn an_update_in_one_message_is_complete_at_once() {
        let mut assembly = Assembly::default();
        assert_eq!(assembly.add(part("7", &["a"], &[], false)), Ok(Some(part("7", &["a"], &[], false))));
    }

    #[test]
    fn a_part_of_another_update_is_refused() {
        let mut assembly = Assembly::default();
        assembly.add(part("7", &["a"], &[], true)).unwrap();
        let error = assembly.add(part("8", &["b"], &[], false)).unwrap_err();
        assert_eq!(error, PartError { expected: "7".into(), found: "8".into() });
        assert!(!assembly.is_incomplete(), "the broken update is dropped");
    }
}

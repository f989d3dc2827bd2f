//! Status: every Istio resource gets a `Reconciled` condition, and its validation findings,
//! written with server-side apply by the leader only.
//!
//! The desired status is computed from the stores and compared with the status the object
//! already has, so a restart or a new leader writes only what is out of date, and writing a
//! status (which changes the object) settles after one round.

use std::sync::Arc;
use std::time::Duration;

use common::api::status::{Condition, MeshStatus, ValidationMessage};
use common::resource::Resource;
use common::validate::Severity;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, TypeMeta};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::assemble::validation_context;
use crate::watch::Stores;

/// The field manager of status writes.
const MANAGER: &str = "mesh-controller";
/// How often statuses are checked even when nothing changed (a status edited by hand).
const RECHECK: Duration = Duration::from_secs(60);

/// Writes statuses while `leading` is true: after every rebuild of the config (`rebuilt` is
/// notified; an invalid object changes no config but needs its status), and every minute.
pub async fn write_statuses(
    client: kube::Client,
    stores: Arc<Stores>,
    rebuilt: Arc<Notify>,
    domain: String,
    mut leading: watch::Receiver<bool>,
) {
    loop {
        if leading.wait_for(|leading| *leading).await.is_err() {
            return;
        }
        write_once(&client, &stores, &domain).await;
        tokio::select! {
            _ = rebuilt.notified() => {}
            _ = leading.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

async fn write_once(client: &kube::Client, stores: &Stores, domain: &str) {
    let mut objects = Vec::new();
    for istio in &stores.istio {
        for object in istio.store.state() {
            let mut object = DynamicObject::clone(&object);
            object.types = Some(TypeMeta { api_version: istio.api.api_version.clone(), kind: istio.api.kind.clone() });
            let parsed = Resource::from_document(serde_json::to_value(&object).expect("objects always serialize"));
            objects.push((istio, object, parsed));
        }
    }
    let valid: Vec<Resource> =
        objects.iter().filter_map(|(_, _, parsed)| parsed.as_ref().ok().and_then(|r| r.clone())).collect();
    let context = validation_context(domain, &valid);
    for (istio, object, parsed) in objects {
        let current: MeshStatus = object
            .data
            .get("status")
            .and_then(|status| serde_json::from_value(status.clone()).ok())
            .unwrap_or_default();
        let (reconciled, messages) = match &parsed {
            Ok(Some(resource)) => {
                let diagnostics = resource.validate(&context);
                let messages = diagnostics
                    .all()
                    .iter()
                    .map(|diagnostic| ValidationMessage {
                        level: diagnostic.severity.as_str().to_string(),
                        field: diagnostic.field.to_string(),
                        message: diagnostic.message.clone(),
                    })
                    .collect();
                let first_error = diagnostics.of(Severity::Error).next();
                let reconciled = match first_error {
                    None => (true, "Accepted", "sent to the proxies that can see it".to_string()),
                    Some(error) => {
                        (false, "Invalid", format!("{}: {}; not sent to any proxy", error.field, error.message))
                    }
                };
                (reconciled, messages)
            }
            Ok(None) => continue,
            Err(error) => {
                let message = ValidationMessage {
                    level: Severity::Error.as_str().to_string(),
                    field: error.field.clone(),
                    message: error.message.clone(),
                };
                (
                    (false, "Unreadable", format!("{}: {}; not sent to any proxy", error.field, error.message)),
                    vec![message],
                )
            }
        };
        let desired = desired_status(&current, reconciled, messages, object.metadata.generation);
        if desired == current {
            continue;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &istio.api);
        let patch = json!({
            "apiVersion": istio.api.api_version,
            "kind": istio.api.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": desired,
        });
        match api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
            Ok(_) => tracing::debug!(kind = %istio.kind, %namespace, %name, "status written"),
            Err(error) => tracing::warn!(kind = %istio.kind, %namespace, %name, %error, "cannot write status"),
        }
    }
}

/// The status to write: the `Reconciled` condition, keeping its transition time when its
/// value did not change, and the validation messages.
fn desired_status(
    current: &MeshStatus,
    (ok, reason, message): (bool, &str, String),
    validation_messages: Vec<ValidationMessage>,
    generation: Option<i64>,
) -> MeshStatus {
    let status = if ok { "True" } else { "False" }.to_string();
    let previous = current.conditions.iter().find(|condition| condition.type_ == "Reconciled");
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Some(Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or(Timestamp::now()).to_string()),
    };
    MeshStatus {
        conditions: vec![Condition {
            type_: "Reconciled".to_string(),
            status,
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time,
        }],
        validation_messages,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_verdict_keeps_its_transition_time_and_a_new_one_moves_it() {
        let first = desired_status(&MeshStatus::default(), (true, "Accepted", "ok".into()), vec![], Some(1));
        let time = first.conditions[0].last_transition_time.clone();
        assert!(time.is_some());
        let again = desired_status(&first, (true, "Accepted", "ok".into()), vec![], Some(1));
        assert_eq!(again, first, "nothing to write");
        let mut old = first.clone();
        old.conditions[0].last_transition_time = Some("2020-01-01T00:00:00Z".into());
        let broken = desired_status(&old, (false, "Invalid", "spec.hosts: empty".into()), vec![], Some(2));
        assert_eq!(broken.conditions[0].status, "False");
        assert_ne!(broken.conditions[0].last_transition_time.as_deref(), Some("2020-01-01T00:00:00Z"));
    }
}

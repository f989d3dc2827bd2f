//! Leader election on a `coordination.k8s.io/v1` Lease, so that of all replicas (each serving
//! config) exactly one writes status.
//!
//! The leader renews the Lease every `renew` interval; another replica takes it over once it
//! has not been renewed for `lease_duration`. Writes use the Lease's resourceVersion, so two
//! replicas racing for an expired Lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Who competes for which Lease.
#[derive(Clone, Debug)]
pub struct LeaderSettings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's name in `holderIdentity` (the pod name, by default the host name).
    pub identity: String,
    /// How long a Lease not renewed stays with its holder.
    pub lease_duration: Duration,
    /// How often the holder renews (and the others look).
    pub renew: Duration,
}

/// Competes for the Lease forever; `leading` says whether this replica holds it.
pub async fn elect(api: Api<Lease>, settings: LeaderSettings, leading: watch::Sender<bool>) {
    loop {
        let held = match try_hold(&api, &settings).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(lease = %settings.name, %error, "cannot read or renew the leader Lease");
                false
            }
        };
        if held != *leading.borrow() {
            tracing::info!(lease = %settings.name, identity = %settings.identity, leading = held, "leadership changed");
            leading.send_replace(held);
        }
        tokio::time::sleep(settings.renew).await;
    }
}

/// Takes or renews the Lease when it is free, expired or ours; returns whether we hold it.
async fn try_hold(api: &Api<Lease>, settings: &LeaderSettings) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(settings.name.clone()), ..ObjectMeta::default() },
            spec: Some(held_by(settings, now, 0, now)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(settings.identity.as_str());
    let duration = spec.lease_duration_seconds.map_or(settings.lease_duration.as_secs() as i64, i64::from);
    let expired = spec.renew_time.as_ref().is_none_or(|renewed| renewed.0.as_second() + duration < now.as_second());
    if !ours && !expired {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let acquired = if ours { spec.acquire_time.map_or(now, |time| time.0) } else { now };
    lease.spec = Some(held_by(settings, acquired, transitions, now));
    match api.replace(&settings.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        // Someone else renewed or took it between our read and write.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn held_by(settings: &LeaderSettings, acquired: Timestamp, transitions: i32, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.lease_duration.as_secs() as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

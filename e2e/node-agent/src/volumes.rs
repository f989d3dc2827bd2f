//! Pod volumes, rendered as directories under the pod's state dir and bind-mounted at each
//! container's mountPaths. Rendering is idempotent, so the pod worker re-runs it to refresh
//! service-account tokens (and Secret/ConfigMap contents) before they expire.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::env::{Lookup, PodFacts, field_value};

/// Host paths of the pod's volumes, by volume name.
pub type VolumePaths = BTreeMap<String, PathBuf>;

/// Writes every volume of `pod` below `dir`; returns where each one lives and the lifetime (in
/// seconds) of the shortest-lived token. With `tokens` false, service-account tokens already
/// written are kept (a refresh of Secrets and ConfigMaps between token rotations).
pub async fn render(
    client: &Client,
    facts: &PodFacts<'_>,
    dir: &Path,
    ca_file: Option<&Path>,
    tokens: bool,
) -> Result<(VolumePaths, Option<i64>)> {
    let pod = facts.pod;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let lookup = Lookup::new(client, &ns);
    let mut paths = VolumePaths::new();
    let mut min_ttl: Option<i64> = None;
    for vol in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        if let Some(hp) = &vol.host_path {
            paths.insert(vol.name.clone(), PathBuf::from(&hp.path));
            continue;
        }
        let target = dir.join(&vol.name);
        std::fs::create_dir_all(&target)?;
        let ttl = render_one(client, facts, &lookup, &vol, &target, ca_file, tokens).await.with_context(|| {
            format!("volume {:?} of pod {ns}/{}", vol.name, pod.metadata.name.as_deref().unwrap_or(""))
        })?;
        if let Some(ttl) = ttl {
            min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
        }
        paths.insert(vol.name.clone(), target);
    }
    Ok((paths, min_ttl))
}

async fn render_one(
    client: &Client,
    facts: &PodFacts<'_>,
    lookup: &Lookup,
    vol: &Volume,
    target: &Path,
    ca_file: Option<&Path>,
    tokens: bool,
) -> Result<Option<i64>> {
    if vol.empty_dir.is_some() {
        // Like kubelet: world-writable, so a non-root container can use it.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o777))?;
        return Ok(None);
    }
    if let Some(s) = &vol.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = lookup.secret(&name).await?;
        write_keyed(target, data, &s.items, s.default_mode, s.optional, &format!("Secret {name}"))?;
        return Ok(None);
    }
    if let Some(cm) = &vol.config_map {
        let data = config_map_or_ca(lookup, &cm.name, ca_file).await?;
        write_keyed(target, data, &cm.items, cm.default_mode, cm.optional, &format!("ConfigMap {}", cm.name))?;
        return Ok(None);
    }
    if let Some(d) = &vol.downward_api {
        write_downward(target, facts, d.items.as_deref().unwrap_or_default(), d.default_mode)?;
        return Ok(None);
    }
    let Some(p) = &vol.projected else {
        bail!("unsupported volume type (supported: emptyDir, secret, configMap, downwardAPI, projected, hostPath)");
    };
    let mut ttl = None;
    for src in p.sources.iter().flatten() {
        if let Some(s) = &src.secret {
            let data = lookup.secret(&s.name).await?;
            write_keyed(target, data, &s.items, p.default_mode, s.optional, &format!("Secret {}", s.name))?;
        }
        if let Some(cm) = &src.config_map {
            let data = config_map_or_ca(lookup, &cm.name, ca_file).await?;
            write_keyed(target, data, &cm.items, p.default_mode, cm.optional, &format!("ConfigMap {}", cm.name))?;
        }
        if let Some(d) = &src.downward_api {
            write_downward(target, facts, d.items.as_deref().unwrap_or_default(), p.default_mode)?;
        }
        if let Some(t) = &src.service_account_token {
            let exp = t.expiration_seconds.unwrap_or(3600);
            if tokens {
                let token = request_token(client, facts.pod, t.audience.clone(), exp).await?;
                write_file(&target.join(&t.path), token.as_bytes(), p.default_mode)?;
            }
            ttl = Some(ttl.map_or(exp, |m: i64| m.min(exp)));
        }
    }
    Ok(ttl)
}

/// The `kube-root-ca.crt` ConfigMap is published by kube-controller-manager; until it appears,
/// the cluster CA file stands in so that pods do not wait on it.
async fn config_map_or_ca(
    lookup: &Lookup,
    name: &str,
    ca_file: Option<&Path>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let data = lookup.config_map(name).await?;
    if data.is_none()
        && name == "kube-root-ca.crt"
        && let Some(ca) = ca_file
    {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        return Ok(Some(BTreeMap::from([("ca.crt".to_string(), pem)])));
    }
    Ok(data)
}

/// TokenRequest bound to the pod, as kubelet makes for a projected serviceAccountToken.
async fn request_token(client: &Client, pod: &Pod, audience: Option<String>, exp: i64) -> Result<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().filter(|a| !a.is_empty()).collect(),
            expiration_seconds: Some(exp),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let resp = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {ns}/{sa}"))?;
    Ok(resp.status.map(|s| s.token).unwrap_or_default())
}

fn write_keyed(
    target: &Path,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: &Option<Vec<KeyToPath>>,
    mode: Option<i32>,
    optional: Option<bool>,
    what: &str,
) -> Result<()> {
    let Some(data) = data else {
        if optional.unwrap_or(false) {
            return Ok(());
        }
        bail!("{what} not found");
    };
    match items {
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional.unwrap_or(false) {
                        continue;
                    }
                    bail!("{what} has no key {}", item.key);
                };
                write_file(&target.join(&item.path), value, item.mode.or(mode))?;
            }
        }
        None => {
            for (key, value) in &data {
                write_file(&target.join(key), value, mode)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    target: &Path,
    facts: &PodFacts<'_>,
    items: &[DownwardAPIVolumeFile],
    mode: Option<i32>,
) -> Result<()> {
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => field_value(facts, f).with_context(|| format!("unsupported fieldRef {}", f.field_path))?,
            (None, Some(_)) => "0".to_string(),
            (None, None) => continue,
        };
        write_file(&target.join(&item.path), value.as_bytes(), item.mode.or(mode))?;
    }
    Ok(())
}

/// Writes in place (same inode), so a file that is already bind-mounted shows the new content.
fn write_file(path: &Path, data: &[u8], mode: Option<i32>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    let mode = mode.unwrap_or(0o644) as u32;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

//! A container's environment and argv as Kubernetes defines them: service links first, then
//! `envFrom`, then `env` (later wins), `$(VAR)` expanded from what is already defined (`$$`
//! escapes), and the same expansion applied to `command` and `args`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, Secret, Service};
use kube::{Api, Client};

/// What `fieldRef`s and service links need besides the pod object.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: String,
    pub host_ip: String,
    pub services: &'a [Service],
}

/// Resolves a `fieldRef` path the way the downward API does; `None` for unsupported paths.
pub fn field_value(facts: &PodFacts<'_>, sel: &ObjectFieldSelector) -> Option<String> {
    let meta = &facts.pod.metadata;
    let path = sel.field_path.as_str();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<Option<String>> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key).cloned()))
    };
    if let Some(v) = keyed("metadata.labels['", &meta.labels) {
        return Some(v.unwrap_or_default());
    }
    if let Some(v) = keyed("metadata.annotations['", &meta.annotations) {
        return Some(v.unwrap_or_default());
    }
    let spec = facts.pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&meta.labels),
        "metadata.annotations" => format_map(&meta.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => {
            spec.and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into())
        }
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => return None,
    })
}

/// The downward API's `key="value"` lines for labels and annotations.
pub fn format_map(map: &Option<BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in map.iter().flatten() {
        out.push_str(&format!("{k}={}\n", serde_json::Value::String(v.clone())));
    }
    out
}

/// Reads Secrets and ConfigMaps of the pod's namespace.
pub struct Lookup {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
}

impl Lookup {
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
        }
    }

    /// A Secret's data as text; `None` when it does not exist.
    pub async fn secret(&self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let secret = self.secrets.get_opt(name).await.with_context(|| format!("reading Secret {name}"))?;
        Ok(secret.map(|s| {
            let mut out: BTreeMap<String, Vec<u8>> =
                s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                out.insert(k, v.into_bytes());
            }
            out
        }))
    }

    /// A ConfigMap's data (binaryData included); `None` when it does not exist.
    pub async fn config_map(&self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let cm = self.config_maps.get_opt(name).await.with_context(|| format!("reading ConfigMap {name}"))?;
        Ok(cm.map(|c| {
            let mut out: BTreeMap<String, Vec<u8>> =
                c.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            for (k, v) in c.data.unwrap_or_default() {
                out.insert(k, v.into_bytes());
            }
            out
        }))
    }
}

/// The container's full environment, in definition order.
pub async fn container_env(facts: &PodFacts<'_>, c: &Container, lookup: &Lookup) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    };
    let links = facts.pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    for svc in facts.services {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let own = Some(ns) == facts.pod.metadata.namespace.as_deref();
        if (links && own) || (ns == "default" && name == "kubernetes") {
            for (k, v) in service_vars(svc) {
                set(&mut env, k, v);
            }
        }
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what) = if let Some(s) = &from.secret_ref {
            (lookup.secret(&s.name).await?, s.optional.unwrap_or(false), format!("Secret {}", s.name))
        } else if let Some(cm) = &from.config_map_ref {
            (lookup.config_map(&cm.name).await?, cm.optional.unwrap_or(false), format!("ConfigMap {}", cm.name))
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
                }
            }
            None if optional => {}
            None => bail!("envFrom: {what} not found"),
        }
    }
    for var in c.env.iter().flatten() {
        let value = match &var.value_from {
            Some(src) => match value_from(facts, src, lookup).await? {
                Some(v) => v,
                None => continue,
            },
            None => expand(var.value.as_deref().unwrap_or_default(), &env),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `NAME_SERVICE_HOST` / `NAME_SERVICE_PORT[_PORTNAME]` as kubelet injects them.
fn service_vars(svc: &Service) -> Vec<(String, String)> {
    let spec = svc.spec.as_ref();
    let Some(ip) = spec.and_then(|s| s.cluster_ip.clone()).filter(|ip| ip != "None" && !ip.is_empty()) else {
        return Vec::new();
    };
    let prefix = svc.metadata.name.as_deref().unwrap_or_default().to_uppercase().replace('-', "_");
    let ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip)];
    if let Some(first) = ports.first() {
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    }
    for p in &ports {
        if let Some(name) = &p.name {
            out.push((format!("{prefix}_SERVICE_PORT_{}", name.to_uppercase().replace('-', "_")), p.port.to_string()));
        }
    }
    out
}

async fn value_from(facts: &PodFacts<'_>, src: &EnvVarSource, lookup: &Lookup) -> Result<Option<String>> {
    if let Some(f) = &src.field_ref {
        return field_value(facts, f).map(Some).with_context(|| format!("unsupported fieldRef {}", f.field_path));
    }
    if let Some(r) = &src.resource_field_ref {
        // No resource accounting here: report the node's whole capacity, as kubelet does for a
        // container without limits (2 CPUs, 4Gi).
        let v = if r.resource.contains("cpu") { "2" } else { "4294967296" };
        return Ok(Some(v.to_string()));
    }
    let (data, key, optional, what) = if let Some(s) = &src.secret_key_ref {
        (lookup.secret(&s.name).await?, &s.key, s.optional.unwrap_or(false), format!("Secret {}", s.name))
    } else if let Some(cm) = &src.config_map_key_ref {
        (lookup.config_map(&cm.name).await?, &cm.key, cm.optional.unwrap_or(false), format!("ConfigMap {}", cm.name))
    } else {
        return Ok(None);
    };
    match data.and_then(|d| d.get(key).cloned()) {
        Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        None if optional => Ok(None),
        None => bail!("{what} has no key {key}"),
    }
}

/// Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` becomes `$`, anything else is
/// left exactly as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_defined_vars_keeps_unknown_and_unescapes_dollars() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }
}

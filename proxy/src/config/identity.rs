//! Who this proxy is: its pod's name, namespace, service account, labels and IPs, as the
//! injector passes them (flags or the environment variables Istio's sidecar reads). What is
//! not given is taken from the pod's own object when the config holds it.

use common::compile::ProxyIdentity;
use common::registry::Registry;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// The identity as configured; resolved against the registry at every compile, so a Pod
/// object in the config can fill in labels and IPs.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    pub pod_name: String,
    pub namespace: String,
    pub service_account: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// A downward-API file of the pod's labels (`key="value"` lines), read at every compile.
    pub labels_file: Option<PathBuf>,
    pub ips: Vec<IpAddr>,
}

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("pod labels {0:?}: expected key=value pairs separated by commas")]
    Labels(String),
    #[error("pod IPs {0:?}: expected IP addresses separated by commas")]
    Ips(String),
    #[error("pod labels file {path}: {message}")]
    LabelsFile { path: String, message: String },
}

/// Reads `app=reviews,version=v1`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, IdentityError> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(IdentityError::Labels(text.to_string())),
        })
        .collect()
}

/// Reads `10.1.0.5,fd00::5`.
pub fn parse_ips(text: &str) -> Result<Vec<IpAddr>, IdentityError> {
    text.split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(|ip| ip.parse().map_err(|_| IdentityError::Ips(text.to_string())))
        .collect()
}

impl IdentitySettings {
    /// The identity to compile for: the settings given, completed from the pod object named
    /// `namespace/pod_name` in the registry when there is one.
    pub fn resolve(&self, registry: &Registry) -> Result<ProxyIdentity, IdentityError> {
        let mut identity = ProxyIdentity::sidecar(&self.namespace, &self.pod_name);
        let pod = registry.workload(&self.namespace, &self.pod_name);
        let mut labels = self.labels.clone();
        if let Some(path) = &self.labels_file {
            let err = |message: String| IdentityError::LabelsFile { path: path.display().to_string(), message };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            labels.extend(crate::init::annotations::parse(&text).map_err(|e| err(e.to_string()))?);
        }
        identity.labels = match (labels.is_empty(), pod) {
            (true, Some(pod)) => pod.labels.clone(),
            _ => labels,
        };
        identity.ips = match (self.ips.is_empty(), pod) {
            (true, Some(pod)) => pod.ips.clone(),
            _ => self.ips.clone(),
        };
        identity.service_account = match (&self.service_account, pod) {
            (Some(account), _) => account.clone(),
            (None, Some(pod)) => pod.service_account.clone(),
            (None, None) => "default".to_string(),
        };
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ips_read_from_flags() {
        let labels = parse_labels("app=productpage, version=v1").unwrap();
        assert_eq!(labels["app"], "productpage");
        assert_eq!(labels["version"], "v1");
        assert!(parse_labels("app").is_err());
        assert_eq!(parse_ips("10.1.0.5, ::1").unwrap().len(), 2);
        assert!(parse_ips("10.1.0").is_err());
    }

    #[test]
    fn a_pod_in_the_config_fills_in_what_flags_leave_out() {
        let objects = super::super::file::parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: pp, namespace: shop, labels: {app: productpage}}\n\
             spec: {serviceAccountName: bookinfo-productpage, containers: []}\nstatus: {podIP: 10.1.0.9}\n",
        )
        .unwrap();
        let registry = objects.registry("cluster.local");
        let settings = IdentitySettings { pod_name: "pp".into(), namespace: "shop".into(), ..Default::default() };
        let identity = settings.resolve(&registry).unwrap();
        assert_eq!(identity.labels["app"], "productpage");
        assert_eq!(identity.ips, ["10.1.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(identity.service_account, "bookinfo-productpage");
        let explicit = IdentitySettings { service_account: Some("other".into()), ..settings };
        assert_eq!(explicit.resolve(&registry).unwrap().service_account, "other");
    }
}

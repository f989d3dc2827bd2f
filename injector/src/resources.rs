//! The sidecar's requests and limits, from the pod's `sidecar.istio.io/proxy*` annotations.

use crate::InjectError;
use crate::config::ProxyResources;
use crate::keys;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// Resources for the sidecar of a pod with `annotations`.
///
/// A request set above the default limit raises the limit to the request (the user asked for
/// the request; refusing the pod over our default would be unhelpful). A request above a limit
/// that the user set too is an error, as Kubernetes would refuse the pod anyway, with a less
/// clear message.
pub fn for_pod(
    pod: &str,
    annotations: &BTreeMap<String, String>,
    defaults: &ProxyResources,
) -> Result<ResourceRequirements, InjectError> {
    let cpu =
        pair(pod, annotations, keys::PROXY_CPU, keys::PROXY_CPU_LIMIT, &defaults.cpu_request, &defaults.cpu_limit)?;
    let memory = pair(
        pod,
        annotations,
        keys::PROXY_MEMORY,
        keys::PROXY_MEMORY_LIMIT,
        &defaults.memory_request,
        &defaults.memory_limit,
    )?;
    let map = |cpu: String, memory: String| {
        Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu)), ("memory".to_string(), Quantity(memory))]))
    };
    Ok(ResourceRequirements { requests: map(cpu.0, memory.0), limits: map(cpu.1, memory.1), ..Default::default() })
}

/// One resource's (request, limit).
fn pair(
    pod: &str,
    annotations: &BTreeMap<String, String>,
    request_key: &str,
    limit_key: &str,
    default_request: &str,
    default_limit: &str,
) -> Result<(String, String), InjectError> {
    let read = |key: &str| -> Result<Option<(String, f64)>, InjectError> {
        let Some(raw) = annotations.get(key) else { return Ok(None) };
        let v = raw.trim();
        let value = parse_quantity(v).ok_or_else(|| InjectError::Annotation {
            pod: pod.to_string(),
            annotation: key.to_string(),
            message: format!("`{raw}` is not a Kubernetes quantity (expected e.g. 100m, 0.5, 128Mi, 1G)"),
        })?;
        Ok(Some((v.to_string(), value)))
    };
    let default = |s: &str| (s.to_string(), parse_quantity(s).unwrap_or(0.0));
    match (read(request_key)?, read(limit_key)?) {
        (Some(req), Some(lim)) if req.1 > lim.1 => Err(InjectError::Annotation {
            pod: pod.to_string(),
            annotation: request_key.to_string(),
            message: format!("request {} is above the limit {} set by {limit_key}", req.0, lim.0),
        }),
        (Some(req), Some(lim)) => Ok((req.0, lim.0)),
        (Some(req), None) => {
            let lim = default(default_limit);
            Ok(if req.1 > lim.1 { (req.0.clone(), req.0) } else { (req.0, lim.0) })
        }
        (None, Some(lim)) => {
            let req = default(default_request);
            // A limit below our default request lowers the request to the limit.
            Ok(if req.1 > lim.1 { (lim.0.clone(), lim.0) } else { (req.0, lim.0) })
        }
        (None, None) => Ok((default_request.to_string(), default_limit.to_string())),
    }
}

/// The value of a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1e3`, `2G`) in base units, or
/// `None` when it is not one. Precision beyond f64 does not matter for comparing two of them.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.contains(['+', '-']) || digits.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn get(r: &ResourceRequirements, which: &str, res: &str) -> String {
        let map = if which == "requests" { &r.requests } else { &r.limits };
        map.as_ref().unwrap()[res].0.clone()
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        for bad in ["", "lots", "1.2.3", "10 m", "m", "1Qi", "--1"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults_apply_without_annotations() {
        let r = for_pod("default/web", &BTreeMap::new(), &ProxyResources::default()).unwrap();
        assert_eq!(get(&r, "requests", "cpu"), "100m");
        assert_eq!(get(&r, "requests", "memory"), "128Mi");
        assert_eq!(get(&r, "limits", "cpu"), "2000m");
        assert_eq!(get(&r, "limits", "memory"), "1024Mi");
    }

    #[test]
    fn annotations_set_requests_and_limits() {
        let a = annotations(&[
            (keys::PROXY_CPU, "250m"),
            (keys::PROXY_MEMORY, "64Mi"),
            (keys::PROXY_CPU_LIMIT, "1"),
            (keys::PROXY_MEMORY_LIMIT, "256Mi"),
        ]);
        let r = for_pod("default/web", &a, &ProxyResources::default()).unwrap();
        assert_eq!(get(&r, "requests", "cpu"), "250m");
        assert_eq!(get(&r, "requests", "memory"), "64Mi");
        assert_eq!(get(&r, "limits", "cpu"), "1");
        assert_eq!(get(&r, "limits", "memory"), "256Mi");
    }

    #[test]
    fn a_request_above_the_default_limit_raises_the_limit() {
        let a = annotations(&[(keys::PROXY_CPU, "3"), (keys::PROXY_MEMORY_LIMIT, "64Mi")]);
        let r = for_pod("default/web", &a, &ProxyResources::default()).unwrap();
        assert_eq!((get(&r, "requests", "cpu"), get(&r, "limits", "cpu")), ("3".into(), "3".into()));
        // And a limit below the default request lowers the request.
        assert_eq!((get(&r, "requests", "memory"), get(&r, "limits", "memory")), ("64Mi".into(), "64Mi".into()));
    }

    #[test]
    fn bad_values_name_the_pod_and_annotation() {
        let a = annotations(&[(keys::PROXY_MEMORY, "lots")]);
        let err = for_pod("default/web", &a, &ProxyResources::default()).unwrap_err().to_string();
        assert!(err.contains("Pod default/web"), "{err}");
        assert!(err.contains("sidecar.istio.io/proxyMemory"), "{err}");
        assert!(err.contains("`lots` is not a Kubernetes quantity"), "{err}");

        let a = annotations(&[(keys::PROXY_CPU, "2"), (keys::PROXY_CPU_LIMIT, "500m")]);
        let err = for_pod("default/web", &a, &ProxyResources::default()).unwrap_err().to_string();
        assert!(err.contains("request 2 is above the limit 500m"), "{err}");
    }
}

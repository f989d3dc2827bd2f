//! `Gateway`: the ports, protocols, hosts and TLS settings a gateway proxy (a standalone
//! ingress or egress proxy at the edge of the mesh) listens with. VirtualServices bound to the
//! gateway then route what arrives.

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::MeshStatus;
use crate::hosts;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// The spec of a `Gateway`, Istio's `networking.istio.io` `Gateway` message.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "gw",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The servers (listeners) the gateway opens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway proxy pods that take this configuration, for example
    /// `istio: ingressgateway`. The pods may run in any namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One listener of a gateway: a port, the hosts it serves and how TLS is handled.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    /// The port the proxy listens on and the protocol it expects there.
    #[serde(default)]
    pub port: Port,
    /// The address to listen on (an IP, or `unix://` path); unset means every address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// The hosts served here, each `host` or `namespace/host`: only VirtualServices of that
    /// namespace (`.` this one, `*` any) for those hosts bind to the server. Hosts may have a
    /// leading wildcard, or be `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS for this server: termination, pass-through, or an HTTP-to-HTTPS redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTLSSettings>,
    /// Where traffic goes when no route matches (`127.0.0.1:PORT` or a unix socket).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// A name for the server, used in stats and status; unique within the gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A port and the protocol spoken on it, as Gateway servers and Sidecar listeners declare them.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    /// The port number, 1-65535.
    #[serde(default)]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP` or `TLS`; decides whether
    /// traffic is routed as HTTP, by SNI, or as opaque TCP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// A name for the port, unique within the gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port traffic is forwarded to on the endpoint, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// How a server handles TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Terminate TLS with the server's certificate; clients are not asked for one.
    #[default]
    Simple,
    /// Forward the connection unterminated, routing by SNI.
    Passthrough,
    /// Terminate TLS and require a client certificate signed by the configured CA.
    Mutual,
    /// Forward unterminated, routing by SNI alone, without a VirtualService.
    AutoPassthrough,
    /// Terminate mutual TLS with the mesh's own certificates (for traffic from other proxies).
    IstioMutual,
    /// Terminate TLS and ask for a client certificate, but accept clients without one.
    OptionalMutual,
}

/// A TLS protocol version bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocolVersion {
    /// The proxy's default.
    #[serde(rename = "TLS_AUTO")]
    Auto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    V1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    V1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    V1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// TLS settings of a gateway server (and of a Sidecar ingress listener).
///
/// Certificates come either from a Kubernetes secret (`credentialName`) or from files mounted
/// in the proxy (`serverCertificate`, `privateKey`, `caCertificates`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTLSSettings {
    /// On a plain HTTP server: answer every request with a 301 redirect to HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// How TLS is handled; `SIMPLE` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Path of the PEM server certificate file in the proxy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Path of the PEM private key file in the proxy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Path of the PEM CA bundle that client certificates are checked against (`MUTUAL`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Path of a certificate revocation list checked for client certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// A Kubernetes secret, in the gateway proxy's namespace, holding the key and certificate
    /// (`tls.key`/`tls.crt` or `key`/`cert`) and for `MUTUAL` the CA (`ca.crt` or a
    /// `<name>-cacert` secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// For `MUTUAL`/`OPTIONAL_MUTUAL`: a secret or config map holding only the CA bundle that
    /// client certificates are checked against, apart from the server's own `credentialName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_credential_name: String,
    /// Several secrets (for example one RSA and one ECDSA certificate); not with
    /// `credentialName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Several certificate/key file pairs; not with `serverCertificate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Client certificates must carry one of these subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Client certificates must have one of these base64 SHA-256 public-key (SPKI) hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Client certificates must have one of these hex SHA-256 certificate hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// The lowest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocolVersion>,
    /// The highest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocolVersion>,
    /// The cipher suites offered, by OpenSSL name; unset means the proxy's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// One certificate/key pair given as files in the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsCertificate {
    /// Path of the PEM certificate file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Path of the PEM private key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Path of the PEM CA bundle for client certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
}

/// The protocols a gateway server or sidecar listener may declare.
pub const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS"];

impl ServerTlsMode {
    /// The mode as written in YAML (`SIMPLE`, `ISTIO_MUTUAL`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simple => "SIMPLE",
            Self::Passthrough => "PASSTHROUGH",
            Self::Mutual => "MUTUAL",
            Self::AutoPassthrough => "AUTO_PASSTHROUGH",
            Self::IstioMutual => "ISTIO_MUTUAL",
            Self::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

impl Server {
    /// The server's hosts as `(namespace, host)`: the namespace whose VirtualServices may bind
    /// (`*` any, `.` the Gateway's own, or a name) and the host pattern. A host written without
    /// a namespace accepts VirtualServices of any namespace.
    pub fn namespaced_hosts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.hosts.iter().map(|value| value.split_once('/').unwrap_or(("*", value.as_str())))
    }
}

impl ServerTLSSettings {
    /// The mode in effect (`SIMPLE` when unset).
    pub fn effective_mode(&self) -> ServerTlsMode {
        self.mode.unwrap_or_default()
    }
}

impl Validate for GatewaySpec {
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        rules::labels(&self.selector, &path.field("selector"), diagnostics);
        if self.servers.is_empty() {
            diagnostics.error(&path.field("servers"), "a Gateway needs at least one server (a port with its hosts)");
        }
        let mut port_names = BTreeSet::new();
        let mut server_names = BTreeSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let path = path.field("servers").index(index);
            if !server.port.name.is_empty() && !port_names.insert(server.port.name.as_str()) {
                diagnostics.error(
                    &path.field("port").field("name"),
                    format!(
                        "port name {:?} is used by another server; give each server port a unique name",
                        server.port.name
                    ),
                );
            }
            if !server.name.is_empty() && !server_names.insert(server.name.as_str()) {
                diagnostics.error(
                    &path.field("name"),
                    format!("server name {:?} is used by another server; give each server a unique name", server.name),
                );
            }
            server_rules(server, &path, diagnostics);
        }
    }
}

fn server_rules(server: &Server, path: &FieldPath, diagnostics: &mut Diagnostics) {
    port_rules(&server.port, true, &path.field("port"), diagnostics);
    if server.port.target_port.is_some() {
        diagnostics.unsupported(&path.field("port").field("targetPort"));
    }
    if !server.bind.is_empty() {
        diagnostics.unsupported(&path.field("bind"));
    }
    if !server.default_endpoint.is_empty() {
        diagnostics.unsupported(&path.field("defaultEndpoint"));
    }
    if server.hosts.is_empty() {
        diagnostics.error(&path.field("hosts"), "list at least one host, such as bookinfo.example.com or *");
    }
    for (index, host) in server.hosts.iter().enumerate() {
        server_host(host, &path.field("hosts").index(index), diagnostics);
    }
    let protocol = server.port.protocol.to_ascii_uppercase();
    let terminates = matches!(protocol.as_str(), "HTTPS" | "TLS");
    match &server.tls {
        None if terminates => diagnostics.error(
            &path.field("tls"),
            format!("{protocol} servers need tls settings; set tls.mode and its certificate (credentialName)"),
        ),
        None => {}
        Some(tls) => tls_rules(tls, &protocol, &path.field("tls"), diagnostics),
    }
}

/// A port of a gateway server or sidecar listener: a number in range and a known protocol.
pub(crate) fn port_rules(port: &Port, protocol_required: bool, path: &FieldPath, diagnostics: &mut Diagnostics) {
    rules::port(port.number, &path.field("number"), diagnostics);
    if let Some(target) = port.target_port {
        rules::port(target, &path.field("targetPort"), diagnostics);
    }
    let known = PROTOCOLS.iter().any(|known| known.eq_ignore_ascii_case(&port.protocol));
    if port.protocol.is_empty() {
        if protocol_required {
            diagnostics.error(&path.field("protocol"), format!("set the protocol, one of {}", PROTOCOLS.join(", ")));
        }
    } else if !known {
        diagnostics.error(
            &path.field("protocol"),
            format!("protocol {:?} is not known; use one of {}", port.protocol, PROTOCOLS.join(", ")),
        );
    }
}

/// A gateway server host: `host` or `namespace/host`, where the namespace is `.`, `*` or a
/// name, and the host a name with an optional leading wildcard, or `*`.
fn server_host(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let (namespace, host) = value.split_once('/').unwrap_or(("*", value));
    if !(matches!(namespace, "." | "*") || hosts::is_dns1123_label(namespace)) || host.contains('/') {
        diagnostics.error(
            path,
            format!("{value:?} is not a valid server host; use host or namespace/host, where namespace is '.', '*' or a namespace name"),
        );
        return;
    }
    if host != "*" {
        rules::hostname(host, true, path, diagnostics);
    }
}

fn tls_rules(tls: &ServerTLSSettings, protocol: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let mode = tls.effective_mode();
    for (field, set) in [
        ("caCrl", !tls.ca_crl.is_empty()),
        ("caCertCredentialName", !tls.ca_cert_credential_name.is_empty()),
        ("credentialNames", !tls.credential_names.is_empty()),
        ("tlsCertificates", !tls.tls_certificates.is_empty()),
        ("subjectAltNames", !tls.subject_alt_names.is_empty()),
        ("verifyCertificateSpki", !tls.verify_certificate_spki.is_empty()),
        ("verifyCertificateHash", !tls.verify_certificate_hash.is_empty()),
        ("minProtocolVersion", tls.min_protocol_version.is_some()),
        ("maxProtocolVersion", tls.max_protocol_version.is_some()),
        ("cipherSuites", !tls.cipher_suites.is_empty()),
    ] {
        if set {
            diagnostics.unsupported(&path.field(field));
        }
    }
    if matches!(mode, ServerTlsMode::AutoPassthrough | ServerTlsMode::OptionalMutual) {
        diagnostics.unsupported(&path.field("mode"));
    }
    if tls.https_redirect {
        // A redirect needs no certificate: the server only answers with a 301.
        return;
    }
    if !matches!(protocol, "HTTPS" | "TLS") {
        diagnostics.error(
            &path.field("mode"),
            format!("TLS settings apply to HTTPS and TLS servers; this server's protocol is {protocol:?} (use httpsRedirect to redirect HTTP to HTTPS)"),
        );
        return;
    }
    let files = !tls.server_certificate.is_empty() || !tls.private_key.is_empty();
    let secret = !tls.credential_name.is_empty() || !tls.credential_names.is_empty();
    match mode {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if secret && files {
                diagnostics.error(
                    &path.field("credentialName"),
                    "set credentialName or serverCertificate/privateKey, not both",
                );
            } else if !secret && tls.tls_certificates.is_empty() {
                if !files {
                    diagnostics.error(
                        path,
                        format!(
                            "{} TLS needs a certificate; set credentialName (a secret) or serverCertificate and privateKey",
                            mode.as_str()
                        ),
                    );
                } else if tls.server_certificate.is_empty() {
                    diagnostics.error(&path.field("serverCertificate"), "privateKey is set; set serverCertificate too");
                } else if tls.private_key.is_empty() {
                    diagnostics.error(&path.field("privateKey"), "serverCertificate is set; set privateKey too");
                }
            }
            let mutual = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
            if mutual && !secret && tls.ca_certificates.is_empty() && tls.ca_cert_credential_name.is_empty() {
                diagnostics.error(
                    &path.field("caCertificates"),
                    "MUTUAL TLS checks client certificates against a CA; set caCertificates or caCertCredentialName, or use credentialName with a ca.crt",
                );
            }
            if !tls.ca_cert_credential_name.is_empty() && !mutual {
                diagnostics.error(
                    &path.field("caCertCredentialName"),
                    format!(
                        "{} TLS does not check client certificates; remove caCertCredentialName or use MUTUAL",
                        mode.as_str()
                    ),
                );
            }
        }
        ServerTlsMode::IstioMutual => {
            if secret || files || !tls.ca_certificates.is_empty() || !tls.ca_cert_credential_name.is_empty() {
                diagnostics.error(
                    path,
                    "ISTIO_MUTUAL uses the mesh's own certificates; remove credentialName, serverCertificate, privateKey, caCertificates and caCertCredentialName",
                );
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ObjectRef;

    fn diagnostics_of(spec: &GatewaySpec) -> Vec<String> {
        let mut diagnostics = Diagnostics::new(ObjectRef::new("Gateway", "default", "gw"));
        spec.validate(&FieldPath::spec(), &ValidationContext::standalone(), &mut diagnostics);
        diagnostics.all().iter().map(ToString::to_string).collect()
    }

    fn https_server(tls: ServerTLSSettings) -> GatewaySpec {
        GatewaySpec {
            selector: [("istio".to_string(), "ingressgateway".to_string())].into(),
            servers: vec![Server {
                port: Port { number: 443, protocol: "HTTPS".into(), name: "https".into(), target_port: None },
                hosts: vec!["bookinfo.example.com".into()],
                tls: Some(tls),
                ..Server::default()
            }],
        }
    }

    #[test]
    fn mutual_tls_with_files_needs_a_ca_but_a_secret_carries_its_own() {
        let files = ServerTLSSettings {
            mode: Some(ServerTlsMode::Mutual),
            server_certificate: "/etc/certs/cert.pem".into(),
            private_key: "/etc/certs/key.pem".into(),
            ..ServerTLSSettings::default()
        };
        let found = diagnostics_of(&https_server(files));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("spec.servers[0].tls.caCertificates: MUTUAL TLS checks"), "{found:?}");
        let secret = ServerTLSSettings {
            mode: Some(ServerTlsMode::Mutual),
            credential_name: "bookinfo-credential".into(),
            ..ServerTLSSettings::default()
        };
        assert!(diagnostics_of(&https_server(secret)).is_empty());
    }

    #[test]
    fn simple_tls_needs_a_certificate_and_a_key() {
        let found = diagnostics_of(&https_server(ServerTLSSettings::default()));
        assert!(found[0].contains("spec.servers[0].tls: SIMPLE TLS needs a certificate"), "{found:?}");
        let half = ServerTLSSettings { server_certificate: "/c.pem".into(), ..ServerTLSSettings::default() };
        assert!(diagnostics_of(&https_server(half))[0].contains("spec.servers[0].tls.privateKey"));
    }

    #[test]
    fn server_hosts_may_name_a_namespace() {
        let mut diagnostics = Diagnostics::new(ObjectRef::new("Gateway", "default", "gw"));
        for host in ["*", "*.example.com", "./reviews.example.com", "*/*", "prod/*.example.com"] {
            server_host(host, &FieldPath::spec(), &mut diagnostics);
        }
        assert!(diagnostics.is_empty(), "{diagnostics}");
        for host in ["a/b/c", "Prod/x.com", "bad_host"] {
            server_host(host, &FieldPath::spec(), &mut diagnostics);
        }
        assert_eq!(diagnostics.all().len(), 3, "{diagnostics}");
    }
}

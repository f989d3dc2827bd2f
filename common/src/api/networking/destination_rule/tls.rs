//! How the proxy secures its connection to a destination (client side TLS).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext};

/// TLS towards the destination: the mesh's own mutual TLS, or TLS with certificates the user
/// supplies (to an external service, say).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTLSSettings {
    /// Which kind of TLS, if any. `DISABLE` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Path of the certificate the proxy presents in `MUTUAL` mode. Required for `MUTUAL`
    /// unless `credentialName` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    /// Path of the private key of `clientCertificate`. Required for `MUTUAL` unless
    /// `credentialName` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Path of the CA bundle the server's certificate is verified against; without it (and
    /// without `credentialName`) the system roots are used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Name of a Secret holding the client certificate, key and CA (`tls.crt`, `tls.key`,
    /// `ca.crt`), instead of file paths. Only for proxies that can read it (gateways).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// The server's certificate must carry one of these subject alternative names. Not
    /// supported yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// The server name sent in the TLS handshake (SNI); by default the destination's host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    /// Skip verifying the server's certificate and names. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Path of a certificate revocation list checked against the server's certificate. Not
    /// supported yet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
}

impl ClientTLSSettings {
    /// The mode in force, `DISABLE` when unset.
    pub fn mode(&self) -> TlsMode {
        self.mode.unwrap_or_default()
    }
}

/// The kinds of client TLS, with Istio's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plain text: the proxy does not originate TLS.
    #[default]
    Disable,
    /// TLS that verifies the server; the proxy presents no certificate.
    Simple,
    /// Mutual TLS with the certificate and key given in the settings.
    Mutual,
    /// Mutual TLS with the proxy's own mesh certificate; the other fields are ignored.
    IstioMutual,
}

impl Validate for ClientTLSSettings {
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        validate(self, path, diagnostics);
    }
}

/// Istio's rules for client TLS: what each mode needs, what it ignores, and what cannot be
/// combined; `path` names the `tls` field.
pub(super) fn validate(tls: &ClientTLSSettings, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let mode = tls.mode();
    let files_set = [
        ("clientCertificate", &tls.client_certificate),
        ("privateKey", &tls.private_key),
        ("caCertificates", &tls.ca_certificates),
        ("caCrl", &tls.ca_crl),
    ];
    match mode {
        TlsMode::Simple | TlsMode::Mutual if !tls.credential_name.is_empty() => {
            for (field, value) in files_set {
                if !value.is_empty() {
                    diagnostics.error(
                        &path.field(field),
                        format!(
                            "{field} cannot be combined with credentialName; take certificates either from the \
                             Secret or from files"
                        ),
                    );
                }
            }
        }
        TlsMode::Mutual => {
            for (field, value) in &files_set[..2] {
                if value.is_empty() {
                    diagnostics.error(
                        &path.field(field),
                        "MUTUAL mode needs clientCertificate and privateKey, or a credentialName",
                    );
                }
            }
        }
        TlsMode::Simple => {
            for (field, value) in &files_set[..2] {
                if !value.is_empty() {
                    diagnostics
                        .warning(&path.field(field), "ignored in SIMPLE mode; use MUTUAL to present a certificate");
                }
            }
        }
        TlsMode::Disable | TlsMode::IstioMutual => {
            let mode_name = if mode == TlsMode::Disable { "DISABLE" } else { "ISTIO_MUTUAL" };
            let mut ignored: Vec<(&str, &String)> = files_set.to_vec();
            ignored.push(("credentialName", &tls.credential_name));
            for (field, value) in ignored {
                if !value.is_empty() {
                    diagnostics.warning(
                        &path.field(field),
                        format!("ignored in {mode_name} mode; use SIMPLE or MUTUAL to supply certificates"),
                    );
                }
            }
        }
    }
    if !tls.subject_alt_names.is_empty() {
        diagnostics.unsupported(&path.field("subjectAltNames"));
    }
    if tls.insecure_skip_verify.is_some() {
        diagnostics.unsupported(&path.field("insecureSkipVerify"));
    }
    if !tls.ca_crl.is_empty() {
        diagnostics.unsupported(&path.field("caCrl"));
    }
}

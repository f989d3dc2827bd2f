//! Every Istio kind the mesh reads, as one enum, and the parsing of YAML into it.
//!
//! Resources are accepted in any served version (`networking.istio.io/v1alpha3` reads the same
//! as `v1`); a document that fails to parse is reported with its kind, name and the path of the
//! offending field, and never affects the other documents.

use std::fmt;

use kube::Resource as _;
use kube::api::ObjectMeta;
use serde::Serialize;

use crate::api::networking::destination_rule::DestinationRule;
use crate::api::networking::gateway::Gateway;
use crate::api::networking::service_entry::ServiceEntry;
use crate::api::networking::sidecar::Sidecar;
use crate::api::networking::virtual_service::VirtualService;
use crate::api::networking::workload_entry::WorkloadEntry;
use crate::api::security::authorization_policy::AuthorizationPolicy;
use crate::api::security::peer_authentication::PeerAuthentication;
use crate::api::security::request_authentication::RequestAuthentication;
use crate::api::{networking, security};
use crate::validate::{Diagnostics, FieldPath, ObjectRef, Validate, ValidationContext};

/// Declares the `Kind` and `Resource` enums and their per-kind plumbing from one table, so that
/// adding a kind is one line.
macro_rules! kinds {
    ($($kind:ident in $group:ident),+ $(,)?) => {
        /// The kinds of Istio resource the mesh understands.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum Kind {
            $(
                #[doc = concat!("`", stringify!($kind), "`")]
                $kind,
            )+
        }

        impl Kind {
            /// Every kind, in a stable order.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),+];

            /// The kind's name as written in YAML.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind)),+ }
            }

            /// The API group of the kind.
            pub fn group(self) -> &'static str {
                match self { $(Kind::$kind => $group::GROUP),+ }
            }

            /// The versions served for the kind, the stored one first.
            pub fn versions(self) -> &'static [&'static str] {
                match self { $(Kind::$kind => $group::VERSIONS),+ }
            }

            /// Looks a kind up by its YAML name.
            pub fn from_name(name: &str) -> Option<Kind> {
                Self::ALL.iter().copied().find(|kind| kind.name() == name)
            }
        }

        /// One Istio resource of any kind.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)] // resources are held in bulk by reference, rarely moved
        pub enum Resource {
            $(
                #[doc = concat!("A `", stringify!($kind), "`.")]
                $kind($kind),
            )+
        }

        impl Resource {
            /// The kind of the resource.
            pub fn kind(&self) -> Kind {
                match self { $(Resource::$kind(_) => Kind::$kind),+ }
            }

            /// The resource's metadata (name, namespace, labels, creation time).
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Resource::$kind(resource) => resource.meta()),+ }
            }

            fn validate_spec(&self, context: &ValidationContext, diagnostics: &mut Diagnostics) {
                match self {
                    $(Resource::$kind(resource) => resource.spec.validate(&FieldPath::spec(), context, diagnostics)),+
                }
            }

            fn from_value(kind: Kind, value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
                match kind {
                    $(Kind::$kind => serde_path_to_error::deserialize(value).map(Resource::$kind)),+
                }
            }

            /// The resource as JSON, with `apiVersion` and `kind` of the stored version.
            pub fn to_json(&self) -> serde_json::Value {
                let value = match self {
                    $(Resource::$kind(resource) => serde_json::to_value(resource)),+
                };
                value.expect("Istio resources always serialize")
            }
        }
    };
}

kinds! {
    VirtualService in networking,
    DestinationRule in networking,
    Gateway in networking,
    ServiceEntry in networking,
    Sidecar in networking,
    WorkloadEntry in networking,
    PeerAuthentication in security,
    AuthorizationPolicy in security,
    RequestAuthentication in security,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Resource {
    /// Names the resource as errors do: `VirtualService default/reviews`.
    pub fn object_ref(&self) -> ObjectRef {
        let meta = self.metadata();
        ObjectRef::new(
            self.kind().name(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// The resource's namespace (`default` when none is written, as `kubectl apply` assumes).
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("default")
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// Checks the resource with Istio's rules; see [`crate::validate`].
    pub fn validate(&self, context: &ValidationContext) -> Diagnostics {
        let mut diagnostics = Diagnostics::new(self.object_ref());
        let meta = self.metadata();
        if meta.name.as_deref().unwrap_or_default().is_empty() {
            diagnostics.error(&FieldPath::root("metadata").field("name"), "every resource needs a name");
        }
        let context = ValidationContext { namespace: self.namespace().to_string(), ..context.clone() };
        self.validate_spec(&context, &mut diagnostics);
        diagnostics
    }

    /// Reads one resource from a parsed YAML or JSON document.
    ///
    /// Returns `Ok(None)` for a document of a kind this crate does not model (a Deployment in
    /// the same file, say), so callers decide whether that matters.
    pub fn from_document(document: serde_json::Value) -> Result<Option<Self>, ParseError> {
        let api_version = document.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let kind_name = document.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let meta = document.get("metadata");
        let text_of =
            |field: &str| meta.and_then(|m| m.get(field)).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let object = ObjectRef::new(kind_name.clone(), text_of("namespace"), text_of("name"));
        let Some(kind) = Kind::from_name(&kind_name) else {
            return Ok(None);
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
        if group != kind.group() {
            return Ok(None);
        }
        if !kind.versions().contains(&version) {
            return Err(ParseError {
                object,
                field: "apiVersion".to_string(),
                message: format!(
                    "version {version:?} is not served; use one of {}",
                    kind.versions().iter().map(|v| format!("{group}/{v}")).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let mut document = document;
        // Every served version shares one schema; read it as the stored version.
        document["apiVersion"] = serde_json::Value::String(format!("{group}/{}", kind.versions()[0]));
        Self::from_value(kind, document).map(Some).map_err(|error| ParseError {
            object,
            field: error.path().to_string(),
            message: error.inner().to_string(),
        })
    }

    /// Reads every Istio resource in a multi-document YAML text. Documents of other kinds are
    /// skipped; each document that fails is reported without stopping the others.
    pub fn parse_yaml_documents(text: &str) -> (Vec<Resource>, Vec<ParseError>) {
        let mut resources = Vec::new();
        let mut errors = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = match serde_json::Value::deserialize_from_yaml(document) {
                Ok(serde_json::Value::Null) => continue,
                Ok(value) => value,
                Err(error) => {
                    errors.push(ParseError {
                        object: ObjectRef::new("document", "", format!("#{}", index + 1)),
                        field: String::new(),
                        message: format!("not valid YAML: {error}"),
                    });
                    continue;
                }
            };
            match Self::from_document(value) {
                Ok(Some(resource)) => resources.push(resource),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        (resources, errors)
    }
}

/// Reads a YAML document into JSON values, which every kube type deserializes from.
trait FromYamlDocument: Sized {
    fn deserialize_from_yaml(document: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error>;
}

impl FromYamlDocument for serde_json::Value {
    fn deserialize_from_yaml(document: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error> {
        serde::Deserialize::deserialize(document)
    }
}

/// A document that could not be read as the resource it claims to be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {}{message}", if field.is_empty() || field == "." { String::new() } else { format!("{field}: ") })]
pub struct ParseError {
    /// The object, as far as its kind and metadata could be read.
    pub object: ObjectRef,
    /// The path of the field that failed, such as `spec.http[0].timeout`.
    pub field: String,
    /// What went wrong, and what would be valid.
    pub message: String,
}

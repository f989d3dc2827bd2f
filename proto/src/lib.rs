//! The gRPC API between the controller and the proxies, generated at build time from
//! `proto/mesh/**.proto` without a system `protoc`.
//!
//! - [`config`]: the config stream (`ConfigDiscovery.StreamConfig`): a proxy says who it is, the
//!   controller sends versioned, incremental resource updates, the proxy ACKs or NACKs each.
//! - [`codec`]: prost encoding with per-stream buffers sized for thousands of streams.
//! - [`parts`]: reassembling an update the controller sent in parts.
//! - [`ca`]: the certificate service (`CertificateAuthority.SignCertificate`): CSR in, chain out;
//!   [`ca_client`]: its caller's end (key, CSR, the call over TLS trusting the mesh root).
#![forbid(unsafe_code)]

/// The config stream, `mesh.config.v1`.
pub mod config {
    #![allow(missing_docs, clippy::all)] // generated code
    tonic::include_proto!("mesh.config.v1");
}

/// The certificate service, `mesh.ca.v1`.
pub mod ca {
    #![allow(missing_docs, clippy::all)] // generated code
    tonic::include_proto!("mesh.ca.v1");
}

pub mod ca_client;
pub mod codec;
pub mod parts;

/// The `type` of a registry service on the config stream.
pub const SERVICE_TYPE: &str = "mesh/Service";
/// The `type` of a registry service's endpoints on the config stream.
pub const ENDPOINTS_TYPE: &str = "mesh/Endpoints";

/// The `type` of an Istio resource on the config stream: `networking.istio.io/VirtualService`.
pub fn istio_type(group: &str, kind: &str) -> String {
    format!("{group}/{kind}")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::config::{ConfigUpdate, ProxyMessage, Resource, ResourceKey, proxy_message};

    #[test]
    fn messages_round_trip_on_the_wire() {
        let update = ConfigUpdate {
            version: "7".into(),
            base_version: "6".into(),
            full: false,
            upserts: vec![Resource {
                key: Some(ResourceKey {
                    r#type: super::istio_type("networking.istio.io", "VirtualService"),
                    namespace: "default".into(),
                    name: "reviews".into(),
                }),
                resource_version: "42".into(),
                json: br#"{"spec":{}}"#.to_vec(),
            }],
            removals: vec![],
            more: true,
        };
        let decoded = ConfigUpdate::decode(update.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, update);

        let ack =
            ProxyMessage { message: Some(proxy_message::Message::Ack(super::config::Ack { version: "7".into() })) };
        assert_eq!(ProxyMessage::decode(ack.encode_to_vec().as_slice()).unwrap(), ack);
    }
}

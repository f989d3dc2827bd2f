//! Workload certificates for the mutual-TLS path: a mesh root and one leaf for the
//! service account `default` in `default` (the identity both bench pods have), written in the
//! layout `mesh-proxy --tls-dir` reads. Both sidecars share it: what is measured is the cost of
//! mutual TLS on the data path, not who is who.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::path::{Path, PathBuf};

const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/default";

/// Writes `cert-chain.pem`, `key.pem` and `root-cert.pem` under `work_dir/certs`; returns it.
pub fn write_workload_certs(work_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "mesh-bench root CA");
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let root_key = KeyPair::generate()?;
    let root_cert = root.self_signed(&root_key)?;
    let issuer = Issuer::new(root, root_key);

    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::URI(IDENTITY.try_into()?)];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;

    let dir = work_dir.join("certs");
    std::fs::create_dir_all(&dir)?;
    for (name, pem) in
        [("cert-chain.pem", cert.pem()), ("key.pem", key.serialize_pem()), ("root-cert.pem", root_cert.pem())]
    {
        std::fs::write(dir.join(name), pem).with_context(|| format!("writing {name}"))?;
    }
    Ok(dir)
}

//! Workload certificates for the tests, signed by a real mesh CA (the controller's).

use controller::ca::authority::{Authority, LeafNames};
use mesh_proxy::tls::{Credentials, MeshTls, files};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A mesh root for the trust domain `cluster.local`.
pub struct TestCa(Authority);

/// The SPIFFE ID of service account `account` in `default`.
pub fn spiffe(account: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{account}")
}

impl TestCa {
    pub fn new() -> Self {
        TestCa(Authority::generate("cluster.local").unwrap())
    }

    /// A certificate for service account `account` in `default`, its key and the root, in PEM.
    pub fn issue_pem(&self, account: &str) -> (String, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = LeafNames { uris: vec![spiffe(account)], dns: Vec::new() };
        let issued = self.0.issue(&key, &names, Duration::from_secs(3600)).unwrap();
        (issued.leaf_pem, key.serialize_pem(), self.0.root_pem().to_string())
    }

    pub fn credentials(&self, account: &str) -> Credentials {
        let (chain, key, root) = self.issue_pem(account);
        Credentials::from_pem(&chain, &key, &root).unwrap()
    }

    /// A proxy's slot holding the certificate of `account`.
    pub fn tls(&self, account: &str) -> Arc<MeshTls> {
        Arc::new(MeshTls::with(self.credentials(account)))
    }

    /// Writes the files `--tls-dir` reads, for `account`.
    pub fn write_dir(&self, dir: &Path, account: &str) {
        let (chain, key, root) = self.issue_pem(account);
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in [(files::CERT_CHAIN, chain), (files::KEY, key), (files::ROOT_CERT, root)] {
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(tmp, dir.join(name)).unwrap();
        }
    }
}

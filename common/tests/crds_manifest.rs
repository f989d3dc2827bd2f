//! `manifests/crds.yaml` must be exactly what the types generate, so the CRDs users apply can
//! never drift from the code that reads the resources.
//!
//! After changing an API type, refresh the file with
//! `MESH_UPDATE_CRDS=1 cargo test -p mesh-common --test crds_manifest`
//! (or `cargo run -p mesh-controller -- crds > manifests/crds.yaml`).

use std::path::PathBuf;

#[test]
fn committed_crds_equal_the_generated_ones() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds.yaml");
    let generated = common::crds::to_yaml();
    if std::env::var_os("MESH_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("manifests/crds.yaml is writable");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "manifests/crds.yaml is stale; regenerate it with `MESH_UPDATE_CRDS=1 cargo test -p mesh-common --test crds_manifest`"
    );
}

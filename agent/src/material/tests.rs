use super::*;
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadCert,
    WorkloadOptions,
};

pub(crate) fn ca(cluster: &str) -> CertificateAuthority {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed test".into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root");
    root.issue_intermediate(&IntermediateOptions {
        cluster: cluster.into(),
        days: 10,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("intermediate")
}

pub(crate) fn workload(ca: &CertificateAuthority, sa: &str) -> WorkloadCert {
    let id = SpiffeId::new("cluster.local", "sample", sa).expect("id");
    ca.issue_workload(&WorkloadOptions::new(id))
        .expect("workload")
}

pub(crate) fn write(dir: &Path, chain: &str, key: &str, root: &str) {
    for (name, text) in [(CERT_CHAIN, chain), (KEY, key), (ROOT_CERT, root)] {
        std::fs::write(dir.join(name), text).expect("write");
    }
}

#[test]
fn good_credentials_load_with_their_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload(&ca("cluster1"), "sleep");
    write(dir.path(), &w.chain_pem(), &w.key_pem, &w.root_pem);
    let m = Material::load(dir.path(), 7).expect("load");
    assert_eq!(m.identity, "spiffe://cluster.local/ns/sample/sa/sleep");
    assert_eq!(m.files.cert_chain, w.chain_pem().into_bytes());
    assert_eq!(m.files.key, w.key_pem.into_bytes());
    assert_eq!(m.files.root, w.root_pem.into_bytes());
    assert_eq!(m.generation, 7);
    assert_eq!(m.not_after.unix_timestamp(), w.not_after.unix_timestamp());
}

#[test]
fn a_key_that_is_not_the_leafs_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("cluster1");
    let (w, other) = (workload(&ca, "sleep"), workload(&ca, "sleep"));
    write(dir.path(), &w.chain_pem(), &other.key_pem, &w.root_pem);
    let err = Material::load(dir.path(), 1).expect_err("mismatched key");
    let text = err.to_string();
    assert!(matches!(err, Error::Invalid { .. }), "{text}");
    assert!(
        text.contains("key.pem") && text.contains("does not match"),
        "{text}"
    );
}

#[test]
fn a_chain_from_another_root_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload(&ca("cluster1"), "sleep");
    let stranger = ca("cluster2");
    write(dir.path(), &w.chain_pem(), &w.key_pem, stranger.root_pem());
    let err = Material::load(dir.path(), 1).expect_err("foreign root");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("cert-chain.pem"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload(&ca("cluster1"), "sleep");
    write(dir.path(), &w.chain_pem(), &w.key_pem, &w.root_pem);
    std::fs::remove_file(dir.path().join(KEY)).expect("rm");
    let err = Material::load(dir.path(), 1).expect_err("no key");
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(err.to_string().contains("key.pem"), "{err}");
}

#[test]
fn garbage_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "not pem", "not pem", "not pem");
    let err = Material::load(dir.path(), 1).expect_err("garbage");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

#[test]
fn material_from_bytes_reads_the_leaf_and_pending_has_nothing() {
    let w = workload(&ca("cluster1"), "sleep");
    let files = Files {
        cert_chain: w.chain_pem().into_bytes(),
        key: w.key_pem.into_bytes(),
        root: w.root_pem.into_bytes(),
    };
    let m = Material::new(files.clone(), 2).expect("parses");
    assert_eq!(m.identity, "spiffe://cluster.local/ns/sample/sa/sleep");
    assert_eq!(m.not_after.unix_timestamp(), w.not_after.unix_timestamp());
    assert!(!m.is_pending());
    let garbage = Files {
        cert_chain: b"not pem".to_vec(),
        ..files
    };
    assert!(matches!(Material::new(garbage, 2), Err(Error::Leaf)));
    assert!(Material::pending().is_pending());
}

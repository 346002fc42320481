use super::*;
use crate::material::tests::ca;
use meshfed_certs::{CertificateAuthority, workload_csr};
use std::time::Duration;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "sample", sa).expect("id")
}

fn roots(ca: &CertificateAuthority) -> Vec<CertificateDer<'static>> {
    pem_certs(ca.root_pem().as_bytes()).expect("root")
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Istio's answer (leaf, intermediate, root) is served as Istio's agent serves it:
/// `default` = leaf and intermediate with our key, `ROOTCA` = the root.
#[test]
fn a_good_answer_is_split_into_chain_key_and_root() {
    let ca = ca("cluster1");
    let csr = workload_csr(&id("sleep")).expect("csr");
    let chain = ca
        .sign_csr(&csr.csr_pem, &id("sleep"), Duration::from_secs(3600))
        .expect("signed");
    assert_eq!(chain.len(), 3);
    let ok = check(&chain, &csr, &id("sleep"), &roots(&ca), now()).expect("passes");
    let served = pem_certs(&ok.files.cert_chain).expect("chain");
    assert_eq!(served, parse_chain(&chain[..2]).expect("given"));
    assert_eq!(ok.files.root, ca.root_pem().as_bytes());
    assert_eq!(ok.files.key, csr.key_pem.as_bytes());
    assert!(ok.not_after > now() + time::Duration::minutes(59));
    assert!(ok.not_before < now());
}

#[test]
fn a_leaf_for_another_identity_is_refused() {
    let ca = ca("cluster1");
    let csr = workload_csr(&id("sleep")).expect("csr");
    let chain = ca
        .sign_csr(&csr.csr_pem, &id("admin"), Duration::from_secs(3600))
        .expect("signed");
    let err = check(&chain, &csr, &id("sleep"), &roots(&ca), now()).expect_err("wrong SAN");
    assert!(err.contains("sa/admin"), "{err}");
}

/// A leaf for someone else's key would pair our identity with a key we do not hold.
#[test]
fn a_leaf_for_another_key_is_refused() {
    let ca = ca("cluster1");
    let (ours, theirs) = (
        workload_csr(&id("sleep")).expect("csr"),
        workload_csr(&id("sleep")).expect("csr"),
    );
    let chain = ca
        .sign_csr(&theirs.csr_pem, &id("sleep"), Duration::from_secs(3600))
        .expect("signed");
    let err = check(&chain, &ours, &id("sleep"), &roots(&ca), now()).expect_err("wrong key");
    assert!(err.contains("public key"), "{err}");
}

#[test]
fn a_chain_to_another_root_or_without_one_is_refused() {
    let (ca1, ca2) = (ca("cluster1"), ca("cluster2"));
    let csr = workload_csr(&id("sleep")).expect("csr");
    let chain = ca2
        .sign_csr(&csr.csr_pem, &id("sleep"), Duration::from_secs(3600))
        .expect("signed");
    let err = check(&chain, &csr, &id("sleep"), &roots(&ca1), now()).expect_err("foreign");
    assert!(err.contains("--ca-root"), "{err}");
    // The right root, claimed by a chain that does not lead to it.
    let mut forged = chain[..2].to_vec();
    forged.push(ca1.root_pem().to_string());
    let err = check(&forged, &csr, &id("sleep"), &roots(&ca1), now()).expect_err("forged");
    assert!(err.contains("does not verify"), "{err}");
    let err = check(&chain[..1], &csr, &id("sleep"), &roots(&ca2), now()).expect_err("no root");
    assert!(err.contains("root"), "{err}");
    let err = check(&[], &csr, &id("sleep"), &roots(&ca2), now()).expect_err("empty");
    assert!(err.contains("leaf"), "{err}");
    let err = check(&["junk".into()], &csr, &id("sleep"), &roots(&ca2), now()).expect_err("junk");
    assert!(err.contains("no certificate"), "{err}");
}

#[test]
fn an_expired_leaf_is_refused() {
    let ca = ca("cluster1");
    let csr = workload_csr(&id("sleep")).expect("csr");
    let chain = ca
        .sign_csr(&csr.csr_pem, &id("sleep"), Duration::from_secs(3600))
        .expect("signed");
    let later = now() + time::Duration::hours(2);
    let err = check(&chain, &csr, &id("sleep"), &roots(&ca), later).expect_err("expired");
    assert!(err.contains("does not verify"), "{err}");
}

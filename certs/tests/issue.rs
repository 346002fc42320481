//! What the issued certificates contain, checked by parsing them back.

mod common;

use ::time::OffsetDateTime;
use common::*;
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, WorkloadOptions, write_outputs,
};
use std::time::Duration;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    parse_x509_certificate(der).expect("certificate").1
}

#[test]
fn intermediate_is_pathlen_zero_ca_named_for_its_cluster() {
    let root = root("Example Corp");
    let ca = intermediate(&root, "cluster1");
    let der = &ders(ca.cert_pem())[0];
    let cert = parse(der);
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let subject = cert.subject().to_string();
    assert!(subject.contains("cluster1"), "{subject}");
    assert!(subject.contains("Example Corp"), "{subject}");
    // cacerts: cert-chain.pem is the intermediate then the root.
    assert_eq!(ca.chain().len(), 2);
    assert_eq!(ca.chain()[1], root.cert_pem());
    assert_eq!(ca.root_pem(), root.cert_pem());
}

#[test]
fn workload_has_spiffe_san_both_ekus_and_a_backdated_start() {
    let ca = intermediate(&root("o"), "cluster1");
    let before = OffsetDateTime::now_utc();
    let w = workload(&ca, "sleep", &["sleep.sample.svc.cluster.local"]);
    let der = &ders(&w.chain[0])[0];
    let cert = parse(der);
    assert!(!cert.is_ca());
    // X509-SVID: the extension is present and says CA:FALSE (not merely absent).
    let bc = cert
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(names.contains(&GeneralName::URI(
        "spiffe://cluster.local/ns/sample/sa/sleep"
    )));
    assert!(names.contains(&GeneralName::DNSName("sleep.sample.svc.cluster.local")));
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let not_before = cert.validity().not_before.to_datetime();
    assert!(
        not_before < before - ::time::Duration::minutes(1),
        "not backdated: {not_before}"
    );
    let lifetime = cert.validity().not_after.to_datetime() - before;
    assert!(lifetime > ::time::Duration::hours(23) && lifetime <= ::time::Duration::hours(24));
    // Chain: leaf then intermediate; root travels separately.
    assert_eq!(w.chain.len(), 2);
    assert_eq!(w.chain[1], ca.cert_pem());
    assert_eq!(w.root_pem, ca.root_pem());
}

#[test]
fn workload_expiry_is_clamped_to_its_issuer() {
    let root = root("o");
    let short = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "c".into(),
            days: 1,
            key: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
    let mut opts = WorkloadOptions::new(spiffe("a", "b"));
    opts.ttl = Duration::from_secs(7 * 86_400);
    let w = short.issue_workload(&opts).unwrap();
    assert_eq!(w.not_after, short.not_after());
    let leaf = ders(&w.chain[0]).remove(0);
    assert_eq!(
        parse(&leaf).validity().not_after.to_datetime(),
        short.not_after()
    );
}

#[test]
fn serial_numbers_are_unique() {
    let ca = intermediate(&root("o"), "c");
    let serials: std::collections::HashSet<Vec<u8>> = (0..20)
        .map(|_| {
            let der = ders(&workload(&ca, "x", &[]).chain[0]).remove(0);
            parse(&der).raw_serial().to_vec()
        })
        .collect();
    assert_eq!(serials.len(), 20);
}

#[test]
fn rsa_root_issues_ecdsa_intermediate() {
    let root = CertificateAuthority::new_root(&meshfed_certs::RootOptions {
        org: "o".into(),
        days: 30,
        key: KeyAlgorithm::Rsa2048,
    })
    .unwrap();
    let ca = intermediate(&root, "c");
    let int = ders(ca.cert_pem()).remove(0);
    let root_der = ders(root.cert_pem()).remove(0);
    parse(&int)
        .verify_signature(Some(parse(&root_der).public_key()))
        .expect("RSA signature");
}

#[test]
fn written_material_loads_back_and_checks_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = root("o");
    write_outputs(&dir.path().join("root"), &root.root_files(), false).unwrap();
    let loaded = CertificateAuthority::load_root(&dir.path().join("root")).unwrap();
    let ca = intermediate(&loaded, "c1");
    write_outputs(&dir.path().join("c1"), &ca.cacerts_files(), false).unwrap();
    let ca = CertificateAuthority::load_dir(&dir.path().join("c1")).unwrap();
    assert_eq!(ca.root_pem(), root.cert_pem());

    // Another CA's key beside this certificate is refused with a reason.
    let other = intermediate(&root, "c2");
    std::fs::write(dir.path().join("c1/ca-key.pem"), other.key_pem()).unwrap();
    let err = CertificateAuthority::load_dir(&dir.path().join("c1"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not match"), "{err}");

    std::fs::write(dir.path().join("c1/ca-key.pem"), "hello").unwrap();
    let err = CertificateAuthority::load_dir(&dir.path().join("c1"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ca-key.pem") && err.contains("PEM"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn csr_is_signed_for_the_callers_identity_not_the_requested_one() {
    let ca = intermediate(&root("o"), "c1");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = ca
        .sign_csr(&csr, &spiffe("sample", "sleep"), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    let der = ders(&chain[0]).remove(0);
    let cert = parse(&der);
    let bc = cert
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(
        !bc.value.ca,
        "a signed CSR is a leaf: CA:FALSE, whatever it asked"
    );
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        names,
        &vec![GeneralName::URI(
            "spiffe://cluster.local/ns/sample/sa/sleep"
        )]
    );
    use rcgen::PublicKeyData;
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.der_bytes()
    );

    let tampered = csr.replace('A', "B");
    assert!(
        ca.sign_csr(&tampered, &spiffe("a", "b"), Duration::from_secs(60))
            .is_err()
    );
    // What the CA service compares with the caller's identity before signing.
    assert_eq!(
        CertificateAuthority::csr_names(&csr).unwrap(),
        [
            "DNS:evil.example.com",
            "URI:spiffe://cluster.local/ns/kube-system/sa/admin"
        ]
    );
    assert!(CertificateAuthority::csr_names(&tampered).is_err());
}

//! `verify` must fail, with a reason, on each kind of broken material.

mod common;

use common::*;
use meshfed_certs::{Outcome, Report, verify_path, write_outputs};
use std::path::Path;
use time::OffsetDateTime;

fn fails_with(report: &Report, needle: &str) {
    assert!(report.failed(), "expected a failure:\n{report}");
    let hit = report
        .checks
        .iter()
        .any(|c| c.outcome == Outcome::Fail && c.message.contains(needle));
    assert!(hit, "no failure mentioning {needle:?}:\n{report}");
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = root("mesh");
        let ca = intermediate(&root, "cluster1");
        let w = workload(&ca, "sleep", &[]);
        write_outputs(&dir.path().join("root"), &root.root_files(), false).unwrap();
        write_outputs(&dir.path().join("c1"), &ca.cacerts_files(), false).unwrap();
        write_outputs(&dir.path().join("w"), &w.files(), false).unwrap();
        Pki { dir }
    }
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn good_material_passes_every_check() {
    let pki = Pki::new();
    for rel in ["root", "c1", "w", "w/cert-chain.pem", "c1/cert-chain.pem"] {
        let report = verify_path(&pki.path(rel), now());
        assert!(!report.failed(), "{rel}:\n{report}");
        assert_eq!(report.warnings(), 0, "{rel}:\n{report}");
        assert!(report.checks.len() >= 4, "{rel}: too few checks:\n{report}");
    }
}

#[test]
fn a_key_from_elsewhere_fails() {
    let pki = Pki::new();
    let other = workload(&intermediate(&root("x"), "c"), "a", &[]);
    std::fs::write(pki.path("w/key.pem"), other.key_pem).unwrap();
    fails_with(&verify_path(&pki.path("w"), now()), "does not match");
}

#[test]
fn a_foreign_root_fails_the_chain() {
    let pki = Pki::new();
    std::fs::write(pki.path("w/root-cert.pem"), root("foreign").cert_pem()).unwrap();
    let report = verify_path(&pki.path("w"), now());
    fails_with(&report, "issuer");
}

#[test]
fn a_chain_ending_at_another_root_fails() {
    let pki = Pki::new();
    let mut chain = std::fs::read_to_string(pki.path("c1/cert-chain.pem")).unwrap();
    let first_end = chain.find("-----END CERTIFICATE-----\n").unwrap() + 26;
    chain.truncate(first_end);
    chain.push_str(root("foreign").cert_pem());
    std::fs::write(pki.path("c1/cert-chain.pem"), chain).unwrap();
    fails_with(&verify_path(&pki.path("c1"), now()), "root other than");
}

#[test]
fn expiry_fails_and_near_expiry_warns() {
    let pki = Pki::new();
    let later = now() + time::Duration::days(2);
    fails_with(&verify_path(&pki.path("w"), later), "expired");
    let report = verify_path(&pki.path("c1"), now() + time::Duration::days(710));
    assert!(!report.failed(), "{report}");
    assert!(
        report.warnings() > 0,
        "no warning 20 days before expiry:\n{report}"
    );
    fails_with(
        &verify_path(&pki.path("root"), now() - time::Duration::hours(1)),
        "not valid before",
    );
}

#[test]
fn pathlen_is_enforced() {
    // A CA under a pathlen:0 intermediate: built by hand, since our API refuses to.
    let pki = Pki::new();
    let ca = meshfed_certs::CertificateAuthority::load_dir(&pki.path("c1")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca.cert_pem(),
        rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap(),
    )
    .unwrap();
    let sub_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_before = now() - time::Duration::hours(1);
    params.not_after = now() + time::Duration::days(100);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rogue sub-CA");
    let sub = params.signed_by(&sub_key, &issuer).unwrap();
    let file = pki.path("c1/rogue-chain.pem");
    std::fs::write(&file, format!("{}{}", sub.pem(), ca.cert_pem())).unwrap();
    fails_with(&verify_path(&file, now()), "pathlen:0");
}

#[test]
fn leaf_without_spiffe_id_warns_and_bad_spiffe_id_fails() {
    let pki = Pki::new();
    let ca = meshfed_certs::CertificateAuthority::load_dir(&pki.path("c1")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca.cert_pem(),
        rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap(),
    )
    .unwrap();
    let leaf = |uri: Option<&str>| {
        let mut params = rcgen::CertificateParams::new(vec!["web.example".to_string()]).unwrap();
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        params.not_before = now() - time::Duration::hours(1);
        params.not_after = now() + time::Duration::days(100);
        let key = rcgen::KeyPair::generate().unwrap();
        format!(
            "{}{}",
            params.signed_by(&key, &issuer).unwrap().pem(),
            ca.cert_pem()
        )
    };
    let file = pki.path("c1/leaf.pem");
    std::fs::write(&file, leaf(None)).unwrap();
    let report = verify_path(&file, now());
    assert!(!report.failed(), "{report}");
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.outcome == Outcome::Warn && c.message.contains("SPIFFE")),
        "{report}"
    );
    std::fs::write(&file, leaf(Some("spiffe://cluster.local/ns/a"))).unwrap();
    fails_with(&verify_path(&file, now()), "invalid SPIFFE ID");
}

#[test]
fn unreadable_input_fails_with_one_line_reasons() {
    let pki = Pki::new();
    std::fs::write(pki.path("junk.pem"), "not a certificate").unwrap();
    for (path, needle) in [
        (pki.path("junk.pem"), "not PEM"),
        (pki.path("missing"), "no such file"),
        (pki.path("c1/ca-key.pem"), "expected CERTIFICATE"),
        (
            pki.dir.path().to_path_buf(),
            "not a CA or workload directory",
        ),
    ] {
        let report = verify_path(Path::new(&path), now());
        fails_with(&report, needle);
        assert!(report.checks.iter().all(|c| !c.message.contains('\n')));
    }
}

#![allow(dead_code)]
//! A small PKI for tests: one root, two cluster intermediates, and a foreign root.

use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use x509_parser::pem::Pem;

pub fn root(org: &str) -> CertificateAuthority {
    CertificateAuthority::new_root(&RootOptions {
        org: org.into(),
        days: 3650,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root")
}

pub fn intermediate(root: &CertificateAuthority, cluster: &str) -> CertificateAuthority {
    root.issue_intermediate(&IntermediateOptions {
        cluster: cluster.into(),
        days: 730,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("intermediate")
}

pub fn spiffe(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).expect("spiffe id")
}

pub fn workload(ca: &CertificateAuthority, sa: &str, dns: &[&str]) -> meshfed_certs::WorkloadCert {
    let mut opts = WorkloadOptions::new(spiffe("sample", sa));
    opts.dns = dns.iter().map(|s| s.to_string()).collect();
    ca.issue_workload(&opts).expect("workload")
}

pub fn ders(pem: &str) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(pem.as_bytes())
        .map(|b| b.expect("pem").contents)
        .collect()
}

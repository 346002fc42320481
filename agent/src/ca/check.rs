//! Checks the CA's answer before anything of it is served: the leaf carries our public key
//! and exactly our SPIFFE id, the chain (leaf, intermediates, root: Istio's order) verifies to
//! a root we trust, and nothing in it has expired. What is served is re-encoded from the
//! certificates that were checked, never the answer's text as it came.

use crate::material::Files;
use base64::Engine;
use meshfed_certs::{SpiffeId, WorkloadCsr};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// An answer that passed: the files to serve and the leaf's validity.
#[derive(Debug, Clone)]
pub struct Checked {
    pub files: Files,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Checks `chain` (the response's `cert_chain`) against the request `csr` made for
/// `identity`, trusting `roots`, at `now`. The error says what failed.
pub fn check(
    chain: &[String],
    csr: &WorkloadCsr,
    identity: &SpiffeId,
    roots: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<Checked, String> {
    let certs = parse_chain(chain)?;
    let [leaf_der, middle @ .., root_der] = certs.as_slice() else {
        return Err("the chain must hold the leaf and the root it leads to".into());
    };
    if !roots.contains(root_der) {
        return Err("the chain ends at a root that --ca-root does not hold".into());
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der)
        .map_err(|e| format!("the leaf does not parse: {e}"))?;
    if leaf.public_key().subject_public_key.data.as_ref() != csr.public_key.as_slice() {
        return Err("the leaf's public key is not the one this agent asked for".into());
    }
    let uris = spiffe_uris(&leaf)?;
    let want = identity.to_string();
    if uris != [want.as_str()] {
        return Err(format!("the leaf names {uris:?}, not [{want:?}]"));
    }
    verify_path(leaf_der, middle, roots, now)?;
    let validity = leaf.validity();
    let to_pem = |certs: &[CertificateDer]| certs.iter().map(|c| pem(c)).collect::<String>();
    Ok(Checked {
        files: Files {
            cert_chain: to_pem(&certs[..certs.len() - 1]).into_bytes(),
            key: csr.key_pem.clone().into_bytes(),
            root: pem(root_der).into_bytes(),
        },
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
    })
}

/// Every certificate in the answer, in order; each entry is PEM and may hold several.
fn parse_chain(chain: &[String]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for (i, text) in chain.iter().enumerate() {
        let before = certs.len();
        for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
            certs.push(cert.map_err(|e| format!("cert_chain[{i}]: {e}"))?);
        }
        if certs.len() == before {
            return Err(format!("cert_chain[{i}] holds no certificate"));
        }
    }
    Ok(certs)
}

/// The leaf's URI SANs (its SPIFFE ids and any other URI).
fn spiffe_uris<'a>(leaf: &'a X509Certificate) -> Result<Vec<&'a str>, String> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| format!("the leaf's subjectAltName does not parse: {e}"))?
        .ok_or("the leaf has no subjectAltName")?;
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect())
}

/// webpki's path check, as a peer checking this workload's client certificate makes it:
/// signatures, CA constraints, validity at `now`, and the clientAuth usage mTLS needs.
fn verify_path(
    leaf: &CertificateDer,
    intermediates: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<(), String> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| format!("--ca-root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| format!("--ca-root: {e}"))?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    verifier
        .verify_client_cert(leaf, intermediates, at)
        .map(|_| ())
        .map_err(|e| format!("the chain does not verify to --ca-root: {e}"))
}

/// One certificate as PEM, 64 characters a line.
pub(crate) fn pem(der: &CertificateDer) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The certificates of a PEM file (`--ca-root`).
pub fn pem_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;

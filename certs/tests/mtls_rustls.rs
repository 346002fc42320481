//! rustls as the judge: workload certificates from two clusters' intermediates under one
//! root complete mutual TLS; a certificate from a foreign root is refused.

mod common;

use common::*;
use meshfed_certs::WorkloadCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SERVER_NAME: &str = "helloworld.sample.svc.cluster.local";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(w: &WorkloadCert) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(w.chain_pem().as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain")
}

fn key(w: &WorkloadCert) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(w.key_pem.as_bytes()).expect("key")
}

fn roots(pem: &str) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        store.add(cert.expect("root")).expect("add root");
    }
    Arc::new(store)
}

/// Runs one handshake plus a round trip; returns the client's URI SAN as the server saw it.
async fn mtls(
    server: &WorkloadCert,
    server_trusts: &str,
    client: &WorkloadCert,
    client_trusts: &str,
) -> Result<String, String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(server_trusts), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let server_cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(server), key(server))
        .map_err(|e| e.to_string())?;
    let client_cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(client_trusts))
        .with_client_auth_cert(chain(client), key(client))
        .map_err(|e| e.to_string())?;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = TlsAcceptor::from(Arc::new(server_cfg))
            .accept(a)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no client cert")?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        let (_, cert) = x509_parser::parse_x509_certificate(&peer).map_err(|e| e.to_string())?;
        let san = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .ok_or("no SAN")?;
        Ok::<_, String>(format!("{:?}", san.value.general_names[0]))
    };
    let client_side = async move {
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(Arc::new(client_cfg))
            .connect(name, b)
            .await
            .map_err(|e| format!("client: {e}"))?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        if buf != b"pong" {
            return Err(format!("client got {buf:?}"));
        }
        Ok::<_, String>(())
    };
    let (served, called) = tokio::join!(server_side, client_side);
    called?;
    served
}

#[tokio::test]
async fn workloads_of_two_clusters_under_one_root_complete_mtls() {
    let root = root("mesh");
    let (c1, c2) = (
        intermediate(&root, "cluster1"),
        intermediate(&root, "cluster2"),
    );
    let server = workload(&c2, "helloworld", &[SERVER_NAME]);
    let client = workload(&c1, "sleep", &[]);
    let seen = mtls(&server, root.cert_pem(), &client, root.cert_pem())
        .await
        .expect("mTLS across intermediates");
    assert!(
        seen.contains("spiffe://cluster.local/ns/sample/sa/sleep"),
        "{seen}"
    );
}

#[tokio::test]
async fn client_from_a_foreign_root_is_refused() {
    let (mesh, foreign) = (root("mesh"), root("foreign"));
    let server = workload(
        &intermediate(&mesh, "cluster1"),
        "helloworld",
        &[SERVER_NAME],
    );
    let intruder = workload(&intermediate(&foreign, "cluster2"), "sleep", &[]);
    let err = mtls(&server, mesh.cert_pem(), &intruder, mesh.cert_pem())
        .await
        .expect_err("foreign client accepted");
    assert!(err.contains("server") || err.contains("client"), "{err}");
}

#[tokio::test]
async fn server_from_a_foreign_root_is_refused() {
    let (mesh, foreign) = (root("mesh"), root("foreign"));
    let impostor = workload(
        &intermediate(&foreign, "cluster2"),
        "helloworld",
        &[SERVER_NAME],
    );
    let client = workload(&intermediate(&mesh, "cluster1"), "sleep", &[]);
    let err = mtls(&impostor, mesh.cert_pem(), &client, mesh.cert_pem())
        .await
        .expect_err("foreign server accepted");
    assert!(err.contains("client"), "{err}");
}

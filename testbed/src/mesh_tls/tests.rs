use super::*;
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SNI: &str = "outbound_.5000_._.helloworld.sample.svc.cluster.local";

fn ca(root: &CertificateAuthority, cluster: &str) -> CertificateAuthority {
    root.issue_intermediate(&IntermediateOptions {
        cluster: cluster.into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .unwrap()
}

fn workload(ca: &CertificateAuthority, sa: &str, ttl: Duration) -> Credentials {
    let mut opts = WorkloadOptions::new(SpiffeId::new("cluster.local", "sample", sa).unwrap());
    opts.ttl = ttl;
    Credentials::new(Material::from_workload(&ca.issue_workload(&opts).unwrap()).unwrap())
}

fn root() -> CertificateAuthority {
    CertificateAuthority::new_root(&RootOptions {
        org: "mesh".into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .unwrap()
}

/// One handshake and round trip; the server's view of the client on success.
async fn handshake(
    server: &Credentials,
    client: &Credentials,
    allowed: &[&str],
) -> anyhow::Result<Peer> {
    use anyhow::Context;
    let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server.server_config()?);
    let server_side = async move {
        let mut tls = acceptor.accept(a).await.context("server")?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned());
        tls.write_all(b"ok").await?;
        tls.shutdown().await?;
        Ok::<_, anyhow::Error>(peer(&leaf.context("no client certificate")?)?)
    };
    let connector = TlsConnector::from(client.client_config(&allowed)?);
    let name = ServerName::try_from(SNI.to_string())?;
    let client_side = async move {
        let mut tls = connector.connect(name, b).await.context("client")?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok::<_, anyhow::Error>(buf)
    };
    let (server_result, client_result) = tokio::join!(server_side, client_side);
    assert_eq!(client_result?, b"ok");
    server_result
}

#[tokio::test]
async fn peers_under_one_root_see_each_others_spiffe_id_and_issuer() {
    let root = root();
    let (c1, c2) = (ca(&root, "cluster1"), ca(&root, "cluster2"));
    let day = Duration::from_secs(86_400);
    let server = workload(&c2, "helloworld", day);
    let client = workload(&c1, "sleep", day);
    let seen = handshake(
        &server,
        &client,
        &["spiffe://cluster.local/ns/sample/sa/helloworld"],
    )
    .await
    .unwrap();
    assert_eq!(seen.spiffe, "spiffe://cluster.local/ns/sample/sa/sleep");
    assert!(
        seen.issuer.contains("Intermediate CA cluster1"),
        "{}",
        seen.issuer
    );
    // No SAN list from CDS: any identity under the root.
    assert!(handshake(&server, &client, &[]).await.is_ok());
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let root = root();
    let c1 = ca(&root, "cluster1");
    let day = Duration::from_secs(86_400);
    let server = workload(&c1, "impostor", day);
    let client = workload(&c1, "sleep", day);
    let err = handshake(
        &server,
        &client,
        &["spiffe://cluster.local/ns/sample/sa/helloworld"],
    )
    .await
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("client"), "{err}");
}

#[tokio::test]
async fn foreign_roots_and_expired_certificates_are_refused() {
    let day = Duration::from_secs(86_400);
    let server = workload(&ca(&root(), "cluster2"), "helloworld", day);
    let client = workload(&ca(&root(), "cluster1"), "sleep", day);
    assert!(
        handshake(&server, &client, &[]).await.is_err(),
        "different roots"
    );

    let root = root();
    let c1 = ca(&root, "cluster1");
    let good = workload(&c1, "sleep", day);
    let expired = workload(&c1, "helloworld", Duration::ZERO);
    // The leaf's notAfter is its issue time, so it is expired from the next second on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        handshake(&expired, &good, &[]).await.is_err(),
        "expired server"
    );
    assert!(
        handshake(&good, &expired, &[]).await.is_err(),
        "expired client"
    );
    // Swapping in fresh credentials heals it for new connections.
    let fresh = workload(&c1, "helloworld", day);
    expired.replace(
        Material::from_workload(
            &c1.issue_workload(&WorkloadOptions::new(
                SpiffeId::new("cluster.local", "sample", "helloworld").unwrap(),
            ))
            .unwrap(),
        )
        .unwrap(),
    );
    assert!(handshake(&expired, &good, &[]).await.is_ok());
    assert!(handshake(&fresh, &good, &[]).await.is_ok());
}

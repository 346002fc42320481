//! The agent as Envoy meets it: SDS over the Unix socket, with files rotated under it.

mod sds_client;

use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryResponse};
use meshfed_agent::{Agent, AgentConfig};
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadCert,
    WorkloadOptions,
};
use sds_client::{SdsStream, connect, only_secret, request};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn config(cert_dir: &Path, socket: &Path, poll: Duration) -> AgentConfig {
    let mut c = AgentConfig::new(cert_dir, socket);
    c.poll = poll;
    c
}

const WAIT: Duration = Duration::from_secs(10);

fn root() -> CertificateAuthority {
    let key = KeyAlgorithm::EcdsaP256;
    let org = "meshfed test".into();
    CertificateAuthority::new_root(&RootOptions { org, days: 30, key }).expect("root")
}

fn intermediate(root: &CertificateAuthority, cluster: &str) -> CertificateAuthority {
    let (key, cluster) = (KeyAlgorithm::EcdsaP256, cluster.into());
    root.issue_intermediate(&IntermediateOptions {
        cluster,
        days: 10,
        key,
    })
    .expect("intermediate")
}

fn ca() -> CertificateAuthority {
    intermediate(&root(), "cluster1")
}

fn workload_for(ca: &CertificateAuthority, account: &str) -> WorkloadCert {
    let id = SpiffeId::new("cluster.local", "sample", account).expect("id");
    ca.issue_workload(&WorkloadOptions::new(id))
        .expect("workload")
}

fn workload(ca: &CertificateAuthority) -> WorkloadCert {
    workload_for(ca, "sleep")
}

/// Each file replaced by a rename, as a writer that cares about readers does.
fn write(dir: &Path, chain: &str, key: &str, root: &str) {
    for (name, text) in [
        ("cert-chain.pem", chain),
        ("key.pem", key),
        ("root-cert.pem", root),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

fn chain_of(resp: &DiscoveryResponse) -> String {
    let secret::Type::TlsCertificate(tls) = only_secret(resp) else {
        panic!("not a TLS certificate");
    };
    match tls.certificate_chain.and_then(|d| d.specifier) {
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8(b).expect("PEM"),
        other => panic!("chain not inline: {other:?}"),
    }
}

#[tokio::test]
async fn envoy_gets_default_and_rootca_and_every_good_rotation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (certs, socket) = (tmp.path().join("certs"), tmp.path().join("uds/socket"));
    std::fs::create_dir(&certs).expect("mkdir");
    let ca = ca();
    let w1 = workload(&ca);
    write(&certs, &w1.chain_pem(), &w1.key_pem, &w1.root_pem);

    let agent = Agent::bind(config(&certs, &socket, Duration::from_millis(20))).expect("bind");
    assert_eq!(
        agent.material().identity,
        "spiffe://cluster.local/ns/sample/sa/sleep"
    );
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the proxy's user may read the key"
    );
    let mut status = agent.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let mut client = connect(socket.clone()).await;
    let mut default = SdsStream::open(&mut client, &["default"]).await;
    let first = default.next(WAIT).await.expect("a response in time");
    assert_eq!(first.version_info, "1");
    assert_eq!(chain_of(&first), w1.chain_pem());
    let mut root = SdsStream::open(&mut client, &["ROOTCA"]).await;
    let secret::Type::ValidationContext(v) =
        only_secret(&root.next(WAIT).await.expect("a response in time"))
    else {
        panic!("ROOTCA is not a validation context");
    };
    let Some(data_source::Specifier::InlineBytes(root_pem)) =
        v.trusted_ca.and_then(|d| d.specifier)
    else {
        panic!("root not inline");
    };
    assert_eq!(root_pem, w1.root_pem.as_bytes());

    let fetched = client
        .fetch_secrets(request(&["default", "ROOTCA"], "", ""))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(fetched.resources.len(), 2);
    let delta = client
        .delta_secrets(tokio_stream::iter(vec![DeltaDiscoveryRequest::default()]))
        .await;
    assert_eq!(delta.expect_err("delta").code(), tonic::Code::Unimplemented);

    // Rotation: pushed without Envoy asking.
    let w2 = workload(&ca);
    write(&certs, &w2.chain_pem(), &w2.key_pem, &w2.root_pem);
    let second = default.next(WAIT).await.expect("a response in time");
    assert_eq!(second.version_info, "2");
    assert_eq!(chain_of(&second), w2.chain_pem());

    // A broken rotation (the key is not the leaf's) is refused and nothing is pushed: the next
    // response Envoy sees is the good rotation after it.
    let (w3, w4) = (workload(&ca), workload(&ca));
    write(&certs, &w3.chain_pem(), &w2.key_pem, &w3.root_pem);
    let refused = tokio::time::timeout(WAIT, status.wait_for(|s| s.failures == 1))
        .await
        .expect("refused in time")
        .expect("watcher alive")
        .clone();
    let error = refused.last_error.unwrap_or_default();
    assert!(error.contains("key.pem"), "{error}");
    write(&certs, &w4.chain_pem(), &w4.key_pem, &w4.root_pem);
    let third = default.next(WAIT).await.expect("a response in time");
    assert_eq!(third.version_info, "3");
    assert_eq!(chain_of(&third), w4.chain_pem());

    stop.send(()).expect("stop");
    drop((default, root, client));
    running.await.expect("join").expect("served");
    assert!(!socket.exists(), "the socket is removed on the way out");
}

#[test]
fn bad_credentials_stop_the_agent_before_it_binds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (w, other) = (workload(&ca), workload(&ca));
    write(tmp.path(), &w.chain_pem(), &other.key_pem, &w.root_pem);
    let socket = tmp.path().join("socket");
    let err = Agent::bind(config(tmp.path(), &socket, Duration::from_secs(1)))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!socket.exists());
}

#[test]
fn a_file_in_the_sockets_place_is_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = workload(&ca());
    write(tmp.path(), &w.chain_pem(), &w.key_pem, &w.root_pem);
    let socket = tmp.path().join("key.pem");
    let err = Agent::bind(config(tmp.path(), &socket, Duration::from_secs(1)))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&socket).expect("kept"), w.key_pem);
}

/// A running agent for `cert` under `dir`, and the credentials the test bed's sidecar takes
/// from its SDS answer.
async fn served(
    dir: &Path,
    name: &str,
    cert: &WorkloadCert,
) -> meshfed_testbed::mesh_tls::Credentials {
    let certs = dir.join(name);
    std::fs::create_dir(&certs).expect("mkdir");
    write(&certs, &cert.chain_pem(), &cert.key_pem, &cert.root_pem);
    let socket = dir.join(format!("{name}.sock"));
    let agent = Agent::bind(config(&certs, &socket, Duration::from_secs(5))).expect("bind");
    tokio::spawn(agent.run(std::future::pending()));
    meshfed_testbed::sidecar::sds::SdsCredentials::follow(socket)
        .await
        .expect("usable credentials over SDS")
        .credentials
}

#[tokio::test]
async fn what_sds_serves_makes_an_mtls_connection_between_two_clusters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = root();
    let (c1, c2) = (
        intermediate(&root, "cluster1"),
        intermediate(&root, "cluster2"),
    );
    let sleep = served(tmp.path(), "sleep", &workload_for(&c1, "sleep")).await;
    let hello = served(tmp.path(), "helloworld", &workload_for(&c2, "helloworld")).await;

    let hello_id = "spiffe://cluster.local/ns/sample/sa/helloworld".to_string();
    let connector = tokio_rustls::TlsConnector::from(
        sleep
            .client_config(std::slice::from_ref(&hello_id))
            .expect("client"),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(hello.server_config().expect("server"));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from("helloworld.sample.svc.cluster.local")
        .expect("name");
    let (client, server) = tokio::join!(connector.connect(name, a), acceptor.accept(b));
    let (client, server) = (
        client.expect("client handshake"),
        server.expect("server handshake"),
    );

    let leaf = |certs: Option<&[rustls::pki_types::CertificateDer<'static>]>| {
        meshfed_testbed::mesh_tls::peer(&certs.expect("peer certificates")[0]).expect("peer")
    };
    let seen_by_hello = leaf(server.get_ref().1.peer_certificates());
    assert_eq!(
        seen_by_hello.spiffe,
        "spiffe://cluster.local/ns/sample/sa/sleep"
    );
    assert!(
        seen_by_hello.issuer.contains("Intermediate CA cluster1"),
        "{seen_by_hello:?}"
    );
    let seen_by_sleep = leaf(client.get_ref().1.peer_certificates());
    assert_eq!(seen_by_sleep.spiffe, hello_id);
}

//! The gateway reaching its control plane as Istio's gateways reach istiod's secure port
//! (15012): TLS checked against the mesh root (`--xds-ca-root`) and the name in the
//! federation's certificate (`--xds-server-name istiod.istio-system.svc`), with the gateway's
//! projected ServiceAccount token as `authorization: Bearer` (`--xds-token-file`). The flags
//! are taken as the CLI takes them ([`XdsFlags`]); a token over plaintext is refused.

mod common;

use common::{lb, run_router, sni_cluster, sni_routed};
use meshfed_certs::CertificateAuthority;
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::xds::{XdsFlags, XdsServer};
use meshfed_proto::testing::{DeltaStream, StubAds, TlsIncoming, mesh_ca, serving_config};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

const ISTIOD: &str = "istiod.istio-system.svc";

/// Serves, over TLS on 127.0.0.1 with the federation's serving certificate
/// (`istiod.istio-system.svc`, from `ca`), a stub that reports each delta stream's
/// `authorization` header and sends one SNI cluster with one mesh endpoint; like istiod's
/// secure port it answers nothing to a stream without a token. Streams arrive on the
/// receiver.
async fn tls_stub(
    ca: &CertificateAuthority,
    endpoint: SocketAddr,
) -> (SocketAddr, mpsc::UnboundedReceiver<DeltaStream>) {
    let config = serving_config(ca, &[ISTIOD]).expect("server config");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let incoming = TlsIncoming::bind(any, config).await.expect("bind");
    let addr = incoming.local_addr().expect("addr");
    let (stub, streams) = StubAds::new(sni_cluster(vec![lb(endpoint, true)]));
    stub.token_required().spawn(incoming);
    (addr, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_gets_routes_over_tls_with_its_serviceaccount_token() {
    let ca = mesh_ca("cluster2").expect("mesh CA");
    let workload: SocketAddr = "10.1.0.5:5000".parse().expect("addr");
    let (server, mut streams) = tls_stub(&ca, workload).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, ca.root_pem()).expect("write root");
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "gateway-token\n").expect("write token");

    // As `--xds 127.0.0.1:P --xds-ca-root R --xds-server-name istiod... --xds-token-file T`.
    let xds = XdsFlags {
        address: server.to_string(),
        ca_root: Some(root),
        server_name: Some(ISTIOD.into()),
        token_file: Some(token),
    }
    .resolve()
    .expect("flags");
    let routes = RouteHandle::default();
    let client = run_router(xds, "network2", &routes);

    let stream = tokio::time::timeout(Duration::from_secs(30), streams.recv())
        .await
        .expect("a stream within 30 s");
    let seen = stream.as_ref().map(|s| s.authorization.clone());
    assert_eq!(seen, Some(Some("Bearer gateway-token".into())));
    let arrived = sni_routed(&routes);
    assert!(
        arrived.await.is_ok(),
        "no table: {}",
        routes.get().debug_json()
    );
    let table = routes.get().debug_json().to_string();
    assert!(table.contains(&workload.to_string()), "{table}");
    client.abort();
}

/// What the gateway's `--xds host:15010 --xds-token-file T` comes to: refused before any
/// connection, so the token never leaves in plaintext.
#[test]
fn a_token_over_plaintext_is_refused() {
    let err = XdsFlags {
        address: "meshfed-federation.istio-system.svc:15010".into(),
        token_file: Some("/var/run/secrets/tokens/istio-token".into()),
        ..Default::default()
    }
    .resolve()
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("--xds-token-file: a token is only ever sent over TLS"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

/// Existing callers hand the gateway a URL string: that is plaintext, as before.
#[test]
fn a_url_string_is_a_plaintext_server() {
    let server: XdsServer = "http://127.0.0.1:15010".to_string().into();
    assert!(server.tls.is_none() && server.token_file.is_none());
}

//! The gateway against an ADS server that misbehaves: it sends, beside a mesh workload, an
//! endpoint not marked `tlsMode: istio` (the API server behind a selector-less Service). The
//! gateway must route only to the mesh workload, so no control plane can make it a relay.

mod common;

use common::{SNI, lb, run_router, sni_cluster, sni_routed};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::{Gateway, GatewayConfig, clienthello};
use meshfed_model::admin::AdminClient;
use meshfed_proto::testing::StubAds;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Serves in plaintext a stub that sends one SNI cluster and its load assignment (`mesh`
/// marked, `other` not) on every delta stream, whatever the client asks; ignores ACKs.
async fn ads_stub(mesh: SocketAddr, other: SocketAddr) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stub, _streams) = StubAds::new(sni_cluster(vec![lb(mesh, true), lb(other, false)]));
    stub.spawn(incoming);
    url
}

/// The first five bytes (a TLS record header) of every connection `listener` accepts.
fn counting(listener: TcpListener) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut first = vec![0; 5];
                let _ = s.read_exact(&mut first).await;
                let _ = tx.send(first);
            });
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sending_an_unmarked_endpoint_does_not_make_the_gateway_route_to_it() {
    let (mesh, other) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let other_addr = other.local_addr().unwrap();
    let url = ads_stub(mesh.local_addr().unwrap(), other_addr).await;
    let (mut to_mesh, mut to_other) = (counting(mesh), counting(other));

    let routes = RouteHandle::default();
    run_router(url, "network1", &routes);
    let any = "127.0.0.1:0".parse().unwrap();
    let gw = Gateway::bind(GatewayConfig::new(any, any, any), routes.clone())
        .await
        .unwrap();
    let (addr, admin) = (gw.local_addr().unwrap(), gw.admin_addr().unwrap());
    tokio::spawn(gw.run(std::future::pending()));
    let arrived = sni_routed(&routes);
    assert!(
        arrived.await.is_ok(),
        "no table: {}",
        routes.get().debug_json()
    );

    // Round robin over two endpoints would send every other connection to the unmarked one.
    let hello =
        clienthello::build::records(&clienthello::build::client_hello(Some(SNI), &[]), 16_384);
    for _ in 0..6 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&hello).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), to_mesh.recv())
            .await
            .expect("a connection went elsewhere than the mesh workload");
        assert_eq!(got.unwrap(), hello[..5], "the mesh workload got the hello");
    }
    assert!(
        to_other.try_recv().is_err(),
        "the unmarked endpoint was dialled"
    );
    let table = routes.get().debug_json().to_string();
    assert!(!table.contains(&other_addr.to_string()), "{table}");

    let page = AdminClient::new(admin).metrics().await.unwrap();
    let dropped = page
        .lines()
        .find_map(|l| l.strip_prefix("meshfed_gateway_xds_endpoints_not_mesh_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(dropped.is_some_and(|n| n >= 1.0), "{page}");
}

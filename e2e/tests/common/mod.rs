#![allow(dead_code)]
//! Shared helpers: an in-process test bed API server and clients for it.

use meshfed_testbed::{ApiServer, ApiServerConfig};
use std::time::Duration;

pub async fn server() -> ApiServer {
    let mut cfg = ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), "cluster1");
    cfg.bookmark_interval = Duration::from_millis(200);
    ApiServer::start(cfg).await.expect("start API server")
}

pub async fn client(server: &ApiServer) -> kube::Client {
    client_with_token(server, server.admin_token()).await
}

pub async fn client_with_token(server: &ApiServer, token: &str) -> kube::Client {
    let yaml = meshfed_testbed::kubeconfig::render(
        "cluster1",
        &server.url(),
        server.ca_pem(),
        "user",
        token,
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Waits for the next item of a stream, failing the test instead of hanging.
pub async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(s))
        .await
        .expect("timed out waiting for an event")
        .expect("stream ended")
}

//! gRPC's two proxyless xDS clients as judges of one target, and what their `count`
//! replies say: grpcio (`grpc_client.py`) and @grpc/grpc-js-xds (`xds_client.js`), each
//! resolving `xds:///TARGET` through a bootstrap file.

use crate::judges::{self, ChannelCreds, Judge};
use serde_json::Value;
use std::path::Path;

/// Which proxyless client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// grpcio, gRPC C-core's xDS client.
    Grpcio,
    /// @grpc/grpc-js-xds.
    GrpcJs,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Grpcio => "grpcio",
            Client::GrpcJs => "grpc-js-xds",
        }
    }
}

/// Starts `client` on `xds:///target` with the bootstrap at `bootstrap`; its first line
/// (`{"ready": ..}`) is left for the caller to read.
pub fn spawn(client: Client, target: &str, bootstrap: &Path) -> Result<Judge, String> {
    let mut cmd = match client {
        Client::Grpcio => {
            let mut c = tokio::process::Command::new(judges::python()?);
            c.arg(judges::script("grpc_client.py"));
            c
        }
        Client::GrpcJs => {
            let mut c = judges::node()?;
            c.arg("xds_client.js");
            c
        }
    };
    cmd.arg(format!("xds:///{target}"))
        .env("GRPC_XDS_BOOTSTRAP", bootstrap);
    Judge::spawn(cmd, &format!("{} client", client.name()))
}

/// Istio's proxyless gRPC bootstrap (pkg/istio-agent/grpcxds) for the sleep pod at `ip` in
/// namespace `ns` of cluster1, reaching the xDS server `xds` with `creds`: node id
/// `sidecar~IP~sleep-1.NS~NS.svc.cluster.local`, locality region1/zone1, and the metadata
/// GENERATOR=grpc, CLUSTER_ID, NETWORK and NAMESPACE.
pub fn sleep_bootstrap(xds: &str, creds: &ChannelCreds, ip: &str, ns: &str) -> Value {
    judges::bootstrap(
        xds,
        creds,
        &format!("sidecar~{ip}~sleep-1.{ns}~{ns}.svc.cluster.local"),
        "region1",
        "zone1",
        &[
            ("GENERATOR", "grpc"),
            ("CLUSTER_ID", "cluster1"),
            ("NETWORK", "network1"),
            ("NAMESPACE", ns),
        ],
    )
}

/// How many calls of a `count`/`until` reply had `outcome` (a backend's name or
/// `error:CODE`).
pub fn calls(reply: &Value, outcome: &str) -> u64 {
    reply["counts"][outcome].as_u64().unwrap_or(0)
}

/// All calls of a `count` reply.
pub fn total(reply: &Value) -> u64 {
    reply["counts"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// A latency figure (`min`, `p50`, `max`) of a `count` reply in milliseconds, over all
/// calls or, with `outcome`, over that outcome's calls.
pub fn ms(reply: &Value, outcome: Option<&str>, figure: &str) -> Option<f64> {
    match outcome {
        None => reply["ms"][figure].as_f64(),
        Some(o) => reply["ms_by"][o][figure].as_f64(),
    }
}

//! A TLS ADS server for the client's tests, as the federation's secure port is: the shared
//! stub ADS server (`meshfed_proto::testing`) over rustls (ring, ALPN `h2`) with a serving
//! certificate from a `meshfed_certs` intermediate. It reports every handshake and every
//! delta stream (with the `authorization` header it carried), sends each stream one
//! response, and ends a stream when the test calls [`DeltaStream::end`].

use meshfed_certs::CertificateAuthority;
use meshfed_proto::testing::stub_ads::response;
use meshfed_proto::testing::{DeltaStream, Handshake, StubAds, TlsIncoming, serving_config};
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// The type URL of the one resource the server sends.
pub const TYPE_URL: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// A root and the intermediate that issues the serving certificate, as a cluster's
/// `cacerts` has them.
pub fn mesh_ca() -> CertificateAuthority {
    meshfed_proto::testing::mesh_ca("cluster1").expect("mesh CA")
}

pub struct Server {
    pub addr: SocketAddr,
    pub handshakes: mpsc::UnboundedReceiver<Handshake>,
    pub streams: mpsc::UnboundedReceiver<DeltaStream>,
}

impl Server {
    /// Serves on 127.0.0.1 with a certificate from `ca` for `names`.
    pub async fn start(ca: &CertificateAuthority, names: &[&str]) -> Server {
        let config = serving_config(ca, names).expect("server config");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let incoming = TlsIncoming::bind(any, config).await.expect("bind");
        let addr = incoming.local_addr().expect("addr");
        let (incoming, handshakes) = incoming.reporting();
        let name = "helloworld.sample.svc.cluster.local";
        let (stub, streams) = StubAds::new(vec![response(TYPE_URL, name, vec![], "n1")]);
        stub.spawn(incoming);
        Server {
            addr,
            handshakes,
            streams,
        }
    }
}

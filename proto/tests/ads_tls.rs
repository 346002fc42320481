//! The delta ADS client against a TLS server, as Istio's gateways and agents reach istiod's
//! secure port (15012): the server's certificate checked against the mesh root and the name
//! asked for (`istiod.<ns>.svc`, or an IP as an IP SAN), ALPN `h2`, and the projected
//! ServiceAccount token as `authorization: Bearer` metadata, read again at every reconnect
//! because kubelet rotates it. Failures (a wrong name, an untrusted root, a token that cannot
//! be read) are retried with backoff, never fatal.

mod tls_ads;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use meshfed_proto::ads::{self, Applied, DeltaState, Identity, Subscription};
use meshfed_proto::channel::{XdsFlags, XdsServer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tls_ads::{Server, TYPE_URL, mesh_ca};
use tokio::sync::mpsc;

const ISTIOD: &str = "istiod.istio-system.svc";

/// Subscribes to every resource of the test type and reports each response's type.
struct Recorder(mpsc::UnboundedSender<String>);

impl DeltaState for Recorder {
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription {
            type_url: TYPE_URL.into(),
            names: vec!["*".into()],
            versions: Default::default(),
        }]
    }

    fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Applied {
        let _ = self.0.send(response.type_url.clone());
        Applied::default()
    }
}

/// Runs the client on `xds`; responses arrive on the receiver.
fn client(xds: XdsServer) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let identity = Identity {
            kind: "router".into(),
            ..Default::default()
        };
        ads::run(xds, identity, &mut Recorder(tx)).await
    });
    (task, rx)
}

async fn within<T>(what: &str, f: impl Future<Output = Option<T>>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 30 s"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

fn flags(server: &Server, root: &Path, name: Option<&str>, token: Option<PathBuf>) -> XdsServer {
    XdsFlags {
        address: server.addr.to_string(),
        ca_root: Some(root.to_path_buf()),
        server_name: name.map(str::to_string),
        token_file: token,
    }
    .resolve()
    .expect("flags")
}

/// Log lines the client writes, for the tests that check what it says about a failure (the
/// subscriber is this thread's, so those tests run on a current-thread runtime).
fn capture_logs() -> (
    tracing::subscriber::DefaultGuard,
    mpsc::UnboundedReceiver<String>,
) {
    #[derive(Clone)]
    struct Lines(mpsc::UnboundedSender<String>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Lines(tx.clone()))
        .finish();
    (tracing::subscriber::set_default(subscriber), rx)
}

/// Waits for a warning that the stream ended with an error containing `text`.
async fn warned(logs: &mut mpsc::UnboundedReceiver<String>, text: &str) -> String {
    within("warning", async {
        while let Some(line) = logs.recv().await {
            if line.contains("xDS stream ended") && line.contains(text) {
                return Some(line);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_over_tls_and_a_rotated_token_is_sent_on_the_next_connect() {
    let ca = mesh_ca();
    let mut server = Server::start(&ca, &[ISTIOD]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "root-cert.pem", ca.root_pem());
    let token = write(dir.path(), "istio-token", "token-1\n");
    let (task, mut responses) = client(flags(&server, &root, Some(ISTIOD), Some(token.clone())));

    let alpn = within("handshake", server.handshakes.recv()).await;
    assert_eq!(alpn, Ok(Some(b"h2".to_vec())), "gRPC over TLS agrees on h2");
    let first = within("stream", server.streams.recv()).await;
    assert_eq!(first.authorization.as_deref(), Some("Bearer token-1"));
    assert_eq!(within("response", responses.recv()).await, TYPE_URL);

    // kubelet rotates the projected token; the server then ends the stream.
    write(dir.path(), "istio-token", "token-2");
    first.end();
    let second = within("second stream", server.streams.recv()).await;
    assert_eq!(second.authorization.as_deref(), Some("Bearer token-2"));
    assert_eq!(within("response", responses.recv()).await, TYPE_URL);
    assert!(!task.is_finished());
    task.abort();
}

/// Without a token file no `authorization` header is sent, TLS or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_no_authorization_is_sent() {
    let ca = mesh_ca();
    let mut server = Server::start(&ca, &[ISTIOD]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "root-cert.pem", ca.root_pem());
    let (task, mut responses) = client(flags(&server, &root, Some(ISTIOD), None));
    let stream = within("stream", server.streams.recv()).await;
    assert_eq!(stream.authorization, None);
    assert_eq!(within("response", responses.recv()).await, TYPE_URL);
    task.abort();
}

/// The federation's certificate names `istiod.<ns>.svc`: asking for another name fails the
/// handshake, and the client tries again (with backoff) rather than giving up.
#[tokio::test]
async fn a_wrong_server_name_fails_the_handshake_and_is_retried() {
    let (_guard, mut logs) = capture_logs();
    let ca = mesh_ca();
    let mut server = Server::start(&ca, &[ISTIOD]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "root-cert.pem", ca.root_pem());
    let token = write(dir.path(), "istio-token", "token-1");
    let name = Some("istiod.other-namespace.svc");
    let (task, mut responses) = client(flags(&server, &root, name, Some(token)));

    for attempt in 0..2 {
        let shake = within("handshake", server.handshakes.recv()).await;
        assert!(shake.is_err(), "attempt {attempt}: {shake:?}");
        let line = warned(&mut logs, "certificate").await;
        assert!(line.contains("not valid for name"), "{line}");
    }
    assert!(
        server.streams.try_recv().is_err(),
        "no stream, so no token sent"
    );
    assert!(responses.try_recv().is_err());
    assert!(!task.is_finished(), "a failed handshake is not fatal");
    task.abort();
}

/// A server whose certificate does not chain to `--xds-ca-root` is not trusted, even when
/// the other root has the same subject names (an impostor CA made with the same tooling).
#[tokio::test]
async fn an_untrusted_root_fails_the_handshake_and_is_retried() {
    let (_guard, mut logs) = capture_logs();
    let ca = mesh_ca();
    let mut server = Server::start(&ca, &[ISTIOD]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let other = write(dir.path(), "other-root.pem", mesh_ca().root_pem());
    let token = write(dir.path(), "istio-token", "token-1");
    let (task, mut responses) = client(flags(&server, &other, Some(ISTIOD), Some(token)));

    for attempt in 0..2 {
        let shake = within("handshake", server.handshakes.recv()).await;
        assert!(shake.is_err(), "attempt {attempt}: {shake:?}");
        let line = warned(&mut logs, "certificate").await;
        assert!(line.contains("invalid peer certificate"), "{line}");
    }
    assert!(server.streams.try_recv().is_err());
    assert!(responses.try_recv().is_err());
    assert!(!task.is_finished(), "a failed handshake is not fatal");
    task.abort();
}

/// A token file that cannot be read (not yet mounted, say) is logged and retried; no
/// connection is made without it, and once it is there the client connects with it.
#[tokio::test]
async fn an_unreadable_token_is_logged_and_retried() {
    let (_guard, mut logs) = capture_logs();
    let ca = mesh_ca();
    let mut server = Server::start(&ca, &[ISTIOD]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "root-cert.pem", ca.root_pem());
    let token = dir.path().join("istio-token");
    let (task, mut responses) = client(flags(&server, &root, Some(ISTIOD), Some(token.clone())));

    let shown = token.display().to_string();
    for _ in 0..2 {
        let line = warned(&mut logs, &shown).await;
        assert!(line.contains("--xds-token-file"), "{line}");
    }
    assert!(
        server.handshakes.try_recv().is_err(),
        "no handshake without a token"
    );
    write(dir.path(), "istio-token", "token-late");
    let stream = within("stream", server.streams.recv()).await;
    assert_eq!(stream.authorization.as_deref(), Some("Bearer token-late"));
    assert_eq!(within("response", responses.recv()).await, TYPE_URL);
    assert!(!task.is_finished());
    task.abort();
}

/// With no `--xds-server-name` the host of the address is checked, an IP as an IP SAN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_is_checked_as_an_ip_san() {
    let ca = mesh_ca();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "root-cert.pem", ca.root_pem());

    let mut without = Server::start(&ca, &[ISTIOD]).await;
    let (task, _) = client(flags(&without, &root, None, None));
    let shake = within("handshake", without.handshakes.recv()).await;
    assert!(shake.is_err(), "no IP SAN 127.0.0.1: {shake:?}");
    task.abort();

    let mut with = Server::start(&ca, &[ISTIOD, "127.0.0.1"]).await;
    let (task, mut responses) = client(flags(&with, &root, None, None));
    assert!(within("handshake", with.handshakes.recv()).await.is_ok());
    assert_eq!(within("response", responses.recv()).await, TYPE_URL);
    task.abort();
}

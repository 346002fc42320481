//! The federation's gRPC connections (xDS, and the CA on the secure port): at most
//! `max_connections` at once (past it, new ones wait in the kernel's backlog), TLS when
//! given an acceptor (handshakes run beside the accept loop, each within a deadline), and
//! each connection with a kill switch a stream can pull. A client that stops reading leaves
//! its responses in HTTP/2's buffers, which only closing the whole connection frees; the
//! stream that notices (its send timed out) pulls the switch.

use futures::Stream;
use futures::task::AtomicWaker;
use rustls::pki_types::CertificateDer;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake must finish within this, or the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pulled once, the connection fails its next read or write (and a pending read wakes).
#[derive(Debug, Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    reader: AtomicWaker,
}

impl KillSwitch {
    pub fn pull(&self) {
        self.killed.store(true, Ordering::Release);
        self.reader.wake();
    }

    fn pulled(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

/// What a request learns of its connection (tonic puts it in the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub kill: Arc<KillSwitch>,
    /// The client's certificate chain, when it presented one that verified (mTLS).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection holding its slot until it closes.
pub struct Limited {
    io: Io,
    info: ConnInfo,
    _slot: OwnedSemaphorePermit,
}

/// Accepts from `listener`, at most `max` connections at a time, over TLS with `tls`.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    tls: Option<TlsAcceptor>,
) -> impl Stream<Item = io::Result<Limited>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        listener,
        Arc::new(Semaphore::new(max.max(1))),
        tls,
        tx,
    ));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<io::Result<Limited>>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            // EMFILE and friends: a pause, not an error that would end the server.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (out, tls) = (tx.clone(), tls.clone());
        // A handshake waits on the client: never in the accept loop.
        tokio::spawn(async move {
            if let Some(conn) = establish(tcp, remote, tls, slot).await {
                let _ = out.send(Ok(conn)).await;
            }
        });
        if tx.is_closed() {
            return;
        }
    }
}

async fn establish(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<TlsAcceptor>,
    slot: OwnedSemaphorePermit,
) -> Option<Limited> {
    let (io, peer_certs) = match tls {
        None => (Io::Plain(tcp), None),
        Some(acceptor) => {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    // An untrusted or expired client certificate ends here, before any handler.
                    crate::metrics::tls_handshake_failed("error");
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    crate::metrics::tls_handshake_failed("timeout");
                    return None;
                }
            };
            let certs = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect()));
            (Io::Tls(Box::new(stream)), certs)
        }
    };
    let info = ConnInfo {
        remote: Some(remote),
        kill: Arc::default(),
        peer_certs,
    };
    Some(Limited {
        io,
        info,
        _slot: slot,
    })
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed: the client stopped reading",
    )
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.info.kill.reader.register(cx.waker());
        if self.info.kill.pulled() {
            return Poll::Ready(Err(killed()));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.info.kill.pulled() {
            return Poll::Ready(Err(killed()));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_past_the_cap_wait_and_a_pulled_switch_fails_a_pending_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, 1, None));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let mut first = accepted.next().await.unwrap().unwrap();
        let second = tokio::time::timeout(Duration::from_millis(100), accepted.next()).await;
        assert!(second.is_err(), "a second connection past the cap of one");

        let kill = tonic::transport::server::Connected::connect_info(&first).kill;
        let read = tokio::spawn(async move { first.read(&mut [0u8; 8]).await.map(|_| first) });
        kill.pull();
        let err = read.await.unwrap().err().expect("the pending read fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        // The killed connection was dropped with its slot: the next one is accepted.
        assert!(accepted.next().await.unwrap().is_ok());
    }

    /// A client that is not TLS (or whose handshake fails) never reaches a handler, and does
    /// not hold up the next client: handshakes run beside the accept loop.
    #[tokio::test]
    async fn a_failed_handshake_yields_nothing_and_a_good_one_carries_its_certificates() {
        use meshfed_certs::WorkloadOptions;
        use tokio::io::AsyncWriteExt;
        let ca = crate::ca::test_intermediate();
        let serving =
            crate::ca::serving::Serving::issue(&ca, vec!["istiod.ns.svc".into()]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(serving.server_config(&ca).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, 8, Some(acceptor)));

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut junk = TcpStream::connect(addr).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(_)) | Ok(Err(_))),
            "the junk client is answered or closed"
        );

        let workload = ca
            .issue_workload(&WorkloadOptions::new(
                "spiffe://cluster.local/ns/sample/sa/sleep".parse().unwrap(),
            ))
            .unwrap();
        let pem = |p: &str| crate::ca::serving::pem_certs(p).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem(ca.root_pem()).remove(0)).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            x509_parser::pem::parse_x509_pem(workload.key_pem.as_bytes())
                .unwrap()
                .1
                .contents,
        )
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(pem(&workload.chain_pem()), key)
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("istiod.ns.svc").unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        // The silent client still waits on its handshake; the good one comes out first.
        let conn = tokio::time::timeout(Duration::from_secs(5), accepted.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let info = tonic::transport::server::Connected::connect_info(&conn);
        assert_eq!(
            info.peer_certs.map(|c| c.len()),
            Some(2),
            "leaf and intermediate"
        );
        silent.shutdown().await.unwrap();
    }
}

//! TLS connections as tonic's `serve_with_incoming` takes them: [`TlsIncoming`] accepts on a
//! listener it owns and does each handshake on a task of its own (a client that never
//! finishes holds up no other), yielding [`TlsIo`]s whose [`TlsConnectInfo`] gives handlers
//! the peer's address and certificate chain. Dropping it (with the server future) closes the
//! listener and abandons the handshakes under way.

use rustls::pki_types::CertificateDer;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// One handshake's outcome: the ALPN protocol agreed, or why it failed.
pub type Handshake = Result<Option<Vec<u8>>, String>;

/// The server side of TLS connections accepted on a listener.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<io::Result<TlsStream<TcpStream>>>,
    report: Option<mpsc::UnboundedSender<Handshake>>,
}

impl TlsIncoming {
    /// Accepts on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsIncoming {
        TlsIncoming {
            listener,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
            report: None,
        }
    }

    /// Binds `addr` (port 0 for any) and accepts on it with `config`.
    pub async fn bind(
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsIncoming> {
        Ok(TlsIncoming::new(TcpListener::bind(addr).await?, config))
    }

    /// The address accepted on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Reports every handshake, finished or failed, on the receiver (as the stream is
    /// polled), for tests about the handshake itself.
    pub fn reporting(mut self) -> (TlsIncoming, mpsc::UnboundedReceiver<Handshake>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.report = Some(tx);
        (self, rx)
    }

    fn report(&self, handshake: Handshake) {
        if let Some(report) = &self.report {
            let _ = report.send(handshake);
        }
    }

    /// Starts a handshake for every connection the listener has ready. An accept error is
    /// returned for tonic to skip, as its own `TcpIncoming` does.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        loop {
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, _))) => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes
                        .spawn(async move { acceptor.accept(tcp).await });
                }
                Poll::Ready(Err(e)) => return Some(e),
                Poll::Pending => return None,
            }
        }
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_accept(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        // The listener's waker is registered: Pending here is woken by a new connection or
        // a finished handshake.
        while let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
            match done {
                Ok(Ok(tls)) => {
                    this.report(Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)));
                    return Poll::Ready(Some(Ok(TlsIo(tls))));
                }
                Ok(Err(e)) => this.report(Err(e.to_string())),
                Err(panicked) => this.report(Err(panicked.to_string())),
            }
        }
        Poll::Pending
    }
}

/// What a handler learns of a TLS connection (`request.extensions().get::<TlsConnectInfo>()`).
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, leaf first; empty when it sent none.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// A server-side TLS connection.
pub struct TlsIo(TlsStream<TcpStream>);

impl TlsIo {
    /// The TCP stream and the rustls connection state.
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        &self.0
    }
}

impl Connected for TlsIo {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        let (tcp, tls) = self.0.get_ref();
        TlsConnectInfo {
            remote_addr: tcp.peer_addr().ok(),
            peer_certificates: tls
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

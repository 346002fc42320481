//! The xDS server's connections: at most `max_connections` at once (past it, new ones wait
//! in the kernel's backlog), and each with a kill switch a stream can pull. A client that
//! stops reading leaves its responses in HTTP/2's buffers, which only closing the whole
//! connection frees; the stream that notices (its send timed out) pulls the switch.

use futures::Stream;
use futures::task::AtomicWaker;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// What a stream learns of its connection (tonic puts it in the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub kill: Arc<KillSwitch>,
}

/// An accepted connection holding its slot until it closes.
pub struct Limited {
    io: TcpStream,
    kill: Arc<KillSwitch>,
    _slot: OwnedSemaphorePermit,
}

/// Accepts from `listener`, at most `max` connections at a time.
pub fn incoming(listener: TcpListener, max: usize) -> impl Stream<Item = io::Result<Limited>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, slots), |(listener, slots)| async move {
        let slot = slots.clone().acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((io, _)) => {
                    let _ = io.set_nodelay(true);
                    let kill = Arc::default();
                    let conn = Limited {
                        io,
                        kill,
                        _slot: slot,
                    };
                    return Some((Ok(conn), (listener, slots)));
                }
                // EMFILE and friends: a pause, not an error that would end the server.
                Err(e) => {
                    tracing::warn!(error = %e, "xDS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
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
        self.kill.reader.register(cx.waker());
        if self.kill.pulled() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.pulled() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            remote: self.io.peer_addr().ok(),
            kill: self.kill.clone(),
        }
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
        let mut accepted = Box::pin(incoming(listener, 1));
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
}

//! Opening the upstream connection with the buffered ClientHello as its first bytes.
//!
//! tokio's `TcpStream::connect` waits for the socket to become writable and then asks the
//! kernel for the connect's outcome (`getsockopt(SO_ERROR)`) before we may write. The
//! ClientHello's own write reports a refused or failed connect just as well, so we start the
//! connect, try the write at once (on loopback and on fast links the handshake is often
//! already done) and only wait for writability when the kernel says so. One syscall and often
//! one trip through the reactor fewer per proxied connection.

use crate::copy;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// TCP keepalive on both sides of every connection: a peer that vanished without a FIN or RST
/// (a node gone, a NAT that forgot the flow) is found after `idle` plus the kernel's probe
/// count (9 on Linux) times `interval`, about 2.5 minutes, instead of at `--idle-timeout`; and
/// middleboxes see traffic on idle connections.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
}

/// Whether a failed connect (or ClientHello write) says the endpoint is bad, so it should be
/// set aside: it refused, reset or cannot be reached. Errors of this host (out of
/// descriptors, buffers, memory or local ports, a local firewall) say nothing about the
/// endpoint; ejecting on them would empty a healthy cluster while the gateway is under load.
/// Anything not known to be the endpoint's fault is taken as not its fault.
pub fn blames_endpoint(e: &io::Error) -> bool {
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::ECONNABORTED
                | libc::EPIPE
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ETIMEDOUT
        );
    }
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | BrokenPipe
            | HostUnreachable
            | NetworkUnreachable
            | TimedOut
    )
}

/// Connects to `addr` with TCP_NODELAY and keepalive and writes all of `first`; an error from
/// either step (refused, unreachable, reset, or local) is returned as is.
pub async fn connect_with(addr: SocketAddr, first: &[u8]) -> io::Result<TcpStream> {
    let stream = start_connect(addr)?;
    copy::send_all(&stream, first).await?;
    Ok(stream)
}

/// A non-blocking socket whose connect has started (or, rarely, already finished).
fn start_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&keepalive())?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    TcpStream::from_std(std::net::TcpStream::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Refused, reset and unreachable endpoints are to blame; running out of descriptors,
    /// buffers, memory or local ports (or a local firewall) is not.
    #[test]
    fn only_endpoint_errors_blame_the_endpoint() {
        let os = io::Error::from_raw_os_error;
        for code in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::EPIPE,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ETIMEDOUT,
        ] {
            assert!(blames_endpoint(&os(code)), "{}", os(code));
        }
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EADDRNOTAVAIL,
            libc::EADDRINUSE,
            libc::EPERM,
            libc::EACCES,
            libc::EINVAL,
        ] {
            assert!(!blames_endpoint(&os(code)), "{}", os(code));
        }
        assert!(blames_endpoint(&io::ErrorKind::ConnectionRefused.into()));
        assert!(!blames_endpoint(&io::ErrorKind::OutOfMemory.into()));
        assert!(!blames_endpoint(&io::Error::other("something else")));
    }

    #[tokio::test]
    async fn first_bytes_arrive_and_nodelay_and_keepalive_are_set() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hello: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let (up, accepted) = tokio::join!(connect_with(addr, &hello), l.accept());
        let up = up.unwrap();
        assert!(up.nodelay().unwrap());
        let sock = socket2::SockRef::from(&up);
        assert!(sock.keepalive().unwrap(), "upstream keepalive");
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        }
        let mut got = vec![0; hello.len()];
        accepted.unwrap().0.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello);
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error() {
        // A port that was just free: nothing listens there.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = connect_with(addr, b"hello").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_large_first_write_waits_for_the_peer() {
        // More than the socket buffers hold: the write must wait for the reader, not fail.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let big = vec![7u8; 8 << 20];
        let reader = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut n = 0;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => return n,
                    m => n += m,
                }
            }
        });
        let up = connect_with(addr, &big).await.unwrap();
        drop(up);
        assert_eq!(reader.await.unwrap(), big.len());
    }
}

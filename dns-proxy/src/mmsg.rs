//! Many datagrams per system call (Linux `recvmmsg`/`sendmmsg`). Under load most of a DNS
//! server's time is spent in the kernel, one receive and one send per query; reading and
//! answering in batches amortises the call itself, which is where a proxy beats the one-query-
//! per-call servers. Elsewhere, a batch is one datagram.

use std::io;
use std::net::SocketAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The most datagrams read or written per call.
pub const BATCH: usize = 32;
/// Queries larger than this are treated as malformed: real ones stay far below (RFC 1035
/// names are at most 255 bytes; EDNS options add little).
pub const MAX_QUERY: usize = 4096;

/// Receive buffers for one batch.
pub struct Batch {
    bufs: Vec<[u8; MAX_QUERY]>,
    pub lens: Vec<usize>,
    pub srcs: Vec<SocketAddr>,
    /// Datagrams cut short because they did not fit.
    pub truncated: Vec<bool>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: vec![[0u8; MAX_QUERY]; BATCH],
            lens: Vec::with_capacity(BATCH),
            srcs: Vec::with_capacity(BATCH),
            truncated: Vec::with_capacity(BATCH),
        }
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }
}

/// Waits for at least one datagram, then takes as many as are queued (up to [`BATCH`]).
pub async fn recv(socket: &UdpSocket, batch: &mut Batch) -> io::Result<()> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || sys::recv(socket, batch)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends every answer, in as few calls as the socket takes them.
pub async fn send(socket: &UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) {
    let mut sent = 0;
    while sent < answers.len() {
        match socket.try_io(Interest::WRITABLE, || sys::send(socket, &answers[sent..])) {
            Ok(n) => sent += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The send buffer is full: wait for room, one datagram at a time.
                let (bytes, to) = &answers[sent];
                let _ = socket.send_to(bytes, to).await;
                sent += 1;
            }
            // An unreachable client must not cost the rest of the batch its answers.
            Err(_) => sent += 1,
        }
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::{BATCH, Batch, MAX_QUERY};
    use std::io;
    use std::mem::MaybeUninit;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;
    use tokio::net::UdpSocket;

    pub fn recv(socket: &UdpSocket, batch: &mut Batch) -> io::Result<()> {
        batch.lens.clear();
        batch.srcs.clear();
        batch.truncated.clear();
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [MaybeUninit::zeroed(); BATCH];
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: batch.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            hdrs[i].msg_hdr.msg_name = addrs[i].as_mut_ptr().cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer and address slot of the right size,
        // all of which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, h) in hdrs.iter().enumerate().take(n as usize) {
            // SAFETY: the kernel filled this address slot (msg_namelen says how much).
            let Some(src) = (unsafe { address(addrs[i].assume_init_ref()) }) else {
                continue;
            };
            batch.lens.push((h.msg_len as usize).min(MAX_QUERY));
            batch.srcs.push(src);
            batch
                .truncated
                .push(h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0);
        }
        Ok(())
    }

    /// Sends a prefix of `answers`; returns how many went.
    pub fn send(socket: &UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let count = answers.len().min(BATCH);
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (bytes, to)) in answers.iter().take(count).enumerate() {
            iovs[i] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = encode(to, &mut addrs[i]);
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `count` headers, each pointing at a live answer and an encoded address.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    unsafe fn address(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match s.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a sockaddr_in.
                let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a sockaddr_in6.
                let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn encode(to: &SocketAddr, s: &mut libc::sockaddr_storage) -> u32 {
        match to {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
                let a = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = v4.port().to_be();
                a.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>() as u32
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = v6.port().to_be();
                a.sin6_addr.s6_addr = v6.ip().octets();
                a.sin6_flowinfo = v6.flowinfo();
                a.sin6_scope_id = v6.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>() as u32
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::{Batch, MAX_QUERY};
    use std::io;
    use std::net::SocketAddr;
    use tokio::net::UdpSocket;

    pub fn recv(socket: &UdpSocket, batch: &mut Batch) -> io::Result<()> {
        batch.lens.clear();
        batch.srcs.clear();
        batch.truncated.clear();
        let (n, src) = socket.try_recv_from(&mut batch.bufs[0])?;
        batch.lens.push(n.min(MAX_QUERY));
        batch.srcs.push(src);
        batch.truncated.push(false);
        Ok(())
    }

    pub fn send(socket: &UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let (bytes, to) = &answers[0];
        socket.try_send_to(bytes, *to).map(|_| 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_queue_of_datagrams_arrives_in_one_batch_and_goes_back_in_one() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (to, from) = (
            server.local_addr().expect("addr"),
            client.local_addr().expect("addr"),
        );
        for i in 0..40u8 {
            client.send_to(&[i; 20], to).await.expect("send");
        }
        client
            .send_to(&[7u8; MAX_QUERY + 10], to)
            .await
            .expect("send");
        let mut batch = Batch::default();
        let mut seen = Vec::new();
        let mut truncated = 0;
        while seen.len() < 41 {
            recv(&server, &mut batch).await.expect("recv");
            for i in 0..batch.len() {
                assert_eq!(batch.srcs[i], from);
                truncated += usize::from(batch.truncated[i]);
                seen.push(batch.datagram(i).to_vec());
            }
        }
        assert_eq!(
            seen[..40],
            (0..40u8).map(|i| vec![i; 20]).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            (seen[40].len(), truncated),
            (MAX_QUERY, 1),
            "cut to the buffer, flagged"
        );

        let answers: Vec<(Vec<u8>, SocketAddr)> = (0..40u8).map(|i| (vec![i; 3], from)).collect();
        send(&server, &answers).await;
        let mut buf = [0u8; 16];
        for i in 0..40u8 {
            let (n, src) = client.recv_from(&mut buf).await.expect("recv");
            assert_eq!((&buf[..n], src), (&[i; 3][..], to));
        }
    }
}

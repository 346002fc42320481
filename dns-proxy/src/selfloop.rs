//! Never forward to ourselves. A proxy whose upstream is its own address relays each query to
//! itself, which relays it again, until sockets run out: one query once made some 20,000
//! forwards (`--listen 0.0.0.0:P --upstream 127.0.0.1:P`). Two guards: such upstreams are
//! dropped at start ([`without_self`]), and a query that arrives from one of the proxy's own
//! upstream sockets is never forwarded ([`OwnSockets`]), for the loops no address check can
//! see (a Service address that leads back to us, another resolver that forwards to us).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoUpstream {
    #[error("no upstream resolver")]
    None,
    #[error("no upstream resolver but this proxy itself ({dropped}; it listens on {listen})")]
    OnlySelf { dropped: String, listen: SocketAddr },
}

/// `servers` without those that are the proxy listening on `listen`, each dropped one
/// logged as a warning; an error if none is left.
pub fn without_self(
    servers: &[SocketAddr],
    listen: SocketAddr,
) -> Result<Vec<SocketAddr>, NoUpstream> {
    let (own, kept): (Vec<SocketAddr>, Vec<SocketAddr>) =
        servers.iter().partition(|s| is_self(**s, listen));
    for s in &own {
        tracing::warn!(upstream = %s, %listen, "dropping an upstream resolver that is this proxy itself");
    }
    if !kept.is_empty() {
        return Ok(kept);
    }
    if own.is_empty() {
        return Err(NoUpstream::None);
    }
    let dropped = own.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Err(NoUpstream::OnlySelf {
        dropped: dropped.join(", "),
        listen,
    })
}

/// Whether a query sent to `upstream` reaches a proxy listening on `listen`: the same
/// address, or, for a wildcard listener, any address of this host on the same port.
pub fn is_self(upstream: SocketAddr, listen: SocketAddr) -> bool {
    if upstream.port() != listen.port() {
        return false;
    }
    let to = sent_to(upstream.ip());
    let at = listen.ip().to_canonical();
    match at {
        // 0.0.0.0 takes IPv4 only; `::` takes both (Linux binds it dual-stack unless the
        // `bindv6only` sysctl says otherwise: counting v4 too errs on the side of no loop).
        IpAddr::V4(a) if a.is_unspecified() => to.is_ipv4() && is_local(to),
        IpAddr::V6(a) if a.is_unspecified() => is_local(to),
        at => to == at,
    }
}

/// Where a datagram to `ip` goes: the kernel sends one for the unspecified address to
/// loopback; a v4-mapped address is plain IPv4.
fn sent_to(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Whether `ip` is an address of this host. Binding succeeds only for local addresses (the
/// kernel answers EADDRNOTAVAIL otherwise). Not so with `ip_nonlocal_bind` set, or for
/// addresses that are local but taken over before delivery (kube-proxy's IPVS puts Service
/// IPs on a local dummy interface): there every address on the port counts as local, and a
/// wildcard listener drops it; listening on a specific address avoids that.
pub fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The local addresses of the upstream sockets this proxy has open now, by protocol. A query
/// from one of them is the proxy talking to itself: forwarding it again would loop.
#[derive(Debug, Clone, Default)]
pub struct OwnSockets(Arc<Mutex<HashSet<(bool, SocketAddr)>>>);

impl OwnSockets {
    /// Whether `src` is one of our upstream sockets (`tcp` says which protocol).
    pub fn contains(&self, tcp: bool, src: SocketAddr) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(&(tcp, src)))
    }

    /// Records `local` as ours until the returned guard is dropped. Called before the query
    /// is sent, so the proxy knows the address before the query can reach it.
    pub(crate) fn hold(&self, tcp: bool, local: SocketAddr) -> Held<'_> {
        if let Ok(mut s) = self.0.lock() {
            s.insert((tcp, local));
        }
        Held {
            own: self,
            key: (tcp, local),
        }
    }
}

/// An upstream socket's address, kept in [`OwnSockets`] while the socket is open.
pub(crate) struct Held<'a> {
    own: &'a OwnSockets,
    key: (bool, SocketAddr),
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.own.0.lock() {
            s.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    /// An address of this host that is not loopback, if it has a route out (connecting a UDP
    /// socket picks the source address without sending anything).
    fn host_address() -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect("198.51.100.1:53").ok()?;
        let ip = s.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    }

    #[test]
    fn the_listen_address_itself_is_self() {
        assert!(is_self(a("127.0.0.1:5353"), a("127.0.0.1:5353")));
        assert!(is_self(a("[::ffff:127.0.0.1]:5353"), a("127.0.0.1:5353")));
        assert!(
            is_self(a("0.0.0.0:5353"), a("127.0.0.1:5353")),
            "0.0.0.0 is sent to loopback"
        );
        assert!(
            !is_self(a("127.0.0.1:53"), a("127.0.0.1:5353")),
            "another port"
        );
        assert!(
            !is_self(a("127.0.0.2:5353"), a("127.0.0.1:5353")),
            "a specific listener"
        );
        assert!(!is_self(a("10.96.0.10:53"), a("127.0.0.1:53")));
    }

    #[test]
    fn a_wildcard_listener_is_every_local_address_on_its_port() {
        let any4 = a("0.0.0.0:5353");
        for up in [
            "127.0.0.1:5353",
            "127.0.0.53:5353",
            "[::ffff:127.0.0.1]:5353",
        ] {
            assert!(is_self(a(up), any4), "{up}");
        }
        assert!(!is_self(a("[::1]:5353"), any4), "0.0.0.0 takes no IPv6");
        assert!(!is_self(a("127.0.0.1:53"), any4), "another port");
        assert!(
            !is_self(a("203.0.113.77:5353"), any4),
            "not an address of this host"
        );
        let any6 = a("[::]:5353");
        assert!(is_self(a("[::1]:5353"), any6) && is_self(a("127.0.0.1:5353"), any6));
        assert!(!is_self(a("[2001:db8::77]:5353"), any6));
        if let Some(ip) = host_address() {
            assert!(is_self(SocketAddr::new(ip, 5353), any4), "{ip}");
            assert!(!is_self(SocketAddr::new(ip, 5353), a("127.0.0.1:5353")));
        }
    }

    #[test]
    fn self_upstreams_are_dropped_and_none_left_is_an_error() {
        let listen = a("0.0.0.0:5353");
        let real = a("127.0.0.1:5354");
        assert_eq!(
            without_self(&[a("127.0.0.1:5353"), real], listen),
            Ok(vec![real])
        );
        let err = without_self(&[a("127.0.0.1:5353"), a("127.0.0.2:5353")], listen)
            .expect_err("only ourselves");
        assert_eq!(
            err.to_string(),
            "no upstream resolver but this proxy itself (127.0.0.1:5353, 127.0.0.2:5353; \
             it listens on 0.0.0.0:5353)"
        );
        assert_eq!(without_self(&[], listen), Err(NoUpstream::None));
    }

    #[test]
    fn own_sockets_are_known_while_held() {
        let own = OwnSockets::default();
        let src = a("127.0.0.1:40000");
        {
            let _held = own.hold(false, src);
            assert!(own.contains(false, src));
            assert!(!own.contains(true, src), "TCP and UDP ports are apart");
        }
        assert!(!own.contains(false, src), "forgotten once closed");
    }
}

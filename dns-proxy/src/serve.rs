//! The listeners. Our own receive loops rather than hickory's `Server`: a local answer is sent
//! from the loop that read the query (no task, no channel per packet), and every malformed
//! message is seen, so it can be counted. Only forwarded queries get a task, since they wait
//! on the network.

use crate::Limits;
use crate::access::Access;
use crate::cache::AnswerCache;
use crate::metrics::{Metrics, Outcome};
use crate::mmsg;
use crate::names::Names;
use crate::respond::{self, Outcome as Decision};
use crate::table::Table;
use crate::upstream::Upstreams;
use hickory_server::net::xfer::Protocol;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What every listener shares.
#[derive(Clone)]
pub struct Context {
    pub table: Table,
    pub upstreams: Arc<Upstreams>,
    pub access: Arc<Access>,
    pub metrics: &'static Metrics,
    pub limits: Limits,
    /// One permit per forwarded query in flight, UDP and TCP together.
    forwards: Arc<Semaphore>,
}

/// A forwarded query's place among those in flight, given back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: &'static ::metrics::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// A semaphore of `n` permits, at least one and at most what tokio allows.
fn permits(n: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)))
}

impl Context {
    pub fn new(table: Table, upstreams: Upstreams, access: Access, limits: Limits) -> Context {
        Context {
            table,
            upstreams: Arc::new(upstreams),
            access: Arc::new(access),
            metrics: crate::metrics::global(),
            forwards: permits(limits.max_forwards_in_flight),
            limits,
        }
    }

    /// `names` is read once per batch (UDP) or message (TCP), not once per query.
    fn decide(
        &self,
        raw: &[u8],
        src: SocketAddr,
        protocol: Protocol,
        names: Option<&Names>,
    ) -> Decision {
        respond::decide(raw, src, protocol, self.access.allows(src.ip()), names)
    }

    /// As `decide`, but a query equal to one already answered locally (but for its ID and the
    /// case of its name) is answered from `cache`, and new local answers are kept there
    /// (those with several addresses of a type are not: their order turns).
    fn decide_cached(
        &self,
        raw: &[u8],
        src: SocketAddr,
        names: Option<&Arc<Names>>,
        cache: &mut AnswerCache,
    ) -> Decision {
        let Some(names) = names else {
            return self.decide(raw, src, Protocol::Udp, None);
        };
        if self.access.allows(src.ip())
            && let Some(answer) = cache.get(raw, names)
        {
            return Decision::Local(answer);
        }
        let decision = self.decide(raw, src, Protocol::Udp, Some(names));
        if let Decision::Local(answer) = &decision
            && respond::reusable(answer)
        {
            cache.put(raw, answer, names);
        }
        decision
    }

    /// The answer to send (if any) for a decision that needs no upstream, counted.
    fn settle(&self, decision: Decision, tcp: bool) -> Option<Vec<u8>> {
        let (outcome, bytes) = match decision {
            Decision::Local(b) => (Outcome::Local, Some(b)),
            Decision::Refused(b) => (Outcome::Refused, Some(b)),
            Decision::FormErr(b) => (Outcome::Formerr, Some(b)),
            Decision::Drop => (Outcome::Dropped, None),
            Decision::Forward => return None,
        };
        self.metrics.request(tcp, outcome);
        bytes
    }

    /// A place for one more forwarded query, or None (counted) when all are taken. Then the
    /// query is answered SERVFAIL at once rather than dropped: our loops must go on reading
    /// (local answers come from them), so we cannot stop reading as dnsmasq does at its
    /// `--dns-forward-max`; an answer now lets the client's resolver try its next server
    /// instead of waiting out its timeout (glibc: 5 s); and in a loop we cannot see (a
    /// Service address that leads back to us), the SERVFAIL at the cap unwinds the whole
    /// chain at once instead of every hop holding a place for the upstream timeout.
    fn admit(&self, tcp: bool) -> Option<Slot> {
        match self.forwards.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.forwards_in_flight.increment(1.0);
                Some(Slot {
                    _permit: permit,
                    gauge: &self.metrics.forwards_in_flight,
                })
            }
            Err(_) => {
                self.metrics.request(tcp, Outcome::Overloaded);
                None
            }
        }
    }

    /// Whether `src` is one of our own upstream sockets (then the query is dropped, counted):
    /// forwarding it would loop.
    fn looped(&self, tcp: bool, src: SocketAddr) -> bool {
        if !self.upstreams.own().contains(tcp, src) {
            return false;
        }
        tracing::warn!(%src, "a query from this proxy's own upstream socket: forwarding loop, dropped");
        self.metrics.forwarding_loops.increment(1);
        self.metrics.request(tcp, Outcome::Dropped);
        true
    }

    /// Relays a UDP query from `src` in a task of its own; the answer to send now if it
    /// cannot be relayed.
    fn forward_udp(&self, raw: &[u8], src: SocketAddr, socket: &Arc<UdpSocket>) -> Option<Vec<u8>> {
        if self.looped(false, src) {
            return None;
        }
        let Some(slot) = self.admit(false) else {
            return respond::servfail(raw);
        };
        let (raw, socket, cx) = (raw.to_vec(), socket.clone(), self.clone());
        tokio::spawn(async move {
            let answer = cx.forward(&raw, false).await;
            drop(slot);
            if let Some(answer) = answer {
                let _ = socket.send_to(&answer, src).await;
            }
        });
        None
    }

    /// The upstream's answer to `raw`, or SERVFAIL; counted.
    async fn forward(&self, raw: &[u8], tcp: bool) -> Option<Vec<u8>> {
        self.metrics.upstream_request(tcp);
        let started = Instant::now();
        let answer = if tcp {
            self.upstreams.tcp(raw).await
        } else {
            self.upstreams.udp(raw).await
        };
        self.metrics
            .upstream_seconds
            .record(started.elapsed().as_secs_f64());
        match answer {
            Ok(a) => {
                self.metrics.request(tcp, Outcome::Forwarded);
                Some(a)
            }
            Err(e) => {
                tracing::debug!(error = %e, "upstream failed; answering SERVFAIL");
                self.metrics.upstream_failures.increment(1);
                self.metrics.request(tcp, Outcome::Failed);
                respond::servfail(raw)
            }
        }
    }
}

/// Serves `socket` until aborted: a batch of queries in, their local answers out in one go.
pub async fn udp(socket: Arc<UdpSocket>, cx: Context) {
    let mut batch = mmsg::Batch::default();
    let mut answers = Vec::with_capacity(mmsg::BATCH);
    let mut cache = AnswerCache::default();
    loop {
        if let Err(e) = mmsg::recv(&socket, &mut batch).await {
            // ICMP errors from earlier sends surface here on some systems; keep serving.
            tracing::debug!(error = %e, "udp receive");
            continue;
        }
        let names = cx.table.get();
        for i in 0..batch.len() {
            let (raw, src) = (batch.datagram(i), batch.srcs[i]);
            let decision = if batch.truncated[i] {
                Decision::Drop
            } else {
                cx.decide_cached(raw, src, names.as_ref(), &mut cache)
            };
            let answer = match decision {
                Decision::Forward => cx.forward_udp(raw, src, &socket),
                decision => cx.settle(decision, false),
            };
            if let Some(answer) = answer {
                answers.push((answer, src));
            }
        }
        mmsg::send(&socket, &answers).await;
        answers.clear();
    }
}

/// Accepts on `listener` until aborted; each connection is served in its own task. At
/// `max_tcp_connections` open it stops accepting, so new connections wait in the kernel's
/// backlog (as unbound does at its `incoming-num-tcp`) until one closes, which the idle and
/// write timeouts bound; closing them would fail a client that a moment later could be served.
pub async fn tcp(listener: TcpListener, cx: Context) {
    let slots = permits(cx.limits.max_tcp_connections);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: pause instead of spinning.
                tracing::debug!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cx = cx.clone();
        tokio::spawn(async move {
            cx.metrics.tcp_connections.increment(1.0);
            if let Err(e) = connection(stream, src, &cx).await {
                tracing::debug!(%src, error = %e, "tcp connection ended");
            }
            cx.metrics.tcp_connections.decrement(1.0);
            drop(slot);
        });
    }
}

/// Queries on one connection are answered in order (RFC 7766 allows either; in order keeps a
/// slow upstream from being flooded through one connection).
async fn connection(mut stream: TcpStream, src: SocketAddr, cx: &Context) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    while let Some(raw) = read_message(&mut stream, cx.limits.tcp_idle_timeout).await? {
        let names = cx.table.get();
        let answer = match cx.decide(&raw, src, Protocol::Tcp, names.as_deref()) {
            Decision::Forward if cx.looped(true, src) => return Ok(()),
            Decision::Forward => match cx.admit(true) {
                Some(_slot) => cx.forward(&raw, true).await,
                None => respond::servfail(&raw),
            },
            Decision::Drop => {
                // Framing is intact but the message is not: nothing sensible follows.
                cx.settle(Decision::Drop, true);
                return Ok(());
            }
            decision => cx.settle(decision, true),
        };
        if let Some(answer) = answer {
            write_message(&mut stream, &answer, cx.limits.tcp_write_timeout).await?;
        }
    }
    Ok(())
}

/// The next length-framed message, or None when the client closed or sent nothing for `idle`
/// (a message begun must also be complete within `idle`).
async fn read_message(stream: &mut TcpStream, idle: Duration) -> std::io::Result<Option<Vec<u8>>> {
    let len = match tokio::time::timeout(idle, stream.read_u16()).await {
        Ok(Ok(n)) => usize::from(n),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(None),
    };
    let mut raw = vec![0u8; len];
    tokio::time::timeout(idle, stream.read_exact(&mut raw))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(Some(raw))
}

/// Sends `answer` framed; a client that does not take it within `limit` is given up on.
async fn write_message(
    stream: &mut TcpStream,
    answer: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    // An answer over 64 KiB cannot be framed; none of ours or an upstream's is.
    let Ok(n) = u16::try_from(answer.len()) else {
        return Ok(());
    };
    let mut framed = Vec::with_capacity(answer.len() + 2);
    framed.extend_from_slice(&n.to_be_bytes());
    framed.extend_from_slice(answer);
    tokio::time::timeout(limit, stream.write_all(&framed))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

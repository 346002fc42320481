//! The listeners. Our own receive loops rather than hickory's `Server`: a local answer is sent
//! from the loop that read the query (no task, no channel per packet), and every malformed
//! message is seen, so it can be counted. Only forwarded queries get a task, since they wait
//! on the network.

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

/// A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every listener shares.
#[derive(Clone)]
pub struct Context {
    pub table: Table,
    pub upstreams: Arc<Upstreams>,
    pub access: Arc<Access>,
    pub metrics: &'static Metrics,
}

impl Context {
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
    /// case of its name) is answered from `cache`, and new local answers are kept there.
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
        if let Decision::Local(answer) = &decision {
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

    /// Relays a UDP query from `src` in a task of its own.
    fn forward_udp(&self, raw: &[u8], src: SocketAddr, socket: &Arc<UdpSocket>) {
        if self.looped(false, src) {
            return;
        }
        let (raw, socket, cx) = (raw.to_vec(), socket.clone(), self.clone());
        tokio::spawn(async move {
            if let Some(answer) = cx.forward(&raw, false).await {
                let _ = socket.send_to(&answer, src).await;
            }
        });
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
            match decision {
                Decision::Forward => cx.forward_udp(raw, src, &socket),
                decision => {
                    if let Some(answer) = cx.settle(decision, false) {
                        answers.push((answer, src));
                    }
                }
            }
        }
        mmsg::send(&socket, &answers).await;
        answers.clear();
    }
}

/// Accepts on `listener` until aborted; each connection is served in its own task.
pub async fn tcp(listener: TcpListener, cx: Context) {
    loop {
        let Ok((stream, src)) = listener.accept().await else {
            continue;
        };
        let cx = cx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, src, &cx).await {
                tracing::debug!(%src, error = %e, "tcp connection ended");
            }
        });
    }
}

/// Queries on one connection are answered in order (RFC 7766 allows either; in order keeps a
/// slow upstream from being flooded through one connection).
async fn connection(mut stream: TcpStream, src: SocketAddr, cx: &Context) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut raw = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut raw))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let names = cx.table.get();
        let answer = match cx.decide(&raw, src, Protocol::Tcp, names.as_deref()) {
            Decision::Forward if cx.looped(true, src) => return Ok(()),
            Decision::Forward => cx.forward(&raw, true).await,
            Decision::Drop => {
                // Framing is intact but the message is not: nothing sensible follows.
                cx.settle(Decision::Drop, true);
                return Ok(());
            }
            decision => cx.settle(decision, true),
        };
        if let Some(answer) = answer {
            let Ok(n) = u16::try_from(answer.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&answer);
            stream.write_all(&framed).await?;
        }
    }
}

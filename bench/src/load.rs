//! Load generation and the backend, on the bench's own core. The backend reads the
//! ClientHello, answers one byte ("first byte back"), then discards until end of stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Backend {
    pub addr: SocketAddr,
    /// Connections currently open at the backend (the idle test waits on it).
    pub open: tokio::sync::watch::Receiver<u64>,
}

pub async fn backend(hello_len: usize) -> std::io::Result<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (counter, open) = tokio::sync::watch::channel(0u64);
    let counter = Arc::new(counter);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, hello_len, counter.clone()));
        }
    });
    Ok(Backend { addr, open })
}

async fn serve(mut conn: TcpStream, hello_len: usize, open: Arc<tokio::sync::watch::Sender<u64>>) {
    let _ = conn.set_nodelay(true);
    let mut hello = vec![0u8; hello_len];
    if conn.read_exact(&mut hello).await.is_err() {
        return;
    }
    open.send_modify(|n| *n += 1);
    drop(hello);
    if conn.write_all(b"!").await.is_ok() {
        let mut buf = vec![0u8; 256 * 1024];
        while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
    }
    open.send_modify(|n| *n -= 1);
}

/// Connect, send the ClientHello, wait for the first byte back. Returns the stream.
pub async fn open(addr: SocketAddr, hello: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(hello).await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(s)
}

/// New connections per second with `workers` clients looping open-and-close.
pub async fn conn_rate(addr: SocketAddr, hello: Arc<Vec<u8>>, workers: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (hello, done) = (hello.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if open(addr, &hello).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Connect-to-first-byte latencies (µs) at a fixed rate, sorted.
pub async fn latencies(addr: SocketAddr, hello: Arc<Vec<u8>>, per_sec: u32, secs: f64) -> Vec<u64> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec)));
    let n = (f64::from(per_sec) * secs) as usize;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tick.tick().await;
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            open(addr, &hello)
                .await
                .ok()
                .map(|_| t0.elapsed().as_micros() as u64)
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(Some(us)) = t.await {
            out.push(us);
        }
    }
    out.sort_unstable();
    out
}

/// Bulk throughput in Gbit/s over `streams` connections, each writing for `secs`.
pub async fn bulk(addr: SocketAddr, hello: Arc<Vec<u8>>, streams: usize, secs: f64) -> f64 {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let hello = hello.clone();
            tokio::spawn(async move {
                let Ok(mut s) = open(addr, &hello).await else {
                    return 0u64;
                };
                let chunk = vec![0x5au8; 256 * 1024];
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    if s.write_all(&chunk).await.is_err() {
                        return sent;
                    }
                    sent += chunk.len() as u64;
                }
                // Count only what reached the backend: wait for it to read everything.
                let _ = s.shutdown().await;
                let mut rest = [0u8; 16];
                while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
                sent
            })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap_or(0);
    }
    bytes as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9
}

/// Waits until the backend holds exactly `n` connections.
pub async fn backend_holds(open: &mut tokio::sync::watch::Receiver<u64>, n: u64) {
    let _ = open.wait_for(|&v| v == n).await;
}

/// Opens `n` routed connections and keeps them idle; returns them once the backend holds
/// all of them (it must hold none when called).
pub async fn idle(
    addr: SocketAddr,
    hello: Arc<Vec<u8>>,
    n: usize,
    backend_open: &mut tokio::sync::watch::Receiver<u64>,
) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened: Vec<_> = batch.iter().map(|_| open(addr, &hello)).collect();
        for s in futures::future::join_all(opened)
            .await
            .into_iter()
            .flatten()
        {
            conns.push(s);
        }
    }
    backend_holds(backend_open, conns.len() as u64).await;
    conns
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

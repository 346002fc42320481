//! Copying bytes both ways between the downstream and the chosen upstream.
//!
//! On Linux the default is `splice(2)` through a pipe per direction: bytes never enter user
//! space and an idle connection holds no buffer at all (pipes take pages only while data is
//! in them). The buffered copy is the portable fallback and the benchmark's comparison.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    Splice,
    Buffered,
}

impl Default for CopyMode {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            CopyMode::Splice
        } else {
            CopyMode::Buffered
        }
    }
}

impl std::str::FromStr for CopyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "splice" if cfg!(target_os = "linux") => Ok(CopyMode::Splice),
            "splice" => Err("splice(2) needs Linux".into()),
            "buffered" => Ok(CopyMode::Buffered),
            other => Err(format!(
                "unknown copy mode {other:?}: use splice or buffered"
            )),
        }
    }
}

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    pub to_upstream: u64,
    pub to_downstream: u64,
}

/// Called with each batch of bytes moved: (to_upstream, n) where to_upstream tells the way.
pub type OnBytes = Arc<dyn Fn(bool, u64) + Send + Sync>;

/// Copies until both directions reach end of stream (each end's FIN is passed on as a
/// half-close), an error, or `idle` passes with no byte moved either way.
pub async fn bidirectional(
    down: TcpStream,
    up: TcpStream,
    mode: CopyMode,
    idle: Duration,
    on_bytes: OnBytes,
) -> io::Result<Transferred> {
    let activity = AtomicU64::new(0);
    let both = async {
        match mode {
            #[cfg(target_os = "linux")]
            CopyMode::Splice => {
                let ended = std::sync::atomic::AtomicBool::new(false);
                let to_up = zerocopy::copy(&down, &up, &activity, &ended, &on_bytes, true);
                let to_down = zerocopy::copy(&up, &down, &activity, &ended, &on_bytes, false);
                tokio::try_join!(to_up, to_down)
            }
            _ => buffered_both(down, up, &activity, &on_bytes).await,
        }
    };
    tokio::select! {
        r = both => r.map(|(to_upstream, to_downstream)| Transferred { to_upstream, to_downstream }),
        () = idle_watch(&activity, idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    }
}

/// Reads what `stream` holds into `buf` without waiting (WouldBlock when it holds nothing).
/// A read that leaves room in `buf` has drained the socket, so the reactor is told to wait for
/// new data: otherwise the next wait returns at once and the read after it only says EAGAIN,
/// one wasted syscall per message. Data that lands meanwhile raises a new readiness event.
pub(crate) fn read_draining(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let cleared = stream.try_io(Interest::READABLE, || {
        got = stream.try_read(buf)?;
        if got > 0 && got < buf.len() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match cleared {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// Sends what `stream` takes now, without waiting. Straight to the descriptor: tokio's
/// try_write refuses until the reactor has reported a new socket writable once.
pub(crate) fn send_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: buf is valid for reads of buf.len() bytes; the descriptor is owned by stream.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends all of `buf`: at once as far as the socket takes it, the rest as room frees up.
pub(crate) async fn send_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send_now(stream, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.writable().await?;
                // The reactor's writable flag is only cleared through try_io: a spurious
                // wake-up then waits for the next edge instead of spinning.
                match stream.try_io(Interest::WRITABLE, || send_now(stream, buf)) {
                    Ok(n) => buf = &buf[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Completes once `idle` passes without the activity counter moving.
async fn idle_watch(activity: &AtomicU64, idle: Duration) {
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = activity.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

async fn buffered_both(
    down: TcpStream,
    up: TcpStream,
    activity: &AtomicU64,
    on_bytes: &OnBytes,
) -> io::Result<(u64, u64)> {
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::try_join!(
        buffered(down_r, up_w, activity, on_bytes, true),
        buffered(up_r, down_w, activity, on_bytes, false)
    )
}

async fn buffered(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    activity: &AtomicU64,
    on_bytes: &OnBytes,
    to_up: bool,
) -> io::Result<u64> {
    let mut total = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Pass the FIN on; the peer may already be gone, which is not an error for us.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        activity.fetch_add(1, Ordering::Relaxed);
        on_bytes(to_up, n as u64);
    }
}

/// Linux: small reads go through a per-thread scratch buffer (recv + send, no pipe); once a
/// read fills that buffer the stream is in bulk and moves through a pipe with splice(2),
/// never entering user space. The pipe is closed whenever the source runs dry, so an idle
/// connection holds nothing but its two sockets.
#[cfg(target_os = "linux")]
mod zerocopy {
    use super::OnBytes;
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Up to this much moves per splice call, and the capacity asked of a bulk pipe: four
    /// times the default 64 KiB, so one bulk stream takes a quarter of the splice calls
    /// (measured: 9.9 -> 13.6 Gbit/s for one stream; 1 MiB gave 15.0 for four times the pages
    /// charged). The pages are held only while a bulk transfer is under way.
    const CHUNK: usize = 256 * 1024;
    /// Reads that fill the scratch buffer switch the stream to splice.
    const SCRATCH: usize = 16 * 1024;

    /// How many pipes of the process may be enlarged at once. The kernel charges a pipe's
    /// capacity, not its use, to the user's fs.pipe-user-pages-soft (64 MiB by default), and
    /// once an unprivileged user is over it every new pipe gets two pages. 64 big pipes take a
    /// quarter of that; past them pipes keep the default size, so many parallel bulk streams
    /// never starve later ones (or other processes of the same user).
    static BIG_PIPES: Budget = Budget::new(64);

    thread_local! {
        static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
    }

    /// A count of enlarged pipes with a ceiling.
    struct Budget {
        in_use: AtomicUsize,
        max: usize,
    }

    /// One enlarged pipe's share of a budget, given back on drop.
    struct Slot(&'static Budget);

    impl Budget {
        const fn new(max: usize) -> Self {
            Budget {
                in_use: AtomicUsize::new(0),
                max,
            }
        }

        fn take(&'static self) -> Option<Slot> {
            self.in_use
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.max).then_some(n + 1)
                })
                .ok()
                .map(|_| Slot(self))
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.in_use.fetch_sub(1, Ordering::Relaxed);
        }
    }

    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// Held while this pipe is enlarged.
        _big: Option<Slot>,
    }

    fn pipe() -> io::Result<Pipe> {
        pipe_within(&BIG_PIPES)
    }

    fn pipe_within(budget: &'static Budget) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let big = budget.take().filter(|_| enlarge(&read));
        Ok(Pipe {
            read,
            write,
            _big: big,
        })
    }

    /// Best effort: past fs.pipe-max-size or the user's limits the kernel refuses, and the
    /// default-size pipe still relays, in smaller steps.
    fn enlarge(pipe: &OwnedFd) -> bool {
        // SAFETY: F_SETPIPE_SZ on a pipe we own only changes its capacity.
        unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) >= 0 }
    }

    fn check(n: isize) -> io::Result<usize> {
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn splice_fd(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: plain descriptors and null offsets (both ends are streams).
        check(unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        })
    }

    /// What one small read did.
    enum Small {
        Eof,
        /// Moved n bytes; `rest` could not be sent yet; `full` means the scratch was filled.
        Moved {
            n: usize,
            rest: Vec<u8>,
            full: bool,
        },
    }

    fn relay_small(src: &TcpStream, dst: &TcpStream) -> io::Result<Small> {
        SCRATCH_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            let n = super::read_draining(src, &mut buf)?;
            if n == 0 {
                return Ok(Small::Eof);
            }
            let sent = match super::send_now(dst, &buf[..n]) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            Ok(Small::Moved {
                n,
                rest: buf[sent..n].to_vec(),
                full: n == buf.len(),
            })
        })
    }

    /// `ended` is shared by the two directions: the first to reach end of stream sets it.
    pub async fn copy(
        src: &TcpStream,
        dst: &TcpStream,
        activity: &AtomicU64,
        ended: &AtomicBool,
        on_bytes: &OnBytes,
        to_up: bool,
    ) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            src.readable().await?;
            let moved = match relay_small(src, dst) {
                Ok(Small::Eof) => break,
                Ok(Small::Moved { n, rest, full }) => {
                    // Whatever the peer could not take at once (rare: small writes to a full socket).
                    super::send_all(dst, &rest).await?;
                    if full { n + bulk(src, dst).await? } else { n }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            total += moved as u64;
            activity.fetch_add(1, Ordering::Relaxed);
            on_bytes(to_up, moved as u64);
        }
        // Pass the FIN on; the peer may already be gone, which is not an error for us. When the
        // other way has ended too, both sockets are closed as soon as this returns, and close
        // sends the FIN itself (every byte both ways has been read), so that shutdown is saved.
        if !ended.swap(true, Ordering::Relaxed) {
            // SAFETY: shutdown on a descriptor we own (through dst) only half-closes it.
            unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
        }
        Ok(total)
    }

    /// Splices until the source has nothing more right now (or hits end of stream, which the
    /// caller then sees as a readable EOF); the pipe lives only as long as this call.
    async fn bulk(src: &TcpStream, dst: &TcpStream) -> io::Result<usize> {
        let p = pipe()?;
        let mut total = 0;
        loop {
            let n = match src.try_io(Interest::READABLE, || {
                splice_fd(src.as_raw_fd(), p.write.as_raw_fd(), CHUNK)
            }) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e),
            };
            let mut left = n;
            while left > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || {
                    splice_fd(p.read.as_raw_fd(), dst.as_raw_fd(), left)
                }) {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            total += n;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn capacity(p: &Pipe) -> usize {
            // SAFETY: F_GETPIPE_SZ only reads the capacity of a pipe we own.
            let size = unsafe { libc::fcntl(p.read.as_raw_fd(), libc::F_GETPIPE_SZ) };
            usize::try_from(size).unwrap()
        }

        #[test]
        fn only_a_budget_of_pipes_is_enlarged() {
            static TWO: Budget = Budget::new(2);
            static NONE: Budget = Budget::new(0);
            let default = capacity(&pipe_within(&NONE).unwrap());
            let (a, b, c) = (
                pipe_within(&TWO).unwrap(),
                pipe_within(&TWO).unwrap(),
                pipe_within(&TWO).unwrap(),
            );
            assert_eq!((capacity(&a), capacity(&b)), (CHUNK, CHUNK));
            assert_eq!(capacity(&c), default);
            assert!(default < CHUNK);
            // A closed big pipe gives its place back; a default one had none to give.
            drop(c);
            assert_eq!(capacity(&pipe_within(&TWO).unwrap()), default);
            drop(a);
            assert_eq!(capacity(&pipe_within(&TWO).unwrap()), CHUNK);
            assert_eq!(TWO.in_use.load(Ordering::Relaxed), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of sockets over loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    async fn relay(mode: CopyMode) {
        let (mut client, proxy_down) = pair().await;
        let (proxy_up, mut server) = pair().await;
        let counted = Arc::new(AtomicU64::new(0));
        let c = counted.clone();
        let on_bytes: OnBytes = Arc::new(move |_, n| {
            c.fetch_add(n, Ordering::Relaxed);
        });
        let proxy = tokio::spawn(bidirectional(
            proxy_down,
            proxy_up,
            mode,
            Duration::from_secs(10),
            on_bytes,
        ));
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let send = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            // Half-close: the server must see EOF yet still be able to answer.
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let t = proxy.await.unwrap().unwrap();
        assert_eq!(
            t,
            Transferred {
                to_upstream: 1_000_000,
                to_downstream: 4
            }
        );
        assert_eq!(counted.load(Ordering::Relaxed), 1_000_004);
    }

    #[tokio::test]
    async fn splice_relays_both_ways_with_half_close() {
        relay(CopyMode::Splice).await;
    }

    #[tokio::test]
    async fn buffered_relays_both_ways_with_half_close() {
        relay(CopyMode::Buffered).await;
    }

    #[tokio::test]
    async fn a_short_read_waits_for_new_data_instead_of_reading_again() {
        let (mut client, proxy) = pair().await;
        client.write_all(b"hello").await.unwrap();
        proxy.readable().await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(read_draining(&proxy, &mut buf).unwrap(), 5);
        // Drained: waiting now must not finish until the peer sends more.
        let mut wait = std::pin::pin!(proxy.readable());
        assert!(futures::poll!(&mut wait).is_pending());
        client.write_all(b"more").await.unwrap();
        wait.await.unwrap();
        assert_eq!(read_draining(&proxy, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"more");
        // A read that fills the buffer may have left bytes behind: readiness stays.
        client.write_all(&[1u8; 100]).await.unwrap();
        proxy.readable().await.unwrap();
        let mut small = [0u8; 10];
        assert_eq!(read_draining(&proxy, &mut small).unwrap(), 10);
        assert!(futures::poll!(std::pin::pin!(proxy.readable())).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed() {
        let (_client, proxy_down) = pair().await;
        let (proxy_up, _server) = pair().await;
        let r = bidirectional(
            proxy_down,
            proxy_up,
            CopyMode::default(),
            Duration::from_secs(30),
            Arc::new(|_, _| {}),
        )
        .await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}

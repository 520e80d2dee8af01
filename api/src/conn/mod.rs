//! Connections: who may hold how many, and how long an idle one lives.
//!
//! A member has a fixed number of file descriptors, and raft, RocksDB and
//! the peers need some of them. So the open-file limit is split: storage
//! and this member's own connections keep `FDS_RESERVED`, the peer and
//! metrics listeners have fixed budgets, and the client listeners share
//! what is left; no listener can take another's descriptors or storage's.
//! Each listener admits connections against its budget (`Admission`): a
//! total, a smaller share per certificate identity (one hostile node agent
//! cannot take every slot), a bound on TLS handshakes in flight (each
//! holds a descriptor before anyone knows who is asking) and a smaller one
//! per source address, so one host cannot take every handshake slot;
//! a handshake must end within `HANDSHAKE_TIMEOUT_MS`. The peer listener
//! is for members: a few handshake slots are kept for addresses members
//! were seen at, and after the handshake a certificate of another role
//! gets only a small shared lane whose requests are all refused
//! (`REFUSING_CONNECTIONS_MAX`), so clients can never starve raft. Each
//! admitted connection is a `Conn`, which closes itself once it has
//! carried no request for `idle_ms`: a TLS connection that never sends the
//! HTTP/2 preface, or an HTTP/2 connection with no streams, is closed
//! rather than kept forever. Refusals are counted
//! (`secretd_connections_refused_total`) and logged once a minute per
//! listener and cap, never once each, so a flood cannot fill the disk.
//!
//! - `admission`: each listener's budget (`Limits`, `Admission`).
//! - `incoming`: accepting, handshaking and admitting connections.
//!
//! The gate every request then passes through is `gate`, above this.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::identity::Role;

mod admission;
mod incoming;

pub use admission::{
    fd_limit, member_seen_at, raise_fd_limit, source_of, Admission, HandshakeSlot, Limits, Slot,
    FDS_RESERVED, METRICS_CONNECTIONS_MAX, METRICS_IDLE_MS_MAX, PEER_CONNECTIONS_MAX,
    PEER_CONNECTIONS_PER_MEMBER_MAX, REFUSING_CONNECTIONS_MAX,
};
pub use incoming::{
    accept, plain_incoming, split_by_magic, tls_incoming, ClientCerts, HANDSHAKE_TIMEOUT_MS,
};

fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}
/// Streams in flight on one connection, and since when it has had none.
#[derive(Default)]
pub struct Streams {
    active: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl Streams {
    pub(crate) fn begin(self: &Arc<Self>) -> StreamGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }
}

/// Held by a request (then its response body) while it is in flight.
pub struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since_ms.store(now_ms(), Ordering::Release);
        }
    }
}

/// What every request on a connection carries (tonic puts it in the
/// request's extensions).
#[derive(Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub role: Role,
    /// The client certificate's common name (etcd's user name for a client
    /// without a token).
    pub common_name: Option<String>,
    pub streams: Arc<Streams>,
}

/// An admitted connection: the stream, who is on the other end, and the
/// idle timer.
pub struct Conn<S> {
    io: S,
    /// Bytes already read from `io` (to see which protocol it speaks),
    /// read again first; `head_pos` of them are consumed.
    head: Vec<u8>,
    head_pos: usize,
    info: ConnInfo,
    idle: Pin<Box<Sleep>>,
    slot: Slot,
    /// This write was put off once already (see `cork`).
    corked: bool,
}

impl<S> Conn<S> {
    pub fn new(io: S, remote: Option<SocketAddr>, role: Role, slot: Slot) -> Conn<S> {
        let idle_ms = slot.idle_ms();
        let streams = Arc::new(Streams::default());
        streams.idle_since_ms.store(now_ms(), Ordering::Release);
        Conn {
            io,
            head: Vec::new(),
            head_pos: 0,
            info: ConnInfo {
                remote,
                role,
                common_name: None,
                streams,
            },
            idle: Box::pin(tokio::time::sleep(Duration::from_millis(idle_ms))),
            slot,
            corked: false,
        }
    }

    pub fn with_common_name(mut self, cn: Option<String>) -> Conn<S> {
        self.info.common_name = cn;
        self
    }

    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Puts `head` back in front of what is still to be read.
    fn unread(mut self, mut head: Vec<u8>) -> Conn<S> {
        head.extend_from_slice(&self.head[self.head_pos..]);
        self.head = head;
        self.head_pos = 0;
        self
    }

    fn idle_ms(&self) -> u64 {
        self.slot.idle_ms()
    }

    /// Has the connection been without a request for `idle_ms`? If not,
    /// re-arms the timer for the earliest moment it could be.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> bool {
        let idle_ms = self.idle_ms();
        while self.idle.as_mut().poll(cx).is_ready() {
            let s = &self.info.streams;
            let now = now_ms();
            let next_ms = if s.active.load(Ordering::Acquire) > 0 {
                idle_ms
            } else {
                let since = s.idle_since_ms.load(Ordering::Acquire);
                let idle_for = now.saturating_sub(since);
                if idle_for >= idle_ms {
                    return true;
                }
                idle_ms - idle_for
            };
            let at = tokio::time::Instant::now() + Duration::from_millis(next_ms);
            self.idle.as_mut().reset(at);
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.check_idle(cx) {
            tracing::info!(remote = ?self.info.remote, role = %self.info.role, idle_ms = self.idle_ms(), "closing an idle connection");
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle: no request in flight",
            )));
        }
        if self.head_pos < self.head.len() {
            let n = (self.head.len() - self.head_pos).min(buf.remaining());
            let from = self.head_pos;
            buf.put_slice(&self.head[from..from + n]);
            self.head_pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S> Conn<S> {
    /// Whether to put this write off by one turn of the scheduler (the
    /// connection's task wakes itself and runs again after the tasks
    /// already queued). With other requests of this connection in flight,
    /// their answers are often ready within that turn, and HTTP/2 then
    /// writes them with this one in a single syscall. On loopback a write
    /// carries the receiver's TCP work too: writing each small answer
    /// alone cost a serializable read about a quarter of its CPU
    /// (BENCHMARKS.md). A write is put off at most once (the next attempt
    /// goes through), and never while this is the connection's only
    /// request, so a client with one request in flight waits for nothing.
    fn cork(&mut self, cx: &mut Context<'_>) -> bool {
        if std::mem::take(&mut self.corked) || self.info.streams.active.load(Ordering::Acquire) < 2
        {
            return false;
        }
        self.corked = true;
        cx.waker().wake_by_ref();
        true
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.cork(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.cork(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<S> tonic::transport::server::Connected for Conn<S> {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// TCP keepalive probes after 10 s of silence, every 5 s, 3 unanswered
/// and the connection is dead: a peer that vanished behind a partition
/// (no FIN, no RST) is noticed in about 25 s instead of never, so a
/// half-open raft stream or idle client cannot hold a slot for good.
pub fn keepalive(tcp: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::warn!(error = %e, "cannot set TCP keepalive");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::conn::admission::{Admission, Limits};

    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn conn() -> (Conn<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let adm = Admission::new("test", Limits::clients(8, 8, 60_000, 1 << 16));
        let slot = adm.admit(None).expect("a slot");
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        (Conn::new(ours, None, Role::Unauthenticated, slot), theirs)
    }

    fn write(c: &mut Conn<tokio::io::DuplexStream>, wakes: &Arc<Wakes>) -> Poll<usize> {
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let bufs = [std::io::IoSlice::new(b"answer")];
        match Pin::new(c).poll_write_vectored(&mut cx, &bufs) {
            Poll::Ready(r) => Poll::Ready(r.expect("written")),
            Poll::Pending => Poll::Pending,
        }
    }

    /// With other requests in flight, each write is put off exactly once,
    /// waking the connection's task so that it comes back to it; with one
    /// request in flight (or none), nothing is put off.
    #[tokio::test]
    async fn a_write_waits_one_turn_only_while_other_requests_are_in_flight() {
        let (mut c, mut theirs) = conn();
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let one = c.info().streams.begin();
        assert_eq!(
            write(&mut c, &wakes),
            Poll::Ready(6),
            "a lone request waits"
        );
        let two = c.info().streams.begin();
        for _ in 0..3 {
            assert_eq!(write(&mut c, &wakes), Poll::Pending);
            assert_eq!(write(&mut c, &wakes), Poll::Ready(6), "put off twice");
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3, "each put-off wakes once");
        drop((one, two));
        assert_eq!(write(&mut c, &wakes), Poll::Ready(6));
        // Everything written reached the other end, in order.
        c.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut got)
            .await
            .expect("read");
        assert_eq!(got, b"answer".repeat(5));
    }
}

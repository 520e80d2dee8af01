//! Connections: who may hold how many, how long an idle one lives, and the
//! gate every request passes through.
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
//! `Gate` is a tower layer over every listener's router: it decides each
//! request with the role matrix (`authz`), audits denials, counts the
//! connection's streams for the idle timer, and leaves a `Caller` in the
//! request for services that bind to the caller's identity.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tonic::Status;

use crate::authz::{self, Decision};
use crate::identity::{Caller, Role};
use crate::tls::{common_name, role_of};

/// File descriptors kept out of every listener's budget: RocksDB's files
/// (at most `secretd_store::db::ROCKSDB_OPEN_FILES_MAX`, 64), the raft
/// log's segments, snapshots, this member's connections to its peers
/// (two or three per peer), the audit log, and the runtime's own.
pub const FDS_RESERVED: usize = 128;

/// The peer port's budget: a member keeps a few long-lived connections to
/// each other member (raft, snapshots, key fetches).
pub const PEER_CONNECTIONS_MAX: usize = 64;
pub const PEER_CONNECTIONS_PER_MEMBER_MAX: usize = 16;
/// Peer handshakes in flight from any source; `PEER_HANDSHAKES_RESERVED`
/// more only from sources members were seen at, so a flood from many
/// addresses still leaves a restarted member a way in. With the refusing
/// lane, at most 36 of the 64 peer slots are ever held by connections
/// that are not members'.
const PEER_HANDSHAKES_MAX: usize = 24;
const PEER_HANDSHAKES_RESERVED: usize = 8;
/// Peer handshakes in flight from one source (not a member's): a member
/// opens two or three connections to each peer.
const PEER_HANDSHAKES_PER_SOURCE_MAX: usize = 8;
/// Client handshakes in flight from one source, at most (and at most a
/// quarter of the listener's handshakes).
const CLIENT_HANDSHAKES_PER_SOURCE_MAX: usize = 32;
/// Connections on the peer port whose certificate is not a member's (an
/// admin or node agent that dialled the wrong port), all together: each
/// request they send is refused with the role matrix's message, and they
/// close after `REFUSING_IDLE_MS` without one.
pub const REFUSING_CONNECTIONS_MAX: usize = 4;
const REFUSING_IDLE_MS: u64 = 5_000;
/// The metrics listeners' budget (all of them together), and the longest
/// a metrics connection may wait for its next request.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
pub const METRICS_IDLE_MS_MAX: u64 = 10_000;
/// Sources members were seen at that are remembered (least recent out).
const MEMBER_SOURCES_MAX: usize = 64;
/// A refusal is logged once per listener and cap, then at most once per
/// this interval while refusals go on (with how many were not logged).
const REFUSAL_LOG_INTERVAL_MS: u64 = 60_000;
/// Failed handshakes are logged one by one (each reason matters to an
/// operator) up to this many at once, then one a second.
const HANDSHAKE_FAILURE_LOG_BURST: u64 = 32;
const HANDSHAKE_FAILURE_LOG_INTERVAL_MS: u64 = 1_000;

/// One listener's connection budget.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once, handshakes included.
    pub total_max: usize,
    /// Connections one certificate identity may hold at once.
    pub per_identity_max: usize,
    /// TLS handshakes in flight at once, from sources members were not
    /// seen at.
    pub handshakes_max: usize,
    /// Handshakes beyond `handshakes_max` that only sources members were
    /// seen at may start.
    pub handshakes_reserved: usize,
    /// TLS handshakes in flight from one source (an IPv4 address or an
    /// IPv6 /64) members were not seen at.
    pub handshakes_per_source_max: usize,
    /// After the handshake, a certificate that is not a member's gets
    /// only the refusing lane (the peer port).
    pub members_only: bool,
    /// A connection that carries no request for this long is closed.
    pub idle_ms: u64,
}

impl Limits {
    /// The client listeners' budget: at most `total_max`, and never more
    /// than the descriptors left after `FDS_RESERVED` and the peer and
    /// metrics budgets.
    pub fn clients(total_max: usize, per_identity_max: usize, idle_ms: u64, fds: usize) -> Limits {
        let usable = fds
            .saturating_sub(FDS_RESERVED + PEER_CONNECTIONS_MAX + METRICS_CONNECTIONS_MAX)
            .max(8);
        let total_max = total_max.min(usable).max(2);
        let handshakes_max = (total_max / 4).max(1);
        Limits {
            total_max,
            per_identity_max: per_identity_max.min(total_max / 2).max(1),
            handshakes_max,
            handshakes_reserved: 0,
            handshakes_per_source_max: (handshakes_max / 4)
                .clamp(1, CLIENT_HANDSHAKES_PER_SOURCE_MAX),
            members_only: false,
            idle_ms,
        }
    }

    /// The peer listener's budget: members only, a few connections each.
    pub fn peers(idle_ms: u64) -> Limits {
        Limits {
            total_max: PEER_CONNECTIONS_MAX,
            per_identity_max: PEER_CONNECTIONS_PER_MEMBER_MAX,
            handshakes_max: PEER_HANDSHAKES_MAX,
            handshakes_reserved: PEER_HANDSHAKES_RESERVED,
            handshakes_per_source_max: PEER_HANDSHAKES_PER_SOURCE_MAX,
            members_only: true,
            idle_ms,
        }
    }

    /// The metrics listeners' budget (plain HTTP: no handshakes, no
    /// identities).
    pub fn metrics(idle_ms: u64) -> Limits {
        Limits {
            total_max: METRICS_CONNECTIONS_MAX,
            per_identity_max: 0,
            handshakes_max: 0,
            handshakes_reserved: 0,
            handshakes_per_source_max: 0,
            members_only: false,
            idle_ms: idle_ms.min(METRICS_IDLE_MS_MAX),
        }
    }
}

/// Raises this process's open-file limit to its hard limit, logs it, and
/// returns the limit now in force.
pub fn raise_fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
            return 1024;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
                lim.rlim_cur = before;
            }
        }
        tracing::info!(
            before,
            now = lim.rlim_cur,
            hard = lim.rlim_max,
            "open-file limit"
        );
        lim.rlim_cur.min(usize::MAX as u64) as usize
    }
}

/// Where a connection comes from, for per-source caps: an IPv4 address
/// (an IPv4-mapped IPv6 one included), or an IPv6 /64, since one host
/// usually holds a whole /64 and a per-address cap would be none.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Sources members were seen at (a member's certificate on the peer port,
/// or a peer this member reached over TLS), least recent first.
static MEMBER_SOURCES: Mutex<Vec<IpAddr>> = Mutex::new(Vec::new());

/// Remembers `ip` as a member's source: its handshakes may use the peer
/// port's reserved slots.
pub fn member_seen_at(ip: IpAddr) {
    let source = source_of(ip);
    let mut seen = MEMBER_SOURCES.lock();
    if seen.last() == Some(&source) {
        return;
    }
    seen.retain(|s| *s != source);
    if seen.len() >= MEMBER_SOURCES_MAX {
        seen.remove(0);
    }
    seen.push(source);
}

fn is_member_source(source: IpAddr) -> bool {
    MEMBER_SOURCES.lock().contains(&source)
}

/// Which cap refused a connection (a label of the refusal counter, and
/// the key of its log budget).
#[derive(Clone, Copy, Debug)]
enum Cap {
    Total,
    Handshakes,
    Source,
    Identity,
    MembersOnly,
    Accept,
}
const CAPS: usize = 6;

impl Cap {
    fn name(self) -> &'static str {
        match self {
            Cap::Total => "total",
            Cap::Handshakes => "handshakes",
            Cap::Source => "handshakes_per_source",
            Cap::Identity => "per_identity",
            Cap::MembersOnly => "members_only",
            Cap::Accept => "accept_error",
        }
    }
}

static REFUSED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "secretd_connections_refused_total",
        "Connections refused, by listener and by the cap that refused them.",
        &["listener", "cap"]
    )
    .expect("metric registered once")
});

/// At most `burst` log lines at once, then one per `interval_ms`; the
/// lines held back are counted and the next line says how many.
struct LogBudget {
    burst: u64,
    interval_ms: u64,
    /// (lines that may be written now, when they were last topped up,
    /// lines held back since the last one written)
    state: Mutex<(u64, u64, u64)>,
}

impl LogBudget {
    fn new(burst: u64, interval_ms: u64) -> LogBudget {
        LogBudget {
            burst,
            interval_ms,
            state: Mutex::new((burst, now_ms(), 0)),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be
    /// written now.
    fn take(&self) -> Option<u64> {
        let now = now_ms();
        let mut s = self.state.lock();
        let (tokens, at, held) = &mut *s;
        let earned = now.saturating_sub(*at) / self.interval_ms;
        if earned > 0 {
            *tokens = (*tokens + earned).min(self.burst);
            *at += earned * self.interval_ms;
        }
        if *tokens == 0 {
            *held += 1;
            return None;
        }
        *tokens -= 1;
        Some(std::mem::take(held))
    }
}

/// TLS handshakes in flight on one listener, in all and per source.
#[derive(Default)]
struct Handshakes {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// A listener's admission counters.
pub struct Admission {
    pub what: &'static str,
    pub limits: Limits,
    open: AtomicUsize,
    handshakes: Mutex<Handshakes>,
    refusing: AtomicUsize,
    per_identity: Mutex<HashMap<String, usize>>,
    refusal_logs: [LogBudget; CAPS],
    handshake_failure_logs: LogBudget,
}

fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Admission {
    pub fn new(what: &'static str, limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            what,
            limits,
            open: AtomicUsize::new(0),
            handshakes: Mutex::new(Handshakes::default()),
            refusing: AtomicUsize::new(0),
            per_identity: Mutex::new(HashMap::new()),
            refusal_logs: std::array::from_fn(|_| LogBudget::new(1, REFUSAL_LOG_INTERVAL_MS)),
            handshake_failure_logs: LogBudget::new(
                HANDSHAKE_FAILURE_LOG_BURST,
                HANDSHAKE_FAILURE_LOG_INTERVAL_MS,
            ),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a refusal; logs it if its cap has not been logged within
    /// `REFUSAL_LOG_INTERVAL_MS`.
    fn refused(&self, cap: Cap, remote: Option<SocketAddr>, why: impl FnOnce() -> String) {
        REFUSED.with_label_values(&[self.what, cap.name()]).inc();
        if let Some(not_logged) = self.refusal_logs[cap as usize].take() {
            tracing::warn!(
                listener = self.what,
                cap = cap.name(),
                ?remote,
                reason = %why(),
                refused_unlogged = not_logged,
                "refused a connection (logged once a minute per listener and cap while refusals go on; secretd_connections_refused_total counts them all)"
            );
        }
    }

    /// Logs a failed TLS handshake, within the listener's log budget.
    fn handshake_failed(&self, remote: SocketAddr, reason: &dyn std::fmt::Display) {
        if let Some(not_logged) = self.handshake_failure_logs.take() {
            tracing::warn!(listener = self.what, %remote, %reason, unlogged_before = not_logged, "refused a TLS connection");
        }
    }

    /// A slot for a new TCP connection, or `None` when the listener is
    /// full (the caller closes the socket at once).
    pub fn admit(self: &Arc<Self>, remote: Option<SocketAddr>) -> Option<Slot> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot {
            adm: self.clone(),
            identity: None,
            refusing: false,
        };
        if n >= self.limits.total_max {
            self.refused(Cap::Total, remote, || {
                format!(
                    "{} connections are open, the most this listener takes",
                    self.limits.total_max
                )
            });
            return None;
        }
        Some(slot)
    }

    /// A handshake from `remote` may start; `None` when too many are in
    /// flight, in all or from its source. Sources members were seen at
    /// are held to neither the per-source cap nor `handshakes_max`, only
    /// to `handshakes_max + handshakes_reserved`.
    pub fn handshake(self: &Arc<Self>, remote: SocketAddr) -> Option<HandshakeSlot> {
        let source = source_of(remote.ip());
        let member = self.limits.handshakes_reserved > 0 && is_member_source(source);
        let refusal = {
            let mut h = self.handshakes.lock();
            let from_source = h.per_source.get(&source).copied().unwrap_or(0);
            let max = if member {
                self.limits.handshakes_max + self.limits.handshakes_reserved
            } else {
                self.limits.handshakes_max
            };
            if !member && from_source >= self.limits.handshakes_per_source_max {
                Some((Cap::Source, self.limits.handshakes_per_source_max))
            } else if h.total >= max {
                Some((Cap::Handshakes, max))
            } else {
                h.total += 1;
                *h.per_source.entry(source).or_insert(0) += 1;
                None
            }
        };
        match refusal {
            None => Some(HandshakeSlot {
                adm: self.clone(),
                source,
            }),
            Some((cap, n)) => {
                self.refused(cap, Some(remote), || match cap {
                    Cap::Source => format!(
                        "{source} has {n} TLS handshakes in flight, the most one source may"
                    ),
                    _ => format!("{n} TLS handshakes are in flight, the most this listener takes"),
                });
                None
            }
        }
    }

    /// Charges `slot` to the identity of `role`; refuses when that
    /// identity holds its share already. Unauthenticated and anonymous
    /// connections have no identity and count only against the total. On a members-only
    /// listener another role's certificate gets the refusing lane, or
    /// nothing when the lane is full.
    pub fn bind(&self, slot: &mut Slot, role: &Role, remote: Option<SocketAddr>) -> bool {
        match role {
            Role::Unauthenticated | Role::Anonymous => return true,
            Role::Member(_) => {}
            _ if self.limits.members_only => return self.bind_refusing(slot, role, remote),
            _ => {}
        }
        let id = role.to_string();
        let mut m = self.per_identity.lock();
        let n = m.entry(id.clone()).or_insert(0);
        if *n >= self.limits.per_identity_max {
            drop(m);
            self.refused(Cap::Identity, remote, || {
                format!(
                    "{id} holds {} connections, the most one identity may",
                    self.limits.per_identity_max
                )
            });
            return false;
        }
        *n += 1;
        slot.identity = Some(id);
        drop(m);
        if self.limits.members_only {
            if let Some(r) = remote {
                member_seen_at(r.ip());
            }
        }
        true
    }

    fn bind_refusing(&self, slot: &mut Slot, role: &Role, remote: Option<SocketAddr>) -> bool {
        let n = self.refusing.fetch_add(1, Ordering::AcqRel);
        slot.refusing = true;
        let full = n >= REFUSING_CONNECTIONS_MAX;
        self.refused(Cap::MembersOnly, remote, || {
            let then = if full {
                format!("{REFUSING_CONNECTIONS_MAX} such connections are open already: closed")
            } else {
                "each of its requests is refused".to_string()
            };
            format!("a certificate of {role} on the {} port, which admits member certificates only: {then}", self.what)
        });
        !full
    }
}

/// One admitted connection's share of the budget, given back on drop.
pub struct Slot {
    adm: Arc<Admission>,
    identity: Option<String>,
    /// In the refusing lane of a members-only listener.
    refusing: bool,
}

impl Slot {
    fn idle_ms(&self) -> u64 {
        if self.refusing {
            REFUSING_IDLE_MS.min(self.adm.limits.idle_ms)
        } else {
            self.adm.limits.idle_ms
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.adm.open.fetch_sub(1, Ordering::AcqRel);
        if self.refusing {
            self.adm.refusing.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(id) = self.identity.take() {
            let mut m = self.adm.per_identity.lock();
            if let Some(n) = m.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&id);
                }
            }
        }
    }
}

/// One handshake in flight, given back on drop.
pub struct HandshakeSlot {
    adm: Arc<Admission>,
    source: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut h = self.adm.handshakes.lock();
        h.total -= 1;
        if let Some(n) = h.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                h.per_source.remove(&self.source);
            }
        }
    }
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
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

/// Splits a peer listener's connections by the protocol they speak: one
/// that opens with `magic` goes to `raw` (the raft stream, `peer_raw`),
/// any other (gRPC's HTTP/2 preface) comes out of the returned stream, its
/// first bytes put back (`Conn::unread`). A connection that sends fewer
/// bytes than the magic within `FIRST_BYTES_TIMEOUT_MS` is closed.
pub fn split_by_magic<S, In, F>(
    incoming: In,
    magic: &'static [u8],
    raw: F,
) -> impl futures::Stream<Item = std::io::Result<Conn<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    In: futures::Stream<Item = std::io::Result<Conn<S>>> + Send + 'static,
    F: Fn(Conn<S>) + Send + Sync + 'static,
{
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;
    let raw = Arc::new(raw);
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(item) = incoming.next().await {
            let Ok(mut conn) = item else { continue };
            let (conn_tx, raw) = (tx.clone(), raw.clone());
            tokio::spawn(async move {
                let mut head = vec![0u8; magic.len()];
                let read = tokio::time::timeout(
                    Duration::from_millis(FIRST_BYTES_TIMEOUT_MS),
                    conn.read_exact(&mut head),
                )
                .await;
                if !matches!(read, Ok(Ok(_))) {
                    return;
                }
                if head == magic {
                    raw(conn);
                } else {
                    let _ = conn_tx.send(Ok(conn.unread(head))).await;
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The next connection the listener's budget admits, with TCP_NODELAY
/// (`serve_with_incoming` ignores the builder's, and with Nagle on a
/// stream's next small message waited 40 ms for a delayed ACK). Accept
/// errors (EMFILE and friends) wait for descriptors to come back, logged
/// once a minute; refused connections are closed at once.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    adm: &Arc<Admission>,
) -> (tokio::net::TcpStream, SocketAddr, Slot) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                adm.refused(Cap::Accept, None, || format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        keepalive(&tcp);
        if let Some(slot) = adm.admit(Some(addr)) {
            return (tcp, addr, slot);
        }
    }
}

/// Accepted plaintext connections, admitted against `adm`.
pub fn plain_incoming(
    listener: tokio::net::TcpListener,
    adm: Arc<Admission>,
) -> impl futures::Stream<Item = std::io::Result<Conn<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let (tcp, addr, slot) = accept(&listener, &adm).await;
            let conn = Conn::new(tcp, Some(addr), Role::Unauthenticated, slot);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The gate over a listener's router (see the module comment).
#[derive(Clone, Default)]
pub struct GateLayer;

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(info) = req.extensions().get::<ConnInfo>().cloned() else {
            // Every listener builds `Conn`s; a request without one is a
            // wiring mistake, and the safe answer is no.
            tracing::error!(
                path = req.uri().path(),
                "a request arrived without connection info"
            );
            let s = Status::internal("connection without identity");
            return Box::pin(async move { Ok(s.into_http()) });
        };
        let path = req.uri().path().to_string();
        // A JSON gateway request is decided as the RPC it calls.
        let rpc = authz::gateway_rpc(&path).unwrap_or(&path);
        let decision = authz::decide(&info.role, rpc);
        if decision == Decision::Unknown && !authz::PUBLIC_PATHS.contains(&path.as_str()) {
            // Fail closed: nothing the matrix does not name is served.
            let resp = crate::gateway::not_found(req.headers()).map(tonic::body::Body::new);
            return Box::pin(refuse(req.into_body(), resp));
        }
        if let Decision::Deny(why) = decision {
            let caller = Caller {
                role: info.role.clone(),
                remote: info.remote,
                common_name: info.common_name.clone(),
                token: None,
            };
            let status = Status::permission_denied(why);
            crate::refusals::refused(&caller, &path, &status);
            // Gateway routes and plain HTTP paths get an HTTP refusal.
            let http = rpc != path || authz::HTTP_PATHS.iter().any(|(p, _)| *p == path);
            let resp = if http {
                crate::gateway::error_response(&status).map(tonic::body::Body::new)
            } else {
                status.into_http()
            };
            return Box::pin(refuse(req.into_body(), resp));
        }
        let token = auth_token(req.headers());
        req.extensions_mut().insert(Caller {
            role: info.role.clone(),
            remote: info.remote,
            common_name: info.common_name.clone(),
            token,
        });
        let guard = info.streams.begin();
        // A gRPC call (not a gateway route) is counted as etcd counts it.
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let mut call = is_grpc
            .then(|| crate::metrics::GrpcCall::start(&path))
            .flatten();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            // A trailers-only answer has its status in the headers.
            if let (Some(c), Some(st)) = (call.as_mut(), resp.headers().get("grpc-status")) {
                c.finish(st.as_bytes());
            }
            Ok(resp.map(|body| {
                tonic::body::Body::new(Guarded {
                    body,
                    call,
                    _guard: guard,
                })
            }))
        })
    }
}

/// etcd's auth token: gRPC clients send it as `token` metadata, gateway
/// clients as `Authorization` (with or without `Bearer `), as etcd reads
/// them. A value that is not text is no token (and fails as one).
fn auth_token(headers: &http::HeaderMap) -> Option<String> {
    let v = headers
        .get("token")
        .or_else(|| headers.get(http::header::AUTHORIZATION))?;
    let s = String::from_utf8_lossy(v.as_bytes());
    let s = s.strip_prefix("Bearer ").unwrap_or(&s);
    Some(s.to_string())
}

/// Request bytes a refusal reads before it answers.
const REFUSED_BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a refusal waits for them.
const REFUSED_BODY_WAIT_MS: u64 = 1_000;

/// Answers a refused request after reading (and dropping) a bounded part
/// of its body. Answering first makes HTTP/2 reset the stream while the
/// client is still sending, and curl then reports a framing error instead
/// of our 403 or 404. A body larger or slower than the bounds is cut off,
/// so a refusal costs the member little.
async fn refuse<B, E>(
    body: B,
    resp: http::Response<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, E>
where
    B: http_body::Body + Unpin,
{
    use http_body_util::BodyExt;
    let mut body = body;
    let drain = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                read += bytes::Buf::remaining(d);
            }
            if read > REFUSED_BODY_BYTES_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(REFUSED_BODY_WAIT_MS), drain).await;
    Ok(resp)
}

/// A response body that keeps its request counted until it ends.
struct Guarded {
    body: tonic::body::Body,
    /// The gRPC call's metrics, finished by the status in its trailers.
    call: Option<crate::metrics::GrpcCall>,
    _guard: StreamGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(call)) = (&polled, self.call.as_mut()) {
            if let Some(st) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                call.finish(st.as_bytes());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Time a client has to finish its TLS handshake: a member or client on
/// any working network needs two round trips and a few milliseconds of
/// CPU; a silent connection holds a handshake slot this long.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 3_000;
/// Time a connection on the peer port has, after its handshake, to say
/// which protocol it speaks (the raft stream's magic or HTTP/2's preface).
const FIRST_BYTES_TIMEOUT_MS: u64 = 3_000;
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 128;

/// What a TLS listener asks of its clients.
#[derive(Clone, Debug)]
pub enum ClientCerts {
    /// A certificate from the listener's CA; its role is the client's.
    Required,
    /// None is asked for: every client gets this role.
    NotAsked(Role),
}

/// The role of the client on a handshaken connection, and its
/// certificate's common name: from its certificate when the listener
/// requires one, else the listener's role for clients without one.
fn connection_role(
    s: &tokio_rustls::server::TlsStream<TcpStream>,
    certs: &ClientCerts,
) -> Result<(Role, Option<String>), String> {
    if let ClientCerts::NotAsked(role) = certs {
        return Ok((role.clone(), None));
    }
    let (_, conn) = s.get_ref();
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Ok((role_of(cert.as_ref())?, common_name(cert.as_ref()))),
        None => Err("a client certificate from the cluster's CA is required".to_string()),
    }
}

/// Accepted TLS connections, admitted against `adm`. Each handshake runs
/// in its own task with a time limit, so a slow or hostile client holds up
/// no one; refusals are logged with the reason (within the listener's log
/// budget). A certificate without a secretd role is refused here, before
/// any request.
pub fn tls_incoming(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    certs: ClientCerts,
    adm: Arc<Admission>,
) -> impl futures::Stream<Item = std::io::Result<Conn<tokio_rustls::server::TlsStream<TcpStream>>>>
{
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let (tcp, addr, mut slot) = accept(&listener, &adm).await;
            let Some(hs_slot) = adm.handshake(addr) else {
                continue;
            };
            let (acceptor, conn_tx, adm, certs) =
                (acceptor.clone(), tx.clone(), adm.clone(), certs.clone());
            tokio::spawn(async move {
                let hs = tokio::time::timeout(
                    Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                    acceptor.accept(tcp),
                )
                .await;
                drop(hs_slot);
                let s = match hs {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return adm.handshake_failed(addr, &e),
                    Err(_) => {
                        let why =
                            format!("the handshake did not end within {HANDSHAKE_TIMEOUT_MS} ms");
                        return adm.handshake_failed(addr, &why);
                    }
                };
                let (role, cn) = match connection_role(&s, &certs) {
                    Ok(r) => r,
                    Err(e) => return adm.handshake_failed(addr, &e),
                };
                if !adm.bind(&mut slot, &role, Some(addr)) {
                    return;
                }
                let _ = conn_tx
                    .send(Ok(Conn::new(s, Some(addr), role, slot).with_common_name(cn)))
                    .await;
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            total_max: 4,
            per_identity_max: 2,
            handshakes_max: 1,
            handshakes_reserved: 0,
            handshakes_per_source_max: 1,
            members_only: false,
            idle_ms: 1000,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_listener_and_per_identity() {
        let adm = Admission::new("test", limits());
        let mut a = adm.admit(None).unwrap();
        let mut b = adm.admit(None).unwrap();
        let mut c = adm.admit(None).unwrap();
        let node = Role::Node("n1".into());
        assert!(adm.bind(&mut a, &node, None));
        assert!(adm.bind(&mut b, &node, None));
        assert!(!adm.bind(&mut c, &node, None), "a third for one identity");
        assert!(
            adm.bind(&mut c, &Role::Admin, None),
            "another identity fits"
        );
        let d = adm.admit(None).unwrap();
        assert!(adm.admit(None).is_none(), "the listener is full");
        drop(a);
        drop(d);
        assert_eq!(adm.open(), 2);
        let mut e = adm.admit(None).unwrap();
        assert!(adm.bind(&mut e, &node, None), "a slot came back");
        let h = adm.handshake(addr("192.0.2.1:1")).unwrap();
        assert!(adm.handshake(addr("192.0.2.2:1")).is_none());
        drop(h);
        assert!(adm.handshake(addr("192.0.2.2:1")).is_some());
    }

    /// D11: one source cannot take every handshake slot, and sources
    /// members were seen at keep a reserve that no other source can use.
    #[test]
    fn handshakes_are_capped_per_source_and_members_keep_a_reserve() {
        let adm = Admission::new(
            "test",
            Limits {
                handshakes_max: 4,
                handshakes_reserved: 2,
                handshakes_per_source_max: 2,
                ..limits()
            },
        );
        let a1 = adm.handshake(addr("192.0.2.1:1000")).unwrap();
        let _a2 = adm.handshake(addr("192.0.2.1:1001")).unwrap();
        assert!(
            adm.handshake(addr("192.0.2.1:1002")).is_none(),
            "a third from one source"
        );
        // An IPv4-mapped address is the same source.
        assert!(adm.handshake(addr("[::ffff:192.0.2.1]:1003")).is_none());
        // One IPv6 /64 is one source.
        let _b1 = adm.handshake(addr("[2001:db8:0:1::1]:1")).unwrap();
        let _b2 = adm.handshake(addr("[2001:db8:0:1::2]:1")).unwrap();
        assert!(adm.handshake(addr("[2001:db8:0:1:ffff::3]:1")).is_none());
        // The listener's own cap (4) is reached: a new source is refused.
        assert!(adm.handshake(addr("192.0.2.9:1")).is_none());
        // A member's source gets the reserve, and only the reserve.
        member_seen_at("198.51.100.7".parse().unwrap());
        let m1 = adm.handshake(addr("198.51.100.7:1")).unwrap();
        let m2 = adm.handshake(addr("198.51.100.7:2")).unwrap();
        assert!(adm.handshake(addr("198.51.100.7:3")).is_none());
        drop(a1);
        assert!(
            adm.handshake(addr("192.0.2.9:1")).is_none(),
            "members hold the reserve, so the listener is still over its cap for others"
        );
        drop((m1, m2));
        assert!(adm.handshake(addr("192.0.2.9:1")).is_some());
    }

    /// D11: on the peer port, only members' certificates hold slots past
    /// the handshake; other roles share a small lane whose requests are
    /// refused, and close soon when idle.
    #[test]
    fn the_peer_port_keeps_its_slots_for_members() {
        let adm = Admission::new("peer", Limits::peers(120_000));
        let mut lane = Vec::new();
        for i in 0..REFUSING_CONNECTIONS_MAX {
            let mut s = adm.admit(None).unwrap();
            let role = if i % 2 == 0 {
                Role::Admin
            } else {
                Role::Node("n1".into())
            };
            assert!(adm.bind(&mut s, &role, Some(addr("192.0.2.5:1"))));
            assert_eq!(s.idle_ms(), REFUSING_IDLE_MS);
            lane.push(s);
        }
        let mut s = adm.admit(None).unwrap();
        assert!(
            !adm.bind(&mut s, &Role::Admin, Some(addr("192.0.2.5:2"))),
            "the lane is full"
        );
        drop(s);
        assert!(!is_member_source("203.0.113.4".parse().unwrap()));
        for _ in 0..PEER_CONNECTIONS_PER_MEMBER_MAX {
            let mut s = adm.admit(None).unwrap();
            assert!(adm.bind(
                &mut s,
                &Role::Member("n2".into()),
                Some(addr("203.0.113.4:7"))
            ));
            assert_eq!(s.idle_ms(), 120_000);
            lane.push(s);
        }
        assert!(is_member_source("203.0.113.4".parse().unwrap()));
        lane.clear();
        assert_eq!(adm.open(), 0);
        assert_eq!(adm.refusing.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn log_budget_writes_a_burst_then_one_per_interval() {
        let b = LogBudget::new(2, 60_000);
        assert_eq!(
            (b.take(), b.take(), b.take(), b.take()),
            (Some(0), Some(0), None, None)
        );
        let b = LogBudget::new(1, 20);
        assert_eq!((b.take(), b.take()), (Some(0), None));
        // Polls until the next interval (20 ms) begins; 10 s is the bound.
        let deadline = Instant::now() + Duration::from_secs(10);
        let held = loop {
            if let Some(n) = b.take() {
                break n;
            }
            assert!(
                Instant::now() < deadline,
                "no line allowed after an interval"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(held >= 1, "the next line says how many were held back");
    }

    /// D19: the client listeners get what is left after storage and the
    /// peer and metrics listeners.
    #[test]
    fn client_budget_leaves_room_for_peers_metrics_and_storage() {
        let l = Limits::clients(4096, 1024, 1000, 256);
        assert_eq!(
            l.total_max,
            256 - FDS_RESERVED - PEER_CONNECTIONS_MAX - METRICS_CONNECTIONS_MAX
        );
        assert!(l.per_identity_max <= l.total_max / 2);
        assert!(l.handshakes_per_source_max < l.handshakes_max);
        let big = Limits::clients(4096, 1024, 1000, 1 << 20);
        assert_eq!((big.total_max, big.per_identity_max), (4096, 1024));
        assert_eq!(
            big.handshakes_per_source_max,
            CLIENT_HANDSHAKES_PER_SOURCE_MAX
        );
        assert_eq!(Limits::metrics(120_000).idle_ms, METRICS_IDLE_MS_MAX);
        assert_eq!(Limits::metrics(3_000).idle_ms, 3_000);
    }
}

//! A listener's admission budget: how many connections it may hold, how
//! many per certificate identity and per source, how many TLS handshakes
//! at once, and how refusals are counted and logged. The numbers are
//! split from the process's open-file limit (`raise_fd_limit`,
//! `FDS_RESERVED`), so no listener can take another's descriptors or
//! storage's; the module comment of `conn` says why each cap exists.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::now_ms;
use crate::identity::Role;

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

/// This process's open-file limit, unchanged (an embedded member's, whose
/// program owns its limits); 1024 if it cannot be read.
pub fn fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur.min(usize::MAX as u64) as usize
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
pub(super) enum Cap {
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
    pub(super) fn refused(
        &self,
        cap: Cap,
        remote: Option<SocketAddr>,
        why: impl FnOnce() -> String,
    ) {
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
    pub(super) fn handshake_failed(&self, remote: SocketAddr, reason: &dyn std::fmt::Display) {
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
    pub(super) fn idle_ms(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

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

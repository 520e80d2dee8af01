//! What etcd's Lock and Election services share (`lock.rs`, `election.rs`).
//!
//! etcd serves both through its own client library's `concurrency`
//! package (Mutex, Election, waitDeletes) over an in-process client; this
//! module runs the same steps against the store, so the keys, revisions
//! and answers are the ones a client doing it by hand would see, and an
//! etcdctl `lock` or `elect` (which builds them by hand) contends with
//! these services on equal terms. Every step goes through [`Acting`], as
//! the caller's etcd user and kept out of the reserved range, exactly as
//! the same KV request would.
//!
//! Waiting is the expensive part a caller controls, so it is bounded per
//! member ([`Limits`]), and so are names and keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use secretd_store::mvcc::prefix_end;
use secretd_store::node::Node;
use secretd_store::watch::{WatchSpec, WatcherKey};
use tonic::{Code, Status};

use crate::errors::status;
use crate::etcd::auth::Who;
use crate::etcd::reserved;
use crate::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
    response_op::Response as OpResponse,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};

/// TTL of the lease Lock and Campaign grant when the request names none
/// (etcd's `concurrency` session default; nothing renews it).
pub const SESSION_TTL_SECS: i64 = 60;
/// Longest lock or election name.
pub const NAME_BYTES_MAX: usize = 4096;
/// Longest key Unlock, Proclaim and Resign take: a name, `/` and a lease
/// id as Go prints it (a sign and 16 hex digits).
pub const KEY_BYTES_MAX: usize = NAME_BYTES_MAX + 1 + 17;
/// Lock and Campaign calls in progress on one member (each may wait with
/// two watchers for as long as the caller likes).
pub const WAITERS_MAX: usize = 4096;
/// Observe streams open on one member.
pub const OBSERVERS_MAX: usize = 1024;
/// Hub messages a waiter's inbox holds (it watches two keys for deletes
/// only) before its watchers catch up from storage instead.
const WAIT_EVENTS_MAX: usize = 16;

/// etcd serves these services through its client library, which turns
/// each of etcd's own errors into a type gRPC does not know: the caller
/// sees code Unknown with etcd's message (clients match the message).
pub fn via_client(s: Status) -> Status {
    Status::new(Code::Unknown, s.message().to_string())
}

/// etcd's errors as its `concurrency` package words them (code Unknown).
pub fn client_error(message: &str) -> Status {
    Status::new(Code::Unknown, message.to_string())
}

/// A name too long to keep for a wait or a stream.
pub fn check_name(what: &str, name: &[u8]) -> Result<(), Status> {
    check_len(what, "name", name, NAME_BYTES_MAX)
}

pub fn check_key(what: &str, key: &[u8]) -> Result<(), Status> {
    check_len(what, "key", key, KEY_BYTES_MAX)
}

fn check_len(what: &str, field: &str, bytes: &[u8], max: usize) -> Result<(), Status> {
    if bytes.len() > max {
        return Err(Status::invalid_argument(format!(
            "etcdserver: {what} {field} is {} bytes, longer than {max}",
            bytes.len()
        )));
    }
    Ok(())
}

/// `<name>/`: every lock or campaign key of `name` is under it.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// `<prefix><lease>`, the lease as Go's `%x` prints an int64 (a sign, no
/// padding), as etcd names the key.
pub fn lease_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let sign = if lease < 0 { "-" } else { "" };
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{sign}{:x}", lease.unsigned_abs()).as_bytes());
    k
}

/// Counts of waiters and observers, one per member (shared by gRPC and
/// the gateway).
#[derive(Default)]
pub struct Limits {
    waiters: Arc<AtomicUsize>,
    observers: Arc<AtomicUsize>,
}

/// A place counted in [`Limits`], given back on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(count.clone()))
}

impl Limits {
    pub fn waiter(&self) -> Result<Slot, Status> {
        take(&self.waiters, WAITERS_MAX).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "etcdserver: too many Lock and Campaign calls waiting on this member \
                 (at most {WAITERS_MAX}); retry later or through another member"
            ))
        })
    }

    pub fn observer(&self) -> Result<Slot, Status> {
        take(&self.observers, OBSERVERS_MAX).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "etcdserver: too many Observe streams on this member (at most {OBSERVERS_MAX})"
            ))
        })
    }
}

/// The caller's etcd user, doing what a client would do by hand: each
/// request kept out of the reserved range, checked as KV checks it, and
/// proposed under the auth revision it was checked at. A wait can outlive
/// an auth change: each step checks against the state of now.
pub struct Acting {
    pub node: Arc<Node>,
    who: Who,
}

impl Acting {
    pub fn new(node: Arc<Node>, who: Who) -> Acting {
        Acting { node, who }
    }

    /// The same user against the auth state of now, if it changed.
    async fn fresh(&mut self) -> Result<(), Status> {
        if self.who.recheck(&self.node).is_err() {
            self.who = self.who.refresh(&self.node).await.map_err(via_client)?;
        }
        Ok(())
    }

    /// May the user read `[key, end)` now? (For watches and streams.)
    pub async fn may_read(&mut self, key: &[u8], end: &[u8]) -> Result<(), Status> {
        self.fresh().await?;
        self.who.read(key, end).map_err(via_client)
    }

    pub async fn range(&mut self, mut r: RangeRequest) -> Result<RangeResponse, Status> {
        reserved::range(&mut r)?;
        self.fresh().await?;
        self.who.range(&r).map_err(via_client)?;
        let resp = self
            .node
            .range(r)
            .await
            .map_err(|e| via_client(status(e)))?;
        self.who.recheck(&self.node).map_err(via_client)?;
        Ok(resp)
    }

    pub async fn txn(&mut self, mut t: TxnRequest) -> Result<TxnResponse, Status> {
        reserved::txn(&mut t)?;
        self.fresh().await?;
        self.who
            .txn(&t, &self.node.mvcc().lessor())
            .map_err(via_client)?;
        let read_only = secretd_store::mvcc::txn_checks::is_read_only(&t);
        let resp = self
            .node
            .txn(t, self.who.fence())
            .await
            .map_err(|e| via_client(status(e)))?;
        if read_only {
            self.who.recheck(&self.node).map_err(via_client)?;
        }
        Ok(resp)
    }

    pub async fn delete(&mut self, key: Vec<u8>) -> Result<ResponseHeader, Status> {
        let mut d = DeleteRangeRequest {
            key,
            ..Default::default()
        };
        reserved::delete(&mut d)?;
        self.fresh().await?;
        self.who.delete(&d).map_err(via_client)?;
        let resp = self
            .node
            .delete_range(d, self.who.fence())
            .await
            .map_err(|e| via_client(status(e)))?;
        Ok(header_of(resp.header))
    }

    /// etcd's session: the caller's lease, or a new one of
    /// [`SESSION_TTL_SECS`] for lease 0 (which nobody renews).
    pub async fn session_lease(&mut self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        self.fresh().await?;
        // A grant needs no permission: etcd checks nothing for it at apply.
        let resp = self
            .node
            .lease_grant(SESSION_TTL_SECS, 0, None)
            .await
            .map_err(|e| via_client(status(e)))?;
        Ok(resp.id)
    }

    /// A guard that undoes `undo` if the call ends before `disarm`
    /// (the client went away): etcd deletes a waiter's key when its
    /// context is cancelled.
    pub fn undo_on_drop(&self, undo: Undo) -> UndoGuard {
        UndoGuard(Some((self.node.clone(), self.who.clone(), undo)))
    }
}

fn header_of(h: Option<ResponseHeader>) -> ResponseHeader {
    h.unwrap_or_default()
}

/// What a waiter leaves behind if it gives up: its key.
#[derive(Clone, Debug)]
pub enum Undo {
    /// Lock: delete the key.
    Delete(Vec<u8>),
    /// Campaign: etcd's Resign, delete the key if it still has this
    /// create revision.
    Resign { key: Vec<u8>, rev: i64 },
}

impl Undo {
    pub async fn run(self, a: &mut Acting) -> Result<ResponseHeader, Status> {
        match self {
            Undo::Delete(key) => a.delete(key).await,
            Undo::Resign { key, rev } => resign(a, key, rev).await,
        }
    }
}

/// Runs its `Undo` when dropped armed (from a task of its own: a dropped
/// future cannot wait).
pub struct UndoGuard(Option<(Arc<Node>, Who, Undo)>);

impl UndoGuard {
    pub fn disarm(&mut self) {
        self.0 = None;
    }

    /// Undoes now, when the call fails.
    pub async fn run_now(&mut self, a: &mut Acting) {
        if let Some((_, _, undo)) = self.0.take() {
            if let Err(e) = undo.clone().run(a).await {
                tracing::info!(error = %e.message(), ?undo, "could not remove a failed waiter's key; its lease will");
            }
        }
    }
}

impl Drop for UndoGuard {
    fn drop(&mut self) {
        let Some((node, who, undo)) = self.0.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut a = Acting::new(node, who);
            if let Err(e) = undo.clone().run(&mut a).await {
                tracing::info!(error = %e.message(), ?undo, "could not remove a departed waiter's key; its lease will");
            }
        });
    }
}

fn compare_create(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

fn op(r: Op) -> RequestOp {
    RequestOp { request: Some(r) }
}

pub fn get(key: &[u8]) -> RequestOp {
    op(Op::RequestRange(RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }))
}

pub fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    op(Op::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    }))
}

/// The oldest key under `prefix` (etcd's `WithFirstCreate`): the lock's
/// holder, the election's leader.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    by_create(prefix, SortOrder::Ascend, 0)
}

/// The newest key under `prefix` created at or before `max_create_rev`
/// (etcd's `WithLastCreate` + `WithMaxCreateRev`): the one to wait for.
fn last_created_until(prefix: &[u8], max_create_rev: i64) -> RangeRequest {
    by_create(prefix, SortOrder::Descend, max_create_rev)
}

/// The first key under `prefix` in create order (0: no bound).
fn by_create(prefix: &[u8], order: SortOrder, max_create_rev: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

/// Put `key` unless it exists (etcd's "create revision = 0" compare),
/// then `then` either way; `else` reads the existing key first.
pub fn create_or_get(key: &[u8], value: &[u8], lease: i64, then: &[RequestOp]) -> TxnRequest {
    let mut success = vec![put(key, value, lease)];
    success.extend_from_slice(then);
    let mut failure = vec![get(key)];
    failure.extend_from_slice(then);
    TxnRequest {
        compare: vec![compare_create(key, 0)],
        success,
        failure,
    }
}

/// The `i`th response of a txn, as a range's.
pub fn range_at(resp: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match resp.responses.get(i)?.response.as_ref()? {
        OpResponse::ResponseRange(r) => Some(r),
        _ => None,
    }
}

/// etcd's Proclaim: `key`'s value becomes `value` if it still has create
/// revision `rev`; `Ok(None)` if it does not (no longer the leader).
pub async fn proclaim(
    a: &mut Acting,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<Option<ResponseHeader>, Status> {
    let t = TxnRequest {
        compare: vec![compare_create(key, rev)],
        success: vec![put(key, value, lease)],
        failure: vec![],
    };
    let resp = a.txn(t).await?;
    Ok(resp.succeeded.then(|| header_of(resp.header)))
}

/// etcd's Resign: deletes `key` if it still has create revision `rev`.
pub async fn resign(a: &mut Acting, key: Vec<u8>, rev: i64) -> Result<ResponseHeader, Status> {
    let t = TxnRequest {
        compare: vec![compare_create(&key, rev)],
        success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        }))],
        failure: vec![],
    };
    Ok(header_of(a.txn(t).await?.header))
}

/// How a wait for the keys ahead ended.
pub enum WaitEnd {
    /// No key ahead is left and the caller's own still stands, at the
    /// revision of this header.
    Clear(ResponseHeader),
    /// The caller's own key is gone (its lease expired or was revoked,
    /// or someone deleted it): it holds nothing and waits for nothing.
    MineGone,
}

/// etcd's `waitDeletes`: returns once no key under `prefix` created at or
/// before `mine_rev - 1` is left, watching only the newest of them each
/// round (its delete is the one that can make the caller next), so a
/// release wakes one waiter, not all. Each round reads the key ahead and
/// the caller's own key at one revision and watches both from the next:
/// unlike etcd (a TODO in its Mutex), a waiter whose own key goes away
/// stops at once instead of waiting for everyone ahead.
pub async fn wait_turn(
    a: &mut Acting,
    prefix: &[u8],
    mine: &[u8],
    mine_rev: i64,
) -> Result<WaitEnd, Status> {
    loop {
        let t = TxnRequest {
            compare: vec![],
            success: vec![
                op(Op::RequestRange(last_created_until(prefix, mine_rev - 1))),
                get(mine),
            ],
            failure: vec![],
        };
        let resp = a.txn(t).await?;
        let header = header_of(resp.header);
        let ahead = range_at(&resp, 0).and_then(|r| r.kvs.first());
        let own = range_at(&resp, 1).and_then(|r| r.kvs.first());
        if own.is_none_or(|kv| kv.create_revision != mine_rev) {
            return Ok(WaitEnd::MineGone);
        }
        let Some(ahead) = ahead else {
            return Ok(WaitEnd::Clear(header));
        };
        let ahead = ahead.key.clone();
        match wait_delete(a, &ahead, mine, header.revision + 1).await? {
            Deleted::Ahead | Deleted::Unknown => continue,
            Deleted::Mine => return Ok(WaitEnd::MineGone),
        }
    }
}

enum Deleted {
    Ahead,
    Mine,
    /// The watch could not say (compacted past its start): read again.
    Unknown,
}

/// Watchers in the hub, cancelled on drop.
pub struct HubWatchers<'a> {
    node: &'a Node,
    keys: Vec<WatcherKey>,
}

impl<'a> HubWatchers<'a> {
    pub fn new(node: &'a Node) -> Self {
        HubWatchers {
            node,
            keys: Vec::new(),
        }
    }

    /// Registers one; `Ok(false)` if `spec` starts before the compacted
    /// revision.
    pub fn add(
        &mut self,
        spec: WatchSpec,
        id: i64,
        sink: secretd_store::watch::WatchSink,
    ) -> Result<bool, Status> {
        match self.node.hub().watch(spec, id, sink) {
            Ok(k) => {
                self.keys.push(k);
                Ok(true)
            }
            Err(secretd_store::StoreError::Compacted { .. }) => Ok(false),
            Err(e) => Err(via_client(status(e))),
        }
    }
}

impl Drop for HubWatchers<'_> {
    fn drop(&mut self) {
        for k in &self.keys {
            self.node.hub().cancel(*k);
        }
    }
}

/// Waits, from revision `from`, for the delete of `ahead` or of `mine`.
async fn wait_delete(
    a: &mut Acting,
    ahead: &[u8],
    mine: &[u8],
    from: i64,
) -> Result<Deleted, Status> {
    const AHEAD: i64 = 0;
    const MINE: i64 = 1;
    // Both keys are under the prefix the caller may read (checked by the
    // read that found them); checked again in case auth changed since.
    a.may_read(ahead, &[]).await?;
    a.may_read(mine, &[]).await?;
    let node = a.node.clone();
    let (sink, mut inbox) = secretd_store::watch::inbox(WAIT_EVENTS_MAX);
    let mut watchers = HubWatchers::new(&node);
    let deletes = |key: &[u8]| WatchSpec {
        key: key.to_vec(),
        start_revision: from,
        no_put: true,
        ..Default::default()
    };
    if !watchers.add(deletes(ahead), AHEAD, sink.clone())?
        || !watchers.add(deletes(mine), MINE, sink)?
    {
        return Ok(Deleted::Unknown);
    }
    loop {
        let Some(batch) = inbox.recv().await else {
            return Ok(Deleted::Unknown);
        };
        let mut ahead_gone = false;
        for msg in batch {
            if msg.compact_revision > 0 {
                return Ok(Deleted::Unknown);
            }
            if msg.events.is_empty() {
                continue;
            }
            match msg.watch_id {
                MINE => return Ok(Deleted::Mine),
                _ => ahead_gone = true,
            }
        }
        if ahead_gone {
            return Ok(Deleted::Ahead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_as_etcd_names_them() {
        assert_eq!(lease_key(b"l/", 0x694d7e4b0a1c8b2f), b"l/694d7e4b0a1c8b2f");
        assert_eq!(lease_key(b"l/", 10), b"l/a");
        assert_eq!(lease_key(b"l/", -1), b"l/-1");
        assert_eq!(lease_key(b"l/", i64::MIN), b"l/-8000000000000000");
        let longest = lease_key(&prefix_of(&[b'n'; NAME_BYTES_MAX]), i64::MIN);
        assert_eq!(longest.len(), KEY_BYTES_MAX);
        assert_eq!(prefix_of(b""), b"/");
    }

    #[test]
    fn names_and_keys_past_their_limits_are_refused() {
        check_name("lock", &[b'n'; NAME_BYTES_MAX]).unwrap();
        let e = check_name("lock", &[b'n'; NAME_BYTES_MAX + 1]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "etcdserver: lock name is 4097 bytes, longer than 4096"
        );
        check_key("lock", &[b'k'; KEY_BYTES_MAX]).unwrap();
        assert!(check_key("lock", &[b'k'; KEY_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn slots_stop_at_their_limit_and_come_back() {
        let l = Limits::default();
        let held: Vec<Slot> = (0..WAITERS_MAX).map(|_| l.waiter().unwrap()).collect();
        let e = l.waiter().err().unwrap();
        assert_eq!(e.code(), Code::ResourceExhausted);
        // Observers are counted apart.
        let o: Vec<Slot> = (0..OBSERVERS_MAX).map(|_| l.observer().unwrap()).collect();
        assert!(l.observer().is_err());
        drop(held);
        drop(o);
        l.waiter().unwrap();
        l.observer().unwrap();
    }
}

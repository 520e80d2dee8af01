//! The workload: clients doing reads, writes and compare-and-sets on a few
//! registers (one key each) through any running member, one operation at
//! a time each, and a lease client that keeps one lease alive. Operations
//! go in through `Node::submit` like a gRPC request would, and their
//! outcomes become a history for the linearizability checker.

use secretd_jepsen::check::history::{Op, Outcome};
use secretd_jepsen::check::model::{RegisterOp, RegisterOut};
use secretd_store::mvcc::WriteResult;
use secretd_store::node::{Node, Reply};
use secretd_store::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op, Compare, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use secretd_store::pb::internal::internal_request::Request;
use secretd_store::StoreError;
use tokio::sync::oneshot::{self, error::TryRecvError};

pub const KEYS: usize = 3;
/// How long a client waits before it calls an operation's outcome unknown.
pub const OP_TIMEOUT_MS: u64 = 1_500;
/// The lease's TTL and how often it is kept alive.
pub const LEASE_TTL_S: i64 = 5;
pub const LEASE_KEEPALIVE_MS: u64 = 500;

pub fn key_name(key: usize) -> Vec<u8> {
    format!("r{key}").into_bytes()
}

/// What a client waits for.
pub enum Waiting {
    Write(Reply<WriteResult>),
    Read(oneshot::Receiver<secretd_store::Result<()>>),
}

/// An operation in flight.
pub struct Pending {
    pub key: usize,
    pub input: RegisterOp,
    pub invoke: u64,
    pub member: usize,
    pub deadline_ms: u64,
    pub waiting: Waiting,
}

/// How an operation in flight stands.
pub enum Poll {
    Waiting,
    Done(RegisterOut),
    /// It never happened (refused before it was proposed, or a read).
    Failed,
    /// It may or may not have happened.
    Unknown,
}

/// The request an operation proposes (reads propose nothing).
pub fn request(key: usize, input: &RegisterOp) -> Option<Request> {
    let put = |v: i64| PutRequest {
        key: key_name(key),
        value: v.to_string().into_bytes(),
        ..Default::default()
    };
    match input {
        RegisterOp::Read => None,
        RegisterOp::Write(v) => Some(Request::Put(put(*v))),
        RegisterOp::Cas(from, to) => Some(Request::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: key_name(key),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::Value(from.to_string().into_bytes())),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put(*to))),
            }],
            failure: Vec::new(),
        })),
    }
}

/// Checks an operation in flight on `node` (the member it went to).
pub fn poll(p: &mut Pending, node: Option<&Node>) -> Poll {
    match &mut p.waiting {
        Waiting::Write(rx) => match rx.try_recv() {
            Err(TryRecvError::Empty) => Poll::Waiting,
            Err(TryRecvError::Closed) => Poll::Unknown,
            Ok(Ok((WriteResult::Put(_), _))) => Poll::Done(RegisterOut::Done),
            Ok(Ok((WriteResult::Txn(t), _))) => Poll::Done(RegisterOut::Cas(t.succeeded)),
            Ok(Ok(_)) => Poll::Unknown,
            // Raft refused it before it entered the log.
            Ok(Err(StoreError::NoLeader)) => Poll::Failed,
            Ok(Err(_)) => Poll::Unknown,
        },
        Waiting::Read(rx) => match rx.try_recv() {
            Err(TryRecvError::Empty) => Poll::Waiting,
            Ok(Ok(())) => match node.map(|n| read(n, p.key)) {
                Some(Ok(v)) => Poll::Done(RegisterOut::Value(v)),
                _ => Poll::Failed,
            },
            _ => Poll::Failed,
        },
    }
}

/// The key's value on `node` now (after its ReadIndex was released).
fn read(node: &Node, key: usize) -> secretd_store::Result<Option<i64>> {
    let (resp, _) = node.mvcc().range(&RangeRequest {
        key: key_name(key),
        ..Default::default()
    })?;
    Ok(resp.kvs.first().map(|kv| {
        std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("the simulation writes integers only")
    }))
}

/// Operations of the history, by key.
#[derive(Default)]
pub struct History {
    pub by_key: Vec<Vec<Op<RegisterOp, RegisterOut>>>,
    /// Positions in the history (any increasing clock).
    pub clock: u64,
}

impl History {
    pub fn new() -> History {
        History {
            by_key: vec![Vec::new(); KEYS],
            clock: 0,
        }
    }

    pub fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn record(&mut self, process: u64, p: Pending, outcome: Option<Outcome<RegisterOut>>) {
        let Some(outcome) = outcome else { return };
        let complete = self.tick();
        let line = self.by_key[p.key].len() + 1;
        self.by_key[p.key].push(Op {
            process,
            input: p.input,
            outcome,
            invoke: p.invoke,
            complete,
            line,
        });
    }

    pub fn len(&self) -> usize {
        self.by_key.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The lease client's requests.
pub fn lease_grant(id: i64) -> Request {
    Request::LeaseGrant(LeaseGrantRequest {
        ttl: LEASE_TTL_S,
        id,
    })
}

pub fn lease_renew(id: i64) -> Request {
    Request::LeaseRenew(LeaseKeepAliveRequest { id })
}

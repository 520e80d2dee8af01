//! etcd's Range over the key index: which keys, in which order, counted
//! how, and which records are read for the answer. Everything the index
//! knows (a key's revisions, creation and version) is decided before any
//! record is read: filters on revisions and sorts on anything but the
//! value pick the answer from the index, so a limited answer reads, and
//! charges against the member's answer budget, only what it returns.

use crate::answers::Meter;
use crate::error::{Result, StoreError};
use crate::pb::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    RangeRequest, RangeResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::revision::Rev;

use super::index::{self, Index};

/// A key's current lease, read from the lessor (0: none).
pub(crate) type LeaseOf<'a> = &'a dyn Fn(&[u8]) -> i64;

/// Where a Range gets what the index does not hold, and what it charges.
pub(crate) struct Source<'a> {
    /// A record, by its revision.
    pub fetch: &'a dyn Fn(Rev) -> Result<KeyValue>,
    /// With it, a keys-only Range answers a key whose newest record is the
    /// one it returns from the index and the lessor, without reading the
    /// record: every lease change is made after the index change of the
    /// same key (puts, deletes, and revokes, which delete the keys before
    /// dropping the lease), so while the index read lock is held, a key
    /// with no newer revision in the index holds the lease its newest
    /// record names.
    pub lease_of: Option<LeaseOf<'a>>,
    /// What the answer is charged to, as each record is rendered: the
    /// member's budget for a read; inside apply, never that (a refusal
    /// must be the same on every member), but a write's `Allowance` while
    /// its answer is measured before it writes (`txn::Writer`).
    pub charge: Option<&'a dyn Meter>,
}

impl Source<'_> {
    /// Only records, uncharged: apply's reads and its compares.
    pub(crate) fn records(fetch: &dyn Fn(Rev) -> Result<KeyValue>) -> Source<'_> {
        Source {
            fetch,
            lease_of: None,
            charge: None,
        }
    }
}

/// A key alive at the read revision: its key, what the index found, and
/// whether that is the key's newest record.
type Alive<'k> = (&'k Vec<u8>, index::Found, bool);

/// What the index decides: the keys to read, in answer order, etcd's
/// `count`, and whether more matched than the limit let through.
struct Picked<'k> {
    found: Vec<Alive<'k>>,
    count: usize,
    more: bool,
}

/// etcd's Range over `index` as of revision `current`.
pub(crate) fn range_at(
    index: &Index,
    req: &RangeRequest,
    current: i64,
    src: &Source,
) -> Result<RangeResponse> {
    let at = read_revision(index, req, current)?;
    let (order, target) = sort_of(req);
    let by_value = order != SortOrder::None && target == SortTarget::Value;
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let picked = pick(index, req, at, (order, target), limit)?;
    let mut resp = RangeResponse {
        header: None,
        kvs: Vec::new(),
        more: picked.more,
        count: picked.count as i64,
    };
    if req.count_only {
        return Ok(resp);
    }
    let mut kvs = render(req, &picked.found, src, by_value)?;
    if by_value {
        sort_by_value(&mut kvs, order == SortOrder::Descend);
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            resp.more = true;
        }
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    resp.kvs = kvs;
    Ok(resp)
}

/// The keys the answer holds, decided on the index alone (a sort by
/// value is left to `range_at`, after the records are read).
fn pick<'k>(
    index: &'k Index,
    req: &'k RangeRequest,
    at: i64,
    (order, target): (SortOrder, SortTarget),
    limit: usize,
) -> Result<Picked<'k>> {
    let mut alive = index
        .range(&req.key, &req.range_end)
        .filter_map(|(k, ki)| ki.get(at).map(|f| (k, f, ki.newest() == Some(f.modified))));
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    if req.count_only {
        let count = alive.count();
        return Ok(Picked {
            found: Vec::new(),
            count,
            more: false,
        });
    }
    // In index order with nothing to filter, keep only what is returned
    // and count the rest: a limit of 1 over a million keys does not
    // collect a million entries.
    if limit > 0 && order == SortOrder::None && !filtered {
        let found: Vec<_> = alive.by_ref().take(limit).collect();
        let count = found.len() + alive.count();
        return Ok(Picked {
            more: count > limit,
            found,
            count,
        });
    }
    // etcd counts the range before its filters.
    let mut found: Vec<Alive> = alive.collect();
    let count = found.len();
    if filtered {
        found.retain(|(_, f, _)| passes_filters(req, f.modified.main, f.created));
    }
    let mut more = false;
    if !(order != SortOrder::None && target == SortTarget::Value) {
        if order != SortOrder::None {
            sort_found(&mut found, order == SortOrder::Descend, target);
        }
        if limit > 0 && found.len() > limit {
            found.truncate(limit);
            more = true;
        }
    }
    Ok(Picked { found, count, more })
}

/// The records of `found`, each charged as it is rendered. A keys-only
/// answer takes a key's newest record from the index and the lessor.
fn render(
    req: &RangeRequest,
    found: &[Alive],
    src: &Source,
    by_value: bool,
) -> Result<Vec<KeyValue>> {
    // Sorting by value needs the values.
    let from_index = src.lease_of.filter(|_| req.keys_only && !by_value);
    let mut kvs = Vec::with_capacity(found.len());
    for &(key, f, newest) in found {
        let kv = match from_index {
            Some(lease_of) if newest => KeyValue {
                key: key.clone(),
                create_revision: f.created,
                mod_revision: f.modified.main,
                version: f.version,
                value: Vec::new(),
                lease: lease_of(key),
            },
            _ => (src.fetch)(f.modified)?,
        };
        if let Some(c) = src.charge {
            c.add(kv.key.len() + kv.value.len() + crate::answers::RECORD_OVERHEAD_BYTES)?;
        }
        kvs.push(kv);
    }
    Ok(kvs)
}

/// The revision a Range reads at: its own, or `current` for 0; refused if
/// in the future or compacted away.
fn read_revision(index: &Index, req: &RangeRequest, current: i64) -> Result<i64> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    let at = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if at > current {
        return Err(StoreError::FutureRevision);
    }
    if at < index.compact_rev {
        return Err(StoreError::Compacted {
            compact_revision: index.compact_rev,
        });
    }
    Ok(at)
}

/// etcd's rule: a sort target other than the key, with no order, sorts
/// ascending.
fn sort_of(req: &RangeRequest) -> (SortOrder, SortTarget) {
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    (order, target)
}

/// The Range's min/max mod and create revision filters (0: no bound).
fn passes_filters(req: &RangeRequest, mod_revision: i64, create_revision: i64) -> bool {
    !((req.min_mod_revision != 0 && mod_revision < req.min_mod_revision)
        || (req.max_mod_revision != 0 && mod_revision > req.max_mod_revision)
        || (req.min_create_revision != 0 && create_revision < req.min_create_revision)
        || (req.max_create_revision != 0 && create_revision > req.max_create_revision))
}

/// A stable sort on the target alone: equal targets stay in key order
/// whichever way the sort goes, as etcd returns them.
fn sort_found(found: &mut [Alive], desc: bool, target: SortTarget) {
    found.sort_by(|(ka, a, _), (kb, b, _)| {
        let o = match target {
            SortTarget::Key => ka.cmp(kb),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.created.cmp(&b.created),
            SortTarget::Mod => a.modified.main.cmp(&b.modified.main),
            SortTarget::Value => unreachable!("a sort by value is done on the records"),
        };
        if desc {
            o.reverse()
        } else {
            o
        }
    });
}

/// `sort_found`'s order by value, on the records.
fn sort_by_value(kvs: &mut [KeyValue], desc: bool) {
    kvs.sort_by(|a, b| {
        let o = a.value.cmp(&b.value);
        if desc {
            o.reverse()
        } else {
            o
        }
    });
}

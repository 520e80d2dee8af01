//! A List answer in pages, for every kind of record listed by ID (secrets,
//! configs, tasks): a page's keys first, without values (one linearizable
//! keys-only read, answered from the key index), then the records, a few
//! at a time at that revision. A page ends at `page_size` records or
//! `LIST_PAGE_BYTES_MAX`, whichever comes first, and says where the next
//! one starts; a caller that does not page (`page_size` 0) gets everything
//! it asked for (its filters may keep few of many records: the scan goes
//! on) or, past one page of what it keeps, a refusal naming paging, never
//! a list cut short.

use std::future::Future;

use prost::Message;
use secretd_store::pb::etcdserverpb::{request_op, RangeRequest, RangeResponse, RequestOp};
use secretd_store::pb::mvccpb::KeyValue;

use crate::{layout, validate, Error, Result};

/// A list answer's bounds: records per page, and bytes (under a gRPC
/// client's default 4 MiB message limit, so any client can read a page).
pub const LIST_PAGE_OBJECTS_MAX: usize = 10_000;
pub const LIST_PAGE_BYTES_MAX: usize = 3 << 20;
/// Records read per step while listing (an object record is at most ~280
/// KiB, its labels; a task's ~100 KiB, its environment and mounts).
const LIST_SCAN_CHUNK: usize = 64;

/// What one List call asks for.
pub(crate) struct Scope<'a> {
    /// The records' name, for errors ("secret", "task").
    pub what: &'static str,
    /// The records' key prefix: a record's key is the prefix and its ID.
    pub prefix: Vec<u8>,
    pub page_size: u32,
    /// The ID the previous page ended at ("": from the start).
    pub page_token: &'a str,
    /// Records one answer holds at most (`LIST_PAGE_OBJECTS_MAX`).
    pub records_max: usize,
}

impl Scope<'_> {
    fn records_max(&self) -> Result<usize> {
        if !self.page_token.is_empty() && self.page_size == 0 {
            return Err(Error::invalid("page_token needs a page_size"));
        }
        // Every ID (objects' generated ones, tasks' chosen ones) is a
        // valid name: anything else is not a token this list gave out.
        if !self.page_token.is_empty() && !validate::is_valid_name(self.page_token) {
            return Err(Error::invalid(format!(
                "page_token is not a {} list's token",
                self.what
            )));
        }
        Ok(match self.page_size {
            0 => self.records_max,
            n => (n as usize).min(self.records_max),
        })
    }

    /// The token that continues after the record at `last`; an unpaged
    /// list that does not fit one page is refused, naming the way out.
    fn continue_after(&self, last: &[u8]) -> Result<String> {
        if self.page_size == 0 {
            return Err(Error::Precondition(format!(
                "more {}s than one answer holds ({} or {} MiB): list them in pages (page_size; secretctl does)",
                self.what,
                self.records_max,
                LIST_PAGE_BYTES_MAX >> 20
            )));
        }
        last.strip_prefix(self.prefix.as_slice())
            .and_then(|id| String::from_utf8(id.to_vec()).ok())
            .ok_or_else(|| Error::internal("a listed key outside its prefix"))
    }
}

/// One page of `scope`, read with `read` (a txn of ranges, and the
/// revision it read at); `keep` decodes a record and says whether it is
/// listed (filters apply within the page, so a page may hold fewer).
/// Returns the page and the token of the next ("" at the end).
pub(crate) async fn page<T, R, F>(
    scope: &Scope<'_>,
    read: R,
    mut keep: impl FnMut(&KeyValue) -> Result<Option<T>>,
) -> Result<(Vec<T>, String)>
where
    T: Message,
    R: Fn(Vec<RequestOp>) -> F,
    F: Future<Output = Result<(Vec<RangeResponse>, i64)>>,
{
    let records_max = scope.records_max()?;
    let paged = scope.page_size > 0;
    // The key the next record follows (a page token's, or the prefix).
    let mut last = [scope.prefix.as_slice(), scope.page_token.as_bytes()].concat();
    let mut start = last.clone();
    if !scope.page_token.is_empty() {
        start.push(0);
    }
    let end = layout::prefix_end(&scope.prefix);
    let (mut out, mut bytes, mut scanned) = (Vec::new(), 0, 0);
    let mut at_rev = 0;
    loop {
        // The keys first, without values: the first read is linearizable
        // and fixes the revision every later one reads at.
        let keys;
        (keys, at_rev) = keys_from(&read, start, &end, records_max + 1, at_rev).await?;
        let more_keys = keys.len() > records_max;
        // Then the records, a few keys per step (a page's worth at once
        // could be gigabytes), each step's range ending at its own last
        // key: a range over the rest of the prefix would count all of it
        // again at every step (what made 100k secrets take 5 s to list).
        for step in keys.chunks(LIST_SCAN_CHUNK) {
            let (first, end) = (
                step[0].clone(),
                [step[step.len() - 1].as_slice(), &[0]].concat(),
            );
            let (r, _) = read(vec![range_op(first, end, 0, at_rev, false)]).await?;
            for kv in r.into_iter().flat_map(|r| r.kvs) {
                if paged && scanned == records_max {
                    // More follow: the page ends after the last one scanned.
                    return Ok((out, scope.continue_after(&last)?));
                }
                scanned += 1;
                if let Some(o) = keep(&kv)? {
                    bytes += o.encoded_len();
                    let full = bytes > LIST_PAGE_BYTES_MAX || out.len() == records_max;
                    if full && !out.is_empty() {
                        // A page ends here; a list in one answer is refused.
                        return Ok((out, scope.continue_after(&last)?));
                    }
                    out.push(o);
                }
                last = kv.key;
            }
        }
        // A list in one answer scans on while what it keeps fits: a
        // filter may keep few of many records.
        if paged || !more_keys {
            return Ok((out, String::new()));
        }
        start = [last.as_slice(), &[0]].concat();
    }
}

/// The first `limit` keys of `[start, end)` at `at_rev` (0: now, read
/// linearizably), and the revision they were read at.
async fn keys_from<R, F>(
    read: &R,
    start: Vec<u8>,
    end: &[u8],
    limit: usize,
    at_rev: i64,
) -> Result<(Vec<Vec<u8>>, i64)>
where
    R: Fn(Vec<RequestOp>) -> F,
    F: Future<Output = Result<(Vec<RangeResponse>, i64)>>,
{
    let (r, rev) = read(vec![range_op(start, end.to_vec(), limit, at_rev, true)]).await?;
    let keys = r.into_iter().flat_map(|r| r.kvs).map(|kv| kv.key).collect();
    Ok((keys, if at_rev == 0 { rev } else { at_rev }))
}

fn range_op(
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: usize,
    revision: i64,
    keys_only: bool,
) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key,
            range_end,
            limit: limit as i64,
            revision,
            keys_only,
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secretd_store::pb::etcdserverpb::RangeResponse;

    use super::*;
    use crate::pb::secretstore::Task;

    /// A keyspace of tasks `t000`.. under `p/`, on nodes `a` (every tenth)
    /// and `b`, read the way the store reads it.
    fn keyspace(n: usize) -> BTreeMap<Vec<u8>, KeyValue> {
        (0..n)
            .map(|i| {
                let t = Task {
                    id: format!("t{i:03}"),
                    node: if i % 10 == 0 { "a" } else { "b" }.into(),
                    ..Default::default()
                };
                let key = format!("p/{}", t.id).into_bytes();
                let kv = KeyValue {
                    key: key.clone(),
                    value: t.encode_to_vec(),
                    ..Default::default()
                };
                (key, kv)
            })
            .collect()
    }

    async fn list(
        kvs: &BTreeMap<Vec<u8>, KeyValue>,
        node: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<String>, String)> {
        let scope = Scope {
            what: "task",
            prefix: b"p/".to_vec(),
            page_size,
            page_token,
            records_max: 5,
        };
        let read = |ops: Vec<RequestOp>| async move {
            let mut out = Vec::new();
            for op in ops {
                let Some(request_op::Request::RequestRange(r)) = op.request else {
                    unreachable!()
                };
                let mut kvs: Vec<KeyValue> = kvs
                    .range(r.key.clone()..r.range_end.clone())
                    .map(|(_, kv)| kv.clone())
                    .collect();
                if r.limit > 0 {
                    kvs.truncate(r.limit as usize);
                }
                out.push(RangeResponse {
                    kvs,
                    ..Default::default()
                });
            }
            Ok((out, 7))
        };
        let (tasks, next) = page(&scope, read, |kv| {
            let t = Task::decode(kv.value.as_slice()).unwrap();
            Ok((node.is_empty() || t.node == node).then_some(t))
        })
        .await?;
        Ok((tasks.into_iter().map(|t| t.id).collect(), next))
    }

    #[tokio::test]
    async fn a_list_in_one_answer_scans_on_while_what_it_keeps_fits() {
        let kvs = keyspace(45);
        // Node a keeps 5 of 45: past five records scanned, still one answer.
        let (ids, next) = list(&kvs, "a", 0, "").await.unwrap();
        assert_eq!(ids, ["t000", "t010", "t020", "t030", "t040"]);
        assert!(next.is_empty());
        // Every node: more than one answer holds, refused.
        let e = list(&kvs, "", 0, "").await.unwrap_err();
        assert!(matches!(e, Error::Precondition(_)), "{e:?}");
        // One more on node a: refused too.
        let e = list(&keyspace(55), "a", 0, "").await.unwrap_err();
        assert!(matches!(e, Error::Precondition(_)), "{e:?}");
        // In pages, every record once, the filter within each page.
        let (mut all, mut token) = (Vec::new(), String::new());
        loop {
            let (ids, next) = list(&kvs, "b", 4, &token).await.unwrap();
            assert!(ids.len() <= 4);
            all.extend(ids);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(all.len(), 40);
    }
}

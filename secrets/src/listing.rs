//! A List answer in pages, for every kind of record listed by ID (secrets,
//! configs, tasks): a page's keys first, without values (one linearizable
//! keys-only read, answered from the key index), then the records, a few
//! at a time at that revision. A page ends at `page_size` records or
//! `LIST_PAGE_BYTES_MAX`, whichever comes first, and says where the next
//! one starts; a caller that does not page (`page_size` 0) gets everything
//! or, past one page, a refusal naming paging, never a list cut short.

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
            0 => LIST_PAGE_OBJECTS_MAX,
            n => (n as usize).min(LIST_PAGE_OBJECTS_MAX),
        })
    }

    /// The token that continues after the record at `last`; an unpaged
    /// list that does not fit one page is refused, naming the way out.
    fn continue_after(&self, last: &[u8]) -> Result<String> {
        if self.page_size == 0 {
            return Err(Error::Precondition(format!(
                "more {}s than one answer holds ({LIST_PAGE_OBJECTS_MAX} or {} MiB): list them in pages (page_size; secretctl does)",
                self.what,
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
    // The key the next record follows (a page token's, or the prefix).
    let mut last = [scope.prefix.as_slice(), scope.page_token.as_bytes()].concat();
    let mut start = last.clone();
    if !scope.page_token.is_empty() {
        start.push(0);
    }
    let range = |key, range_end, limit: usize, revision, keys_only| RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key,
            range_end,
            limit: limit as i64,
            revision,
            keys_only,
            ..Default::default()
        })),
    };
    let end = layout::prefix_end(&scope.prefix);
    let (r, at_rev) = read(vec![range(start, end, records_max + 1, 0, true)]).await?;
    let keys: Vec<Vec<u8>> = r.into_iter().flat_map(|r| r.kvs).map(|kv| kv.key).collect();
    // Then the records, a few keys per step at that revision (a page's
    // worth at once could be gigabytes), each step's range ending at its
    // own last key: a range over the rest of the prefix would count all of
    // it again at every step (what made 100k secrets take 5 s to list).
    let (mut out, mut bytes, mut scanned) = (Vec::new(), 0, 0);
    for step in keys.chunks(LIST_SCAN_CHUNK) {
        let (first, end) = (
            step[0].clone(),
            [step[step.len() - 1].as_slice(), &[0]].concat(),
        );
        let (r, _) = read(vec![range(first, end, 0, at_rev, false)]).await?;
        for kv in r.into_iter().flat_map(|r| r.kvs) {
            if scanned == records_max {
                // More follow: the page ends after the last one scanned.
                return Ok((out, scope.continue_after(&last)?));
            }
            scanned += 1;
            if let Some(o) = keep(&kv)? {
                bytes += o.encoded_len();
                if bytes > LIST_PAGE_BYTES_MAX && !out.is_empty() {
                    return Ok((out, scope.continue_after(&last)?));
                }
                out.push(o);
            }
            last = kv.key;
        }
    }
    Ok((out, String::new()))
}

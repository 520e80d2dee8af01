//! Secrets, configs and tasks as records in the reserved key range, read
//! and written through the store's txns. Every change is one txn whose
//! compares make it atomic against concurrent changes (optimistic
//! concurrency, retried a bounded number of times): a name stays unique, an
//! object in use by a task cannot be removed, and a task cannot start using
//! an object that is being removed.
//!
//! Secret data is sealed here, before anything is proposed: the raft log,
//! RocksDB, snapshots and peer traffic only ever see the sealed blob.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::Message;
use secretd_crypto::{Cipher, SecretBytes};
use secretd_store::node::Node;

use secretd_store::pb::etcdserverpb::{
    request_op, response_op, Compare, RangeRequest, RangeResponse, RequestOp, TxnResponse,
};
use secretd_store::pb::mvccpb::KeyValue;

use crate::keys::Keys;
use crate::layout::{self, Kind};
use crate::listing;
use crate::pb::records::SettingsRecord;
use crate::pb::secretstore::{
    CreateRequest, ListRequest, ListResponse, ListTasksRequest, ListTasksResponse, Object,
    Settings, Spec, Task, VersionInfo,
};
use crate::txns::*;
use crate::{aad, now_ns, validate, Error, Result};

/// The record of a new object `id` made by `req` (its labels and
/// templating taken from it): a secret's first version, whose data is
/// sealed apart, or a config's data, stored plain.
fn new_record(kind: Kind, id: &str, req: &mut CreateRequest, data: &SecretBytes) -> Object {
    let now = now_ns();
    let mut record = Object {
        id: id.to_string(),
        version_index: 0,
        created_at_ns: now,
        updated_at_ns: now,
        spec: Some(Spec {
            name: req.name.clone(),
            labels: std::mem::take(&mut req.labels),
            data: Vec::new(),
            templating: std::mem::take(&mut req.templating),
        }),
        current_version: 0,
        versions: Vec::new(),
    };
    match kind {
        Kind::Secret => {
            record.current_version = 1;
            record.versions.push(VersionInfo {
                version: 1,
                created_at_ns: now,
            });
        }
        Kind::Config => {
            if let Some(s) = record.spec.as_mut() {
                s.data = data.expose().to_vec();
            }
        }
    }
    record
}

/// A task's refs by object ((is a secret, object id)): the versions it pins.
type Refs = BTreeMap<(bool, String), BTreeSet<u64>>;

/// Attempts of one change against concurrent changes to the same objects.
const CONFLICT_RETRIES_MAX: usize = 16;

pub use crate::listing::{LIST_PAGE_BYTES_MAX, LIST_PAGE_OBJECTS_MAX};

/// Docker's list filters: name and ID prefixes (case-insensitive, several
/// of one kind OR-ed), labels (`key` or `key=value`, AND-ed).
struct Filter<'a> {
    r: &'a ListRequest,
    labels: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Filter<'a> {
    fn of(r: &'a ListRequest) -> Filter<'a> {
        let labels = r
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (l.as_str(), None),
            })
            .collect();
        Filter { r, labels }
    }

    /// `o` without its data if it passes (listings never carry data).
    fn keep(&self, mut o: Object) -> Option<Object> {
        let none = Spec::default();
        let spec = o.spec.as_ref().unwrap_or(&none);
        let starts = |s: &str, p: &str| s.to_lowercase().starts_with(&p.to_lowercase());
        let name_ok = self.r.name_prefixes.is_empty()
            || self.r.name_prefixes.iter().any(|p| starts(&spec.name, p));
        let id_ok =
            self.r.id_prefixes.is_empty() || self.r.id_prefixes.iter().any(|p| starts(&o.id, p));
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, v)| match (spec.labels.get(*k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            });
        if !(name_ok && id_ok && labels_ok) {
            return None;
        }
        if let Some(s) = o.spec.as_mut() {
            s.data = Vec::new();
        }
        Some(o)
    }
}

fn not_found(kind: Kind, input: &str) -> Error {
    Error::NotFound {
        kind: kind.word(),
        name: validate::echo(input),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::corrupt(what, e)
}

fn decode_object(kind: Kind, kv: &KeyValue) -> Result<Object> {
    let mut o = Object::decode(kv.value.as_slice()).map_err(|e| corrupt(kind.word(), e))?;
    o.version_index = kv.mod_revision as u64;
    Ok(o)
}

fn decode_task(kv: &KeyValue) -> Result<Task> {
    let mut t = Task::decode(kv.value.as_slice()).map_err(|e| corrupt("task", e))?;
    t.version_index = kv.mod_revision as u64;
    Ok(t)
}

/// Pinned versions as a ref's value: u64 big-endian each (0 = current).
fn encode_pins(pins: &BTreeSet<u64>) -> Vec<u8> {
    pins.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn decode_pins(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8-byte chunk")))
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        one.to_string()
    } else {
        many.to_string()
    }
}

pub struct ObjectStore {
    node: Arc<Node>,
    keys: Arc<Keys>,
    /// Old versions of a secret kept after a rotation (besides pinned ones).
    history: usize,
}

impl ObjectStore {
    /// A charge of `bytes` against the member's answer budget, for a List
    /// answer to hold until it is sent (`secretd_store::answers`).
    pub fn answer_charge(&self, bytes: usize) -> Result<secretd_store::answers::Charge> {
        let charge = self.node.mvcc().answers().charge();
        charge.add(bytes)?;
        Ok(charge)
    }

    pub fn new(node: Arc<Node>, keys: Arc<Keys>, history: usize) -> ObjectStore {
        ObjectStore {
            node,
            keys,
            history,
        }
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    async fn txn(&self, compare: Vec<Compare>, success: Vec<RequestOp>) -> Result<TxnResponse> {
        run(&self.node, compare, success).await
    }

    /// Linearizable reads of several ranges at one revision.
    async fn read(&self, ops: Vec<RequestOp>) -> Result<(Vec<RangeResponse>, i64)> {
        self.read_as(ops, false).await
    }

    /// Reads at one revision; `local` serves them from this member's state
    /// without a ReadIndex round (the agent's path: it reacts to changes
    /// this member has already applied).
    async fn read_as(
        &self,
        mut ops: Vec<RequestOp>,
        local: bool,
    ) -> Result<(Vec<RangeResponse>, i64)> {
        for op in &mut ops {
            if let Some(request_op::Request::RequestRange(r)) = &mut op.request {
                r.serializable = local;
            }
        }
        let resp = self.txn(Vec::new(), ops).await?;
        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        let ranges = resp
            .responses
            .into_iter()
            .map(|r| match r.response {
                Some(response_op::Response::ResponseRange(r)) => Ok(r),
                _ => Err(Error::internal("a read returned a non-range response")),
            })
            .collect::<Result<_, _>>()?;
        Ok((ranges, rev))
    }

    /// Docker's lookup: full ID, then exact name, then unique ID prefix.
    pub async fn resolve(&self, kind: Kind, input: &str) -> Result<Object> {
        if input.is_empty() || input.contains('/') {
            return Err(not_found(kind, input));
        }
        let exact = layout::object_key(kind, input);
        let (r, _) = self
            .read(vec![
                scan(exact.clone(), 2, false),
                get(layout::name_key(kind, input)),
            ])
            .await?;
        let (by_prefix, by_name) = (&r[0], &r[1]);
        if let Some(kv) = by_prefix.kvs.first().filter(|kv| kv.key == exact) {
            return decode_object(kind, kv);
        }
        if let Some(kv) = by_name.kvs.first() {
            let id = String::from_utf8_lossy(&kv.value).into_owned();
            let (r, _) = self.read(vec![get(layout::object_key(kind, &id))]).await?;
            return match r[0].kvs.first() {
                Some(kv) => decode_object(kind, kv),
                None => Err(not_found(kind, input)),
            };
        }
        match by_prefix.count {
            0 => Err(not_found(kind, input)),
            1 => decode_object(kind, &by_prefix.kvs[0]),
            n => Err(Error::Ambiguous(format!(
                "{} {} is ambiguous ({n} matches found)",
                kind.word(),
                validate::echo(input)
            ))),
        }
    }

    async fn cipher(&self) -> Result<Cipher> {
        Cipher::from_name(&self.settings().await?.secret_cipher)
            .map_err(|e| Error::internal(e.to_string()))
    }

    pub async fn create(&self, kind: Kind, mut req: CreateRequest) -> Result<String> {
        let data = SecretBytes::new(std::mem::take(&mut req.data));
        validate::name(&req.name)?;
        validate::labels(&req.labels)?;
        validate::templating(&req.templating)?;
        validate::data(kind, data.expose())?;
        let id = validate::new_id();
        let record = new_record(kind, &id, &mut req, &data);
        for _ in 0..CONFLICT_RETRIES_MAX {
            let mut ops = vec![put(
                layout::name_key(kind, &req.name),
                id.clone().into_bytes(),
            )];
            let mut compare = vec![absent(layout::name_key(kind, &req.name))];
            if kind == Kind::Secret {
                let ctx = aad::secret_version(&id, 1);
                let sealed = self.keys.seal(self.cipher().await?, &ctx, &data).await?;
                ops.push(put(layout::data_key(&id, 1), sealed.blob));
                compare.push(sealed.guard);
            }
            ops.push(put(layout::object_key(kind, &id), record.encode_to_vec()));
            if self.txn(compare, ops).await?.succeeded {
                tracing::info!(kind = kind.word(), id = %id, name = %req.name, "created");
                return Ok(id);
            }
            self.keys.forget_sealing();
            // The name is taken, or a KEK rotation registered a newer
            // generation after the seal: seal again.
            let (r, _) = self
                .read(vec![get(layout::name_key(kind, &req.name))])
                .await?;
            if !r[0].kvs.is_empty() {
                return Err(Error::AlreadyExists(format!(
                    "{} {} already exists",
                    kind.word(),
                    req.name
                )));
            }
        }
        Err(Error::Conflict(format!(
            "{} {} could not be created: the cluster's keys kept changing; try again",
            kind.word(),
            req.name
        )))
    }

    pub async fn inspect(&self, kind: Kind, input: &str) -> Result<Object> {
        self.resolve(kind, input).await
    }

    /// A page of `kind`'s objects, without their data (`listing`).
    pub async fn list(&self, kind: Kind, filters: &ListRequest) -> Result<ListResponse> {
        let filter = Filter::of(filters);
        let scope = listing::Scope {
            what: kind.word(),
            prefix: layout::object_prefix(kind),
            page_size: filters.page_size,
            page_token: &filters.page_token,
            records_max: LIST_PAGE_OBJECTS_MAX,
        };
        let read = |ops| self.read_as(ops, false);
        let (objects, next_page_token) =
            listing::page(&scope, read, |kv| Ok(filter.keep(decode_object(kind, kv)?))).await?;
        Ok(ListResponse {
            objects,
            next_page_token,
        })
    }

    /// Tasks using an object, by name.
    async fn users(&self, kind: Kind, id: &str) -> Result<Vec<String>> {
        let (r, _) = self
            .read(vec![scan(layout::ref_prefix(kind, id), 0, true)])
            .await?;
        Ok(r[0]
            .kvs
            .iter()
            .filter_map(|kv| layout::task_of_ref_key(kind, id, &kv.key))
            .collect())
    }

    pub async fn remove(&self, kind: Kind, input: &str) -> Result<String> {
        for _ in 0..CONFLICT_RETRIES_MAX {
            let o = self.resolve(kind, input).await?;
            let name = o.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            let mut ops = vec![
                del(layout::object_key(kind, &o.id), Vec::new()),
                del(layout::name_key(kind, &name), Vec::new()),
            ];
            if kind == Kind::Secret {
                let p = layout::data_prefix(&o.id);
                ops.push(del(p.clone(), layout::prefix_end(&p)));
            }
            let resp = self
                .txn(
                    vec![
                        unchanged(layout::object_key(kind, &o.id), o.version_index as i64),
                        none_with_prefix(layout::ref_prefix(kind, &o.id)),
                    ],
                    ops,
                )
                .await?;
            if resp.succeeded {
                tracing::info!(kind = kind.word(), id = %o.id, name = %name, "removed");
                return Ok(o.id);
            }
            let users = self.users(kind, &o.id).await?;
            if !users.is_empty() {
                return Err(Error::invalid(format!(
                    "{} '{name}' is in use by the following {}: {}",
                    kind.word(),
                    plural(users.len(), "task", "tasks"),
                    users.join(", ")
                )));
            }
        }
        Err(Error::Conflict(format!(
            "{} {input} kept changing while it was being removed; try again",
            kind.word()
        )))
    }

    /// Adds a new version of a secret; returns its ID and the version.
    pub async fn rotate(&self, input: &str, data: SecretBytes) -> Result<(String, u64)> {
        validate::data(Kind::Secret, data.expose())?;
        let cipher = self.cipher().await?;
        for _ in 0..CONFLICT_RETRIES_MAX {
            let mut o = self.resolve(Kind::Secret, input).await?;
            let refs = layout::ref_prefix(Kind::Secret, &o.id);
            let (r, refs_rev) = self.read(vec![scan(refs.clone(), 0, false)]).await?;
            let pinned: BTreeSet<u64> = r[0]
                .kvs
                .iter()
                .flat_map(|kv| decode_pins(&kv.value).collect::<Vec<_>>())
                .collect();
            let version = o.current_version + 1;
            let ctx = aad::secret_version(&o.id, version);
            let sealed = self.keys.seal(cipher, &ctx, &data).await?;
            let now = now_ns();
            // Keep the newest `history` old versions, and every pinned one.
            let mut excess = o.versions.len().saturating_sub(self.history);
            let mut pruned = Vec::new();
            o.versions.retain(|v| {
                if excess > 0 && !pinned.contains(&v.version) {
                    excess -= 1;
                    pruned.push(v.version);
                    false
                } else {
                    true
                }
            });
            o.versions.push(VersionInfo {
                version,
                created_at_ns: now,
            });
            let read_at = o.version_index as i64;
            o.current_version = version;
            o.updated_at_ns = now;
            o.version_index = 0;
            let mut ops = vec![
                put(layout::object_key(Kind::Secret, &o.id), o.encode_to_vec()),
                put(layout::data_key(&o.id, version), sealed.blob),
            ];
            ops.extend(
                pruned
                    .iter()
                    .map(|v| del(layout::data_key(&o.id, *v), Vec::new())),
            );
            let resp = self
                .txn(
                    vec![
                        unchanged(layout::object_key(Kind::Secret, &o.id), read_at),
                        prefix_unchanged_since(refs, refs_rev),
                        sealed.guard,
                    ],
                    ops,
                )
                .await?;
            if resp.succeeded {
                tracing::info!(id = %o.id, version, pruned = ?pruned, "rotated secret");
                return Ok((o.id, version));
            }
            self.keys.forget_sealing();
        }
        Err(Error::Conflict(format!(
            "secret {input} kept changing while it was being rotated; try again"
        )))
    }

    /// A secret version's plaintext (the agent's delivery path).
    pub async fn open_secret(&self, id: &str, version: u64, local: bool) -> Result<SecretBytes> {
        let (r, _) = self
            .read_as(vec![get(layout::data_key(id, version))], local)
            .await?;
        let kv = r[0]
            .kvs
            .first()
            .ok_or_else(|| Error::Missing(format!("secret {id} has no version {version}")))?;
        let ctx = aad::secret_version(id, version);
        self.keys.open(&ctx, &kv.value).await
    }

    /// The current version of each secret, and the revision read at.
    pub async fn current_versions(
        &self,
        ids: &BTreeSet<String>,
        local: bool,
    ) -> Result<(BTreeMap<String, u64>, i64)> {
        let ops = ids
            .iter()
            .map(|id| get(layout::object_key(Kind::Secret, id)))
            .collect();
        let (r, rev) = self.read_as(ops, local).await?;
        let mut out = BTreeMap::new();
        for kv in r.iter().filter_map(|r| r.kvs.first()) {
            let o = decode_object(Kind::Secret, kv)?;
            out.insert(o.id, o.current_version);
        }
        Ok((out, rev))
    }

    /// A config's data (configs are stored plain).
    pub async fn config_data(&self, id: &str, local: bool) -> Result<Vec<u8>> {
        let (r, _) = self
            .read_as(vec![get(layout::object_key(Kind::Config, id))], local)
            .await?;
        let kv = r[0]
            .kvs
            .first()
            .ok_or_else(|| not_found(Kind::Config, id))?;
        Ok(decode_object(Kind::Config, kv)?
            .spec
            .map(|s| s.data)
            .unwrap_or_default())
    }

    pub async fn task_create(&self, req: Task) -> Result<Task> {
        validate::task_id(&req.id)?;
        validate::node(&req.node)?;
        validate::mounts(&req.secrets, &req.configs)?;
        validate::env(&req.env)?;
        for _ in 0..CONFLICT_RETRIES_MAX {
            let mut task = req.clone();
            let mut compares = vec![absent(layout::task_key(&task.id))];
            let (unchanged_objects, refs) = self.resolve_mounts(&mut task).await?;
            compares.extend(unchanged_objects);
            let now = now_ns();
            task.created_at_ns = now;
            task.updated_at_ns = now;
            task.version_index = 0;
            let mut ops = vec![put(layout::task_key(&task.id), task.encode_to_vec())];
            for ((secret, id), pins) in &refs {
                let kind = if *secret { Kind::Secret } else { Kind::Config };
                let pins: BTreeSet<u64> = pins.iter().copied().filter(|v| *v != 0).collect();
                ops.push(put(layout::ref_key(kind, id, &task.id), encode_pins(&pins)));
            }
            let resp = self.txn(compares, ops).await?;
            if resp.succeeded {
                task.version_index = resp.header.map(|h| h.revision as u64).unwrap_or(0);
                tracing::info!(task = %task.id, node = %task.node, "created task");
                return Ok(task);
            }
            let (r, _) = self.read(vec![get(layout::task_key(&task.id))]).await?;
            if !r[0].kvs.is_empty() {
                return Err(Error::AlreadyExists(format!(
                    "task {} already exists",
                    task.id
                )));
            }
        }
        Err(Error::Conflict(format!(
            "the objects task {} uses kept changing; try again",
            req.id
        )))
    }

    /// Resolves the objects `task`'s mounts name, filling in each mount's
    /// object id and template driver. Returns a compare per object (it is
    /// unchanged since read) and the refs to write: one per object,
    /// listing every version pinned (0: the current one).
    async fn resolve_mounts(&self, task: &mut Task) -> Result<(Vec<Compare>, Refs)> {
        let mut compares = Vec::new();
        let mut refs = Refs::new();
        let mut seen = BTreeSet::new();
        for (kind, list) in [
            (Kind::Secret, &mut task.secrets),
            (Kind::Config, &mut task.configs),
        ] {
            for m in list.iter_mut() {
                let o = self.resolve(kind, &m.source).await?;
                if kind == Kind::Config && m.version != 0 {
                    return Err(Error::invalid(
                        "configs have one version; a config mount cannot pin a version",
                    ));
                }
                if m.version != 0 && !o.versions.iter().any(|v| v.version == m.version) {
                    let kept: Vec<String> =
                        o.versions.iter().map(|v| v.version.to_string()).collect();
                    return Err(Error::invalid(format!(
                        "secret {} has no version {} (versions kept: {})",
                        m.source,
                        m.version,
                        kept.join(", ")
                    )));
                }
                m.source_id = o.id.clone();
                m.template_driver = o
                    .spec
                    .as_ref()
                    .map(|s| s.templating.clone())
                    .unwrap_or_default();
                refs.entry((kind == Kind::Secret, o.id.clone()))
                    .or_default()
                    .insert(m.version);
                if seen.insert((kind == Kind::Secret, o.id.clone())) {
                    compares.push(unchanged(
                        layout::object_key(kind, &o.id),
                        o.version_index as i64,
                    ));
                }
            }
        }
        Ok((compares, refs))
    }

    pub async fn task_get(&self, id: &str, local: bool) -> Result<Task> {
        if validate::task_id(id).is_err() {
            return Err(Error::NotFound {
                kind: "task",
                name: validate::echo(id),
            });
        }
        let (r, _) = self.read_as(vec![get(layout::task_key(id))], local).await?;
        match r[0].kvs.first() {
            Some(kv) => decode_task(kv),
            None => Err(Error::NotFound {
                kind: "task",
                name: id.to_string(),
            }),
        }
    }

    /// A page of the tasks of `req.node` ("": every node), `listing`'s way.
    pub async fn task_page(&self, req: &ListTasksRequest) -> Result<ListTasksResponse> {
        if !req.node.is_empty() {
            validate::node(&req.node)?;
        }
        let scope = listing::Scope {
            what: "task",
            prefix: layout::task_prefix(),
            page_size: req.page_size,
            page_token: &req.page_token,
            records_max: LIST_PAGE_OBJECTS_MAX,
        };
        let read = |ops| self.read_as(ops, false);
        let (tasks, next_page_token) = listing::page(&scope, read, |kv| {
            let t = decode_task(kv)?;
            Ok((req.node.is_empty() || t.node == req.node).then_some(t))
        })
        .await?;
        Ok(ListTasksResponse {
            tasks,
            next_page_token,
        })
    }

    /// Every task of `node` ("": every node), in one read: the node
    /// state's (`node_view`), which is sent in parts and bounded there.
    pub async fn task_list(&self, node: &str, local: bool) -> Result<Vec<Task>> {
        let (r, _) = self
            .read_as(vec![scan(layout::task_prefix(), 0, false)], local)
            .await?;
        let mut out = Vec::new();
        for kv in &r[0].kvs {
            let t = decode_task(kv)?;
            if node.is_empty() || t.node == node {
                out.push(t);
            }
        }
        Ok(out)
    }

    pub async fn task_remove(&self, id: &str) -> Result<String> {
        for _ in 0..CONFLICT_RETRIES_MAX {
            let t = self.task_get(id, false).await?;
            let mut ops = vec![del(layout::task_key(id), Vec::new())];
            let mut seen = BTreeSet::new();
            for (kind, list) in [(Kind::Secret, &t.secrets), (Kind::Config, &t.configs)] {
                for m in list.iter() {
                    if seen.insert((kind == Kind::Secret, m.source_id.clone())) {
                        ops.push(del(layout::ref_key(kind, &m.source_id, id), Vec::new()));
                    }
                }
            }
            let resp = self
                .txn(
                    vec![unchanged(layout::task_key(id), t.version_index as i64)],
                    ops,
                )
                .await?;
            if resp.succeeded {
                tracing::info!(task = %id, "removed task");
                return Ok(id.to_string());
            }
        }
        Err(Error::Conflict(format!(
            "task {id} kept changing while it was being removed; try again"
        )))
    }

    /// Cluster settings, with defaults for what was never set. A local
    /// read: a setting changed a moment ago may apply a moment late.
    pub async fn settings(&self) -> Result<Settings> {
        let resp = self
            .node
            .range(RangeRequest {
                key: layout::settings_key(),
                serializable: true,
                ..Default::default()
            })
            .await?;
        let rec = match resp.kvs.first() {
            Some(kv) => {
                SettingsRecord::decode(kv.value.as_slice()).map_err(|e| corrupt("settings", e))?
            }
            None => SettingsRecord::default(),
        };
        Ok(Settings {
            secret_cipher: if rec.secret_cipher.is_empty() {
                Cipher::XChaCha20Poly1305.name().to_string()
            } else {
                rec.secret_cipher
            },
        })
    }

    pub async fn update_settings(&self, s: Settings) -> Result<Settings> {
        let mut current = self.settings().await?;
        if !s.secret_cipher.is_empty() {
            Cipher::from_name(&s.secret_cipher).map_err(|e| Error::invalid(e.to_string()))?;
            current.secret_cipher = s.secret_cipher;
        }
        let rec = SettingsRecord {
            secret_cipher: current.secret_cipher.clone(),
        };
        self.txn(
            Vec::new(),
            vec![put(layout::settings_key(), rec.encode_to_vec())],
        )
        .await?;
        tracing::info!(secret_cipher = %current.secret_cipher, "cluster settings updated");
        Ok(current)
    }
}

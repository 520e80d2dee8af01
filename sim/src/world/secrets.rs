//! The secrets workload and the keyring faults, over each member's real
//! object store and keyring: a client creates one secret and keeps
//! rotating it, reads acknowledged versions back through random members
//! (each must decrypt to exactly what was written, before, during and after
//! KEK rotations and autolock), and at the end every member opens every
//! acknowledged version.

use std::path::Path;

use secretd_crypto::SecretBytes;
use secretd_secrets::layout::Kind;
use secretd_secrets::pb::secretstore::CreateRequest;
use secretd_secrets::store::ObjectStore;

use super::*;
use crate::keyring::{Acked, SimPeers};

/// The secret's name, and how many versions the store keeps (all of
/// them: every acknowledged version must stay readable).
const SECRET_NAME: &str = "db_pw";
const HISTORY_MAX: usize = 10_000;
/// How often the secrets client acts, and the keyrings sync.
const SECRET_TURN_MS: u64 = 250;
const OLD_KEYS_KEPT: usize = 8;
const KEY_SYNC_MS: u64 = 500;

#[derive(Default)]
pub(super) struct SecretsState {
    peers: SimPeers,
    acked: Acked,
    /// The client's operation in flight.
    busy: bool,
    written: u64,
    unlock_key: Option<String>,
    /// Keys replaced since, newest first (at most `OLD_KEYS_KEPT`): as
    /// Docker advises, the operator keeps them for a member that stopped
    /// before it followed a change.
    old_unlock_keys: Vec<String>,
    /// Members stay locked while an autolock fault is active.
    autolock_active: bool,
    /// Members whose keyring sync said they need the unlock key (a member
    /// added under autolock is not "locked", it just has no keyring).
    needs_key: std::collections::BTreeSet<usize>,
}

/// What a secrets operation came to.
pub(super) enum SecretDone {
    Written {
        id: String,
        version: u64,
        data: Vec<u8>,
    },
    /// Refused (`unknown`: it may have happened). `create`: the data of a
    /// create.
    NotWritten {
        create: Option<Vec<u8>>,
        unknown: bool,
        why: String,
    },
    /// A member's keyring sync needs the unlock key.
    NeedsKey(usize),
    /// The unlock key the operator had is not the cluster's any more.
    StaleKey,
    /// What `unlock-key` told the operator.
    KeyLearned(Option<String>),
    /// What the lookup after an unknown create found: the secret's id.
    Resolved(Result<Option<String>, String>),
    Read {
        slot: usize,
        version: u64,
        got: Result<Vec<u8>, String>,
    },
    Keyring {
        what: String,
        result: Result<String, String>,
    },
    AutolockOn {
        victim: usize,
        key: Option<String>,
    },
    Final {
        slot: usize,
        failures: Vec<String>,
    },
    /// The final check ran out of time: how many versions it had opened,
    /// and which one it was waiting on.
    FinalTimedOut {
        slot: usize,
        total: usize,
        progress: Progress,
    },
}

/// Versions opened so far and the one being opened, shared with the
/// check's future so that a timeout can say where it stood.
pub(super) type Progress = std::rc::Rc<std::cell::RefCell<(usize, String)>>;

impl SecretsState {
    /// The operator's key changes; the one it had is kept (not twice).
    fn replace_unlock_key(&mut self, key: Option<String>) {
        if key.is_some() && key == self.unlock_key {
            return;
        }
        if let Some(old) = std::mem::replace(&mut self.unlock_key, key) {
            self.old_unlock_keys.retain(|k| *k != old);
            self.old_unlock_keys.insert(0, old);
            self.old_unlock_keys.truncate(OLD_KEYS_KEPT);
        }
    }

    /// The object store and keyring of a member that just started.
    pub(super) fn objects(
        &self,
        node: &Arc<Node>,
        data_dir: &Path,
    ) -> anyhow::Result<Arc<ObjectStore>> {
        let keys = secretd_secrets::keys::Keys::load(
            node.clone(),
            Arc::new(self.peers.clone()),
            data_dir,
        )?;
        self.peers.register(node.id(), &keys);
        Ok(Arc::new(ObjectStore::new(node.clone(), keys, HISTORY_MAX)))
    }
}

impl World {
    fn objects_of(&self, slot: usize) -> Option<Arc<ObjectStore>> {
        self.members[slot].up.as_ref().map(|u| u.objects.clone())
    }

    pub(super) fn secret_turn(&mut self) {
        if self.settling {
            return;
        }
        self.at(self.now_ms + SECRET_TURN_MS, Ev::Secret);
        if self.secrets.busy {
            return;
        }
        let Some(slot) = self.pick_member() else {
            return;
        };
        let objects = self.objects_of(slot).expect("picked an up member");
        let read = !self.secrets.acked.versions.is_empty() && self.client_rng.gen_bool(0.5);
        if read {
            self.read_back(slot, objects);
        } else if self.secrets.acked.id.is_none() && self.secrets.acked.lookup_due {
            self.resolve_create(slot, objects);
        } else {
            self.write_secret(slot, objects);
        }
    }

    /// Reads a random acknowledged version back through `slot`.
    fn read_back(&mut self, slot: usize, objects: Arc<ObjectStore>) {
        {
            let versions: Vec<u64> = self.secrets.acked.versions.keys().copied().collect();
            let version = versions[self.client_rng.gen_range(0..versions.len())];
            let id = self
                .secrets
                .acked
                .id
                .clone()
                .expect("acked versions have an id");
            self.secrets.busy = true;
            self.spawn_on(
                vec![slot],
                async move {
                    let got = objects
                        .open_secret(&id, version, false)
                        .await
                        .map(|b| b.expose().to_vec())
                        .map_err(|e| e.to_string());
                    Done::Secret(SecretDone::Read { slot, version, got })
                },
                Done::Secret(SecretDone::NotWritten {
                    create: None,
                    unknown: false,
                    why: "a read timed out".into(),
                }),
            );
        }
    }

    /// Creates the secret, or rotates it to a new version.
    fn write_secret(&mut self, slot: usize, objects: Arc<ObjectStore>) {
        self.secrets.written += 1;
        let data = format!("secret-{}", self.secrets.written).into_bytes();
        let id = self.secrets.acked.id.clone();
        let create = id.is_none().then(|| data.clone());
        let create_on_timeout = create.clone();
        self.secrets.busy = true;
        self.spawn_on(
            vec![slot],
            async move {
                let plain = SecretBytes::new(data.clone());
                let result = match &id {
                    None => objects
                        .create(
                            Kind::Secret,
                            CreateRequest {
                                name: SECRET_NAME.into(),
                                data: data.clone(),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|id| (id, 1)),
                    Some(id) => objects.rotate(id, plain).await,
                };
                match result {
                    Ok((id, version)) => Done::Secret(SecretDone::Written { id, version, data }),
                    Err(e) => Done::Secret(SecretDone::NotWritten {
                        create,
                        // Refusals before anything was proposed are certain.
                        unknown: !matches!(
                            e,
                            secretd_secrets::Error::Locked
                                | secretd_secrets::Error::Invalid(_)
                                | secretd_secrets::Error::AlreadyExists(_)
                        ),
                        why: e.to_string(),
                    }),
                }
            },
            Done::Secret(SecretDone::NotWritten {
                create: create_on_timeout,
                unknown: true,
                why: "timed out".into(),
            }),
        );
    }

    /// After a create whose answer was lost: is the secret there?
    fn resolve_create(&mut self, slot: usize, objects: Arc<ObjectStore>) {
        self.secrets.busy = true;
        self.spawn_on(
            vec![slot],
            async move {
                let found = match objects.inspect(Kind::Secret, SECRET_NAME).await {
                    Ok(o) => Ok(Some(o.id)),
                    Err(secretd_secrets::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.to_string()),
                };
                Done::Secret(SecretDone::Resolved(found))
            },
            Done::Secret(SecretDone::Resolved(Err("timed out".into()))),
        );
    }

    /// What `Keys::spawn_sync` does in the background, on every member;
    /// and the operator unlocks what restarted locked.
    pub(super) fn key_sync(&mut self) {
        self.at(self.now_ms + KEY_SYNC_MS, Ev::KeySync);
        for slot in self.up_members() {
            self.unlock_if_locked(slot);
            let objects = self.objects_of(slot).expect("up");
            self.spawn_on(
                vec![slot],
                async move {
                    let result = objects.keys().sync_once().await;
                    if matches!(result, Err(secretd_secrets::Error::Locked)) {
                        return Done::Secret(SecretDone::NeedsKey(slot));
                    }
                    Done::Secret(SecretDone::Keyring {
                        what: format!("m{slot} sync"),
                        result: result.map(|g| format!("{g:?}")).map_err(|e| e.to_string()),
                    })
                },
                Done::Secret(SecretDone::Keyring {
                    what: format!("m{slot} sync"),
                    result: Err("timed out".into()),
                }),
            );
        }
    }

    pub(super) fn rotate_kek(&mut self, member: usize) {
        let Some(objects) = self.objects_of(member) else {
            return;
        };
        self.spawn_on(
            vec![member],
            async move {
                let result = objects.keys().rotate().await;
                Done::Secret(SecretDone::Keyring {
                    what: format!("KEK rotation through m{member}"),
                    result: result
                        .map(|r| format!("generation {} retired {:?}", r.generation, r.retired))
                        .map_err(|e| e.to_string()),
                })
            },
            Done::Secret(SecretDone::Keyring {
                what: format!("KEK rotation through m{member}"),
                result: Err("timed out".into()),
            }),
        );
    }

    pub(super) fn autolock_on(&mut self, member: usize, victim: usize) {
        let Some(objects) = self.objects_of(member) else {
            return;
        };
        self.secrets.autolock_active = true;
        self.spawn_on(
            vec![member],
            async move {
                let key = objects.keys().set_autolock(true).await.ok().flatten();
                Done::Secret(SecretDone::AutolockOn { victim, key })
            },
            Done::Secret(SecretDone::AutolockOn { victim, key: None }),
        );
    }

    /// Unlocks every locked member with the key, then switches autolock
    /// off through `member` (or any member up).
    pub(super) fn autolock_off(&mut self, member: usize) {
        self.secrets.autolock_active = false;
        let Some(key) = self.secrets.unlock_key.clone() else {
            return;
        };
        let locked_slots: Vec<usize> = self
            .up_members()
            .into_iter()
            .filter(|s| self.objects_of(*s).is_some_and(|o| o.keys().is_locked()))
            .collect();
        let locked: Vec<Arc<ObjectStore>> = locked_slots
            .iter()
            .filter_map(|s| self.objects_of(*s))
            .collect();
        let Some(via_slot) = Some(member)
            .filter(|m| self.members[*m].up.is_some())
            .or_else(|| self.up_members().first().copied())
        else {
            return;
        };
        let via = self.objects_of(via_slot).expect("up");
        let mut touched = locked_slots;
        touched.push(via_slot);
        self.spawn_on(
            touched,
            async move {
                let mut result = Ok(format!("{} unlocked", locked.len()));
                for o in locked {
                    if let Err(e) = o.keys().unlock(key.clone()).await {
                        result = Err(format!("unlock: {e}"));
                    }
                }
                if let Err(e) = via.keys().set_autolock(false).await {
                    result = Err(format!("autolock off: {e}"));
                }
                Done::Secret(SecretDone::Keyring {
                    what: "autolock off".into(),
                    result,
                })
            },
            Done::Secret(SecretDone::Keyring {
                what: "autolock off".into(),
                result: Err("timed out".into()),
            }),
        );
    }

    /// A member that restarted locked gets the key from its operator
    /// (unless an autolock fault wants it locked for now).
    pub(super) fn unlock_if_locked(&mut self, slot: usize) {
        if self.secrets.autolock_active {
            return;
        }
        let Some(objects) = self.objects_of(slot) else {
            return;
        };
        if !objects.keys().is_locked() && !self.secrets.needs_key.remove(&slot) {
            return;
        }
        let Some(key) = self.secrets.unlock_key.clone() else {
            self.learn_unlock_key(slot);
            return;
        };
        let older = self.secrets.old_unlock_keys.clone();
        self.spawn_on(
            vec![slot],
            async move {
                // The current key first, then the replaced ones: a member
                // whose file is sealed under one of those opens only so.
                let mut result = objects.keys().unlock(key).await;
                for old in older {
                    if !matches!(result, Err(secretd_secrets::Error::Invalid(_))) {
                        break;
                    }
                    result = objects.keys().unlock(old).await;
                }
                if matches!(result, Err(secretd_secrets::Error::Invalid(_))) {
                    return Done::Secret(SecretDone::StaleKey);
                }
                Done::Secret(SecretDone::Keyring {
                    what: format!("m{slot} unlock"),
                    result: result.map(|()| "ok".into()).map_err(|e| e.to_string()),
                })
            },
            Done::Secret(SecretDone::Keyring {
                what: format!("m{slot} unlock"),
                result: Err("timed out".into()),
            }),
        );
    }

    /// The operator asks an unlocked member for the current unlock key
    /// (`secretctl cluster unlock-key`): an autolock switch whose answer
    /// was lost, or a key rotated since, leaves it without one.
    fn learn_unlock_key(&mut self, not: usize) {
        let Some(from_slot) = self
            .up_members()
            .into_iter()
            .filter(|s| *s != not)
            .find(|s| self.objects_of(*s).is_some_and(|o| !o.keys().is_locked()))
        else {
            return;
        };
        let from = self.objects_of(from_slot).expect("up");
        self.spawn_on(
            vec![from_slot],
            async move {
                // Empty without autolock: no key to learn.
                let key = from
                    .keys()
                    .unlock_key(false)
                    .await
                    .ok()
                    .filter(|k| !k.is_empty());
                Done::Secret(SecretDone::KeyLearned(key))
            },
            Done::Secret(SecretDone::KeyLearned(None)),
        );
    }

    /// After the cluster healed: every member opens every acknowledged
    /// version.
    pub(super) fn final_secret_checks(&mut self) {
        let Some(id) = self.secrets.acked.id.clone() else {
            return;
        };
        let versions: Vec<(u64, Vec<u8>)> = self
            .secrets
            .acked
            .versions
            .iter()
            .map(|(v, d)| (*v, d.clone()))
            .collect();
        for slot in self.up_members() {
            let objects = self.objects_of(slot).expect("up");
            let (id, versions) = (id.clone(), versions.clone());
            // How far it got, for the message if it runs out of time.
            let progress = std::rc::Rc::new(std::cell::RefCell::new((0usize, String::new())));
            let seen = progress.clone();
            let total = versions.len();
            self.spawn_on(
                vec![slot],
                async move {
                    let mut failures = Vec::new();
                    for (v, want) in versions {
                        seen.borrow_mut().1 = format!("version {v}");
                        match objects.open_secret(&id, v, false).await {
                            Ok(got) if got.expose() == want.as_slice() => {}
                            Ok(got) => failures.push(format!(
                                "version {v} decrypted to {:?}, {:?} was written",
                                String::from_utf8_lossy(got.expose()),
                                String::from_utf8_lossy(&want)
                            )),
                            Err(e) => failures.push(format!("version {v}: {e}")),
                        }
                        seen.borrow_mut().0 += 1;
                    }
                    Done::Secret(SecretDone::Final { slot, failures })
                },
                Done::Secret(SecretDone::FinalTimedOut {
                    slot,
                    total,
                    progress,
                }),
            );
        }
    }

    pub(super) fn secret_done(&mut self, done: SecretDone) {
        match done {
            SecretDone::Written { id, version, data } => self.written(id, version, data),
            SecretDone::NotWritten {
                create,
                unknown,
                why,
            } => self.not_written(create, unknown, why),
            SecretDone::Resolved(found) => self.resolved(found),
            SecretDone::Read { slot, version, got } => self.read_back_done(slot, version, got),
            SecretDone::NeedsKey(slot) => {
                self.secrets.needs_key.insert(slot);
            }
            SecretDone::StaleKey => self.secrets.replace_unlock_key(None),
            SecretDone::KeyLearned(key) => {
                if key.is_some() {
                    self.secrets.replace_unlock_key(key);
                }
            }
            SecretDone::Keyring { what, result } => {
                self.trace.note(self.now_ms, format!("{what}: {result:?}"));
            }
            SecretDone::AutolockOn { victim, key } => {
                self.trace
                    .note(self.now_ms, format!("autolock on: {}", key.is_some()));
                if let Some(key) = key {
                    self.secrets.replace_unlock_key(Some(key));
                    self.restart(victim);
                }
            }
            SecretDone::FinalTimedOut {
                slot,
                total,
                progress,
            } => {
                let (opened, at) = progress.borrow().clone();
                self.invariants.violations.push(format!(
                    "end: m{slot}: secret {SECRET_NAME}: could not open the acknowledged \
                     versions in time ({opened} of {total} opened, waiting on {at})"
                ));
            }
            SecretDone::Final { slot, failures } => {
                for f in failures {
                    self.invariants
                        .violations
                        .push(format!("end: m{slot}: secret {SECRET_NAME}: {f}"));
                }
            }
        }
    }

    fn written(&mut self, id: String, version: u64, data: Vec<u8>) {
        self.secrets.busy = false;
        self.trace.note(
            self.now_ms,
            format!("secret version {version} acknowledged"),
        );
        self.secrets.acked.id = Some(id);
        self.secrets.acked.versions.insert(version, data);
    }

    /// An acknowledged version read back must decrypt to what was written.
    fn read_back_done(&mut self, slot: usize, version: u64, got: Result<Vec<u8>, String>) {
        self.secrets.busy = false;
        let want = &self.secrets.acked.versions[&version];
        if let Ok(got) = got {
            if &got != want {
                self.invariants.violations.push(format!(
                    "{} ms: m{slot} decrypted version {version} to {:?}, {:?} was written",
                    self.now_ms,
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want)
                ));
            }
        }
    }

    fn not_written(&mut self, create: Option<Vec<u8>>, unknown: bool, why: String) {
        self.secrets.busy = false;
        self.trace
            .note(self.now_ms, format!("secret write failed: {why}"));
        match create {
            Some(data) if unknown => {
                self.secrets.acked.create_unknown.push(data);
                self.secrets.acked.lookup_due = true;
            }
            // An earlier create of ours landed after all: look it up.
            Some(_) if why.contains("already exists") => self.secrets.acked.lookup_due = true,
            _ => {}
        }
    }

    fn resolved(&mut self, found: Result<Option<String>, String>) {
        self.secrets.busy = false;
        self.trace
            .note(self.now_ms, format!("secret lookup: {found:?}"));
        match found {
            Ok(Some(id)) => {
                // Version 1 holds what a lost create wrote: which one is
                // known only if there was one.
                let lost = std::mem::take(&mut self.secrets.acked.create_unknown);
                if let [data] = lost.as_slice() {
                    self.secrets.acked.versions.insert(1, data.clone());
                }
                self.secrets.acked.id = Some(id);
                self.secrets.acked.lookup_due = false;
            }
            // Not there (yet): the client may create again; a create still
            // in the log would make that one fail with "already exists".
            Ok(None) => self.secrets.acked.lookup_due = false,
            Err(_) => {}
        }
    }

    /// A clean restart (nothing lost): the member reads its keyring anew.
    fn restart(&mut self, slot: usize) {
        if self.members[slot].removed || self.stop_member(slot).is_none() {
            return;
        }
        let m = &mut self.members[slot];
        m.disk.crash(usize::MAX, &mut |extra| extra);
        m.outbox.take();
        self.trace.note(self.now_ms, format!("m{slot} restarts"));
        self.start_member(slot);
    }
}

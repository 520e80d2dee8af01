//! The peer wire each peer speaks (its release, `PEER_WIRE_VERSION`), as
//! this member last learnt it. What a member proposes depends on it (the
//! bound on a write's answer only while every peer measures it), so a
//! member that restarts while a peer is down must not forget what that
//! peer ran: the last learnt versions are kept in the data directory
//! (`peer-wires`) and count for a peer until this run reaches it again.
//! Reached, a peer counts as the raw stream's wire (2) until it says its
//! own, asked at every connection (it may have been rolled back).
//!
//! The file is advisory: unreadable or malformed, it is ignored with a
//! warning, and every peer counts as not known (the cautious side).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Peers a file holds at most (a cluster has at most a few members; past
/// this the file is not ours).
const PEERS_MAX: usize = 1_024;

#[derive(Default)]
struct Known {
    /// Learnt this run.
    seen: HashMap<u64, u32>,
    /// Learnt by an earlier run, from the file.
    remembered: HashMap<u64, u32>,
}

/// Shared by the transport and its sender tasks.
#[derive(Clone)]
pub(super) struct PeerWires {
    known: Arc<parking_lot::Mutex<Known>>,
    file: Option<Arc<PathBuf>>,
}

impl PeerWires {
    /// What `file` remembers (nothing if absent or unreadable).
    pub fn load(file: Option<PathBuf>) -> PeerWires {
        let remembered = file.as_deref().map(read).unwrap_or_default();
        PeerWires {
            known: Arc::new(parking_lot::Mutex::new(Known {
                seen: HashMap::new(),
                remembered,
            })),
            file: file.map(Arc::new),
        }
    }

    /// The wire `peer` is known to speak: as seen this run, or as
    /// remembered until it is reached.
    pub fn get(&self, peer: u64) -> Option<u32> {
        let k = self.known.lock();
        k.seen.get(&peer).or(k.remembered.get(&peer)).copied()
    }

    /// `peer` was reached and speaks at least `wire` as far as we know
    /// now; the wire it spoke before, this run.
    pub fn reached(&self, peer: u64, wire: u32) -> Option<u32> {
        self.known.lock().seen.insert(peer, wire)
    }

    /// `peer` said it speaks `wire`: kept, and written down if that is news.
    pub fn learnt(&self, peer: u64, wire: u32) {
        let snapshot = {
            let mut k = self.known.lock();
            k.seen.insert(peer, wire);
            if k.remembered.insert(peer, wire) == Some(wire) {
                return;
            }
            k.remembered.clone()
        };
        if let Some(file) = &self.file {
            if let Err(e) = write(file, &snapshot) {
                tracing::warn!(file = %file.display(), error = %e, "cannot keep the peers' wire versions");
            }
        }
    }

    /// Forgets peers no longer in the cluster.
    pub fn retain(&self, wanted: impl Fn(u64) -> bool) {
        let mut k = self.known.lock();
        k.seen.retain(|id, _| wanted(*id));
        k.remembered.retain(|id, _| wanted(*id));
    }
}

/// Bytes a file holds at most: `PEERS_MAX` lines of a 16-digit id and
/// a version.
const FILE_BYTES_MAX: u64 = PEERS_MAX as u64 * 32;

/// Lines of `<peer id, hex> <wire>`.
fn read(file: &std::path::Path) -> HashMap<u64, u32> {
    use std::io::Read as _;
    let mut text = String::new();
    let read = std::fs::File::open(file)
        .and_then(|f| f.take(FILE_BYTES_MAX + 1).read_to_string(&mut text));
    let text = match read {
        Ok(n) if n as u64 > FILE_BYTES_MAX => {
            tracing::warn!(file = %file.display(), "the peers' wire versions file is larger than any it could be; every peer counts as not known");
            return HashMap::new();
        }
        Ok(_) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the peers' wire versions; every peer counts as not known");
            return HashMap::new();
        }
    };
    let parsed: Option<HashMap<u64, u32>> = text
        .lines()
        .take(PEERS_MAX + 1)
        .map(|l| {
            let (id, wire) = l.split_once(' ')?;
            Some((u64::from_str_radix(id, 16).ok()?, wire.parse().ok()?))
        })
        .collect();
    match parsed {
        Some(m) if m.len() <= PEERS_MAX => m,
        _ => {
            tracing::warn!(file = %file.display(), "the peers' wire versions file is malformed; every peer counts as not known");
            HashMap::new()
        }
    }
}

/// Written aside, synced, renamed into place and the rename synced: a
/// crash (or a power cut) leaves the old file or the new one, never an
/// empty one under the file's name.
fn write(file: &std::path::Path, wires: &HashMap<u64, u32>) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut text = String::new();
    for (id, wire) in wires {
        text.push_str(&format!("{id:x} {wire}\n"));
    }
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)?;
    match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => std::fs::File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_remembers_what_each_peer_said_until_it_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peer-wires");
        let w = PeerWires::load(Some(file.clone()));
        assert_eq!(w.get(0xa), None);
        w.reached(0xa, 2);
        assert_eq!(w.get(0xa), Some(2));
        w.learnt(0xa, 3);
        w.learnt(0xb, 1);
        // The next run knows both before reaching them; reached, a peer
        // counts as the raw stream's until it says again.
        let again = PeerWires::load(Some(file.clone()));
        assert_eq!((again.get(0xa), again.get(0xb)), (Some(3), Some(1)));
        again.reached(0xa, 2);
        assert_eq!(again.get(0xa), Some(2));
        again.retain(|id| id != 0xb);
        assert_eq!(again.get(0xb), None);
        // Not ours, or garbage: ignored.
        let huge = "a 3\n".repeat(100_000);
        for bad in ["a 3\nzz 3\n", "a three\n", "a\n", &huge, "a 3\n\u{ff}"] {
            std::fs::write(&file, bad).unwrap();
            assert_eq!(
                PeerWires::load(Some(file.clone())).get(0xa),
                None,
                "{bad:?}"
            );
        }
    }
}

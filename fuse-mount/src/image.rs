//! The agent's picture of what it serves: every task assigned to its node
//! and, per task, every file with its owner, mode and plaintext. Built
//! whole from each state the cluster sends; both backends render it.

use std::collections::BTreeMap;
use std::sync::Arc;

use secretd_crypto::SecretBytes;

/// (secret?, object id, version): equal sources mean equal bytes.
pub type Source = (bool, String, u64);
/// A file without its bytes: (path, uid, gid, mode, source).
pub type FileShape = (String, u32, u32, u32, Source);

#[derive(Clone)]
pub struct FileEntry {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Arc<SecretBytes>,
    /// What the bytes are (secret or config, object id, version): equal
    /// keys mean equal bytes, so unchanged files are not rewritten.
    pub source: Source,
}

#[derive(Clone, Default)]
pub struct Image {
    /// task -> relative path -> file
    pub tasks: BTreeMap<String, BTreeMap<String, FileEntry>>,
}

impl Image {
    /// A task's files without their bytes: what decides whether a task's
    /// directory must be rewritten.
    pub fn fingerprint(files: &BTreeMap<String, FileEntry>) -> Vec<FileShape> {
        files
            .iter()
            .map(|(p, f)| (p.clone(), f.uid, f.gid, f.mode, f.source.clone()))
            .collect()
    }
}

/// How an image reaches the node: a FUSE filesystem or a tmpfs tree.
pub trait Backend: Send + Sync {
    /// Makes the mount show `image`. Readers see each file's old or new
    /// bytes, never a mix.
    fn apply(&self, image: &Image) -> anyhow::Result<()>;
    /// Unmounts; the plaintext goes with it.
    fn shutdown(&self);
}

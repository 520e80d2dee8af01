//! Snapshot files that a sender may stream while they are still being
//! written. At a million keys the leader takes about a second to write a
//! snapshot file and about as long to send it; one after the other, a new
//! member waited for both. A file being written registers here under its
//! final path, with how many bytes are in the file so far and, at the
//! end, how it ended; the sender reads up to what is written and waits
//! for more. The receiver checks the whole stream against the file's
//! sha256 trailer, so a write that fails half way is refused there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

/// How far a growing file is.
#[derive(Default)]
pub struct Progress {
    written: AtomicU64,
    /// Set once: the final length, or why the write failed.
    outcome: Mutex<Option<Result<u64, String>>>,
}

impl Progress {
    /// Bytes in the file so far (they can be read).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn outcome(&self) -> Option<Result<u64, String>> {
        self.outcome.lock().clone()
    }

    pub(crate) fn wrote(&self, bytes: usize) {
        self.written.fetch_add(bytes as u64, Ordering::AcqRel);
    }
}

/// Files being written: final path → (temporary path, progress).
type Registry = HashMap<PathBuf, (PathBuf, Arc<Progress>)>;
static GROWING: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

/// A file being written, registered until it is done or dropped (then
/// it failed: a sender streaming it stops).
pub(crate) struct Guard {
    path: PathBuf,
    progress: Arc<Progress>,
    ended: bool,
}

impl Guard {
    /// A file starts at `tmp`, to be renamed to `path` when done.
    pub(crate) fn register(path: &Path, tmp: &Path) -> Guard {
        let progress = Arc::new(Progress::default());
        GROWING
            .lock()
            .insert(path.to_path_buf(), (tmp.to_path_buf(), progress.clone()));
        Guard {
            path: path.to_path_buf(),
            progress,
            ended: false,
        }
    }

    pub(crate) fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The file is complete at its final path.
    pub(crate) fn done(mut self) {
        let len = self.progress.written();
        self.end(Ok(len));
    }

    fn end(&mut self, outcome: Result<u64, String>) {
        self.ended = true;
        *self.progress.outcome.lock() = Some(outcome);
        let mut g = GROWING.lock();
        if g.get(&self.path)
            .is_some_and(|(_, p)| Arc::ptr_eq(p, &self.progress))
        {
            g.remove(&self.path);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.ended {
            self.end(Err("the snapshot write failed".into()));
        }
    }
}

/// The file that will be at `path`, while it is being written: where it
/// is now and its progress.
pub fn lookup(path: &Path) -> Option<(PathBuf, Arc<Progress>)> {
    GROWING.lock().get(path).cloned()
}

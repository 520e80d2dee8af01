//! State snapshots written off the raft thread. At a million keys a
//! snapshot file takes about a second to write; written on the raft loop,
//! that second stopped every write and heartbeat of the leader, and with
//! a few million keys it would outlast the election timeout. The loop now
//! takes a point-in-time view of the database (microseconds), hands it to
//! a writer thread, and goes on; the file's outcome arrives on a channel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Arc;

use crate::error::{Result, StoreError};
use crate::snapshot::{SnapshotHeader, SnapshotWriter};

use super::StateSource;

/// A state snapshot file being written (`start`).
pub struct Writing {
    pub index: u64,
    pub term: u64,
    /// The configuration the file carries (encoded).
    pub conf_state: Vec<u8>,
    done: Receiver<Result<PathBuf>>,
    cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where a write stands (`Writing::poll`).
pub enum Outcome {
    Running,
    Done(Result<PathBuf>),
}

impl Writing {
    /// Starts writing `state` at `header`'s index into `dir`; returns once
    /// the writer holds its view of the state, so the caller may change
    /// the state from then on. A state without views (the simulated disk)
    /// is written before this returns.
    pub fn start(
        state: Arc<dyn StateSource>,
        dir: &Path,
        header: SnapshotHeader,
    ) -> Result<Writing> {
        let (index, term, conf_state) = (header.index, header.term, header.conf_state.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = sync_channel(1);
        let thread = if state.has_views() {
            let (taken_tx, taken) = sync_channel::<()>(1);
            let (dir, flag) = (dir.to_path_buf(), cancel.clone());
            let thread = std::thread::Builder::new()
                .name("snapshot-writer".into())
                .spawn(move || {
                    let written = write(&*state, &dir, &header, flag, &mut || {
                        let _ = taken_tx.send(());
                    });
                    let _ = done_tx.send(written);
                })
                .map_err(|e| StoreError::Storage(format!("cannot start a snapshot writer: {e}")))?;
            // Either the view is taken, or the writer failed before it (its
            // sender is dropped with the thread's end, and `done` says why).
            let _ = taken.recv();
            Some(thread)
        } else {
            let _ = done_tx.send(write(&*state, dir, &header, cancel.clone(), &mut || {}));
            None
        };
        Ok(Writing {
            index,
            term,
            conf_state,
            done,
            cancel,
            thread,
        })
    }

    /// Waits for the file.
    #[cfg(test)]
    pub fn wait(mut self) -> Result<PathBuf> {
        let r = self.done.recv().unwrap_or_else(|_| {
            Err(StoreError::Storage(
                "the snapshot writer ended without an outcome".into(),
            ))
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r
    }

    pub fn poll(&mut self) -> Outcome {
        match self.done.try_recv() {
            Ok(r) => Outcome::Done(r),
            Err(TryRecvError::Empty) => Outcome::Running,
            Err(TryRecvError::Disconnected) => Outcome::Done(Err(StoreError::Storage(
                "the snapshot writer ended without an outcome".into(),
            ))),
        }
    }
}

impl Drop for Writing {
    /// A member stopping stops its writer, and waits for it: the writer
    /// holds the database open.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write(
    state: &dyn StateSource,
    dir: &Path,
    header: &SnapshotHeader,
    cancel: Arc<AtomicBool>,
    taken: &mut dyn FnMut(),
) -> Result<PathBuf> {
    let mut w = SnapshotWriter::create(dir, header)?;
    w.cancel_on(cancel);
    state.write_snapshot(&mut w, taken)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, WriteBatch};
    use crate::mvcc::{Applier, KvOp, Mvcc};
    use crate::pb::etcdserverpb::PutRequest;
    use crate::pb::internal::internal_request::Request;
    use crate::snapshot::{SnapshotReader, CF_TAG_KV};

    fn put(a: &mut Applier, key: &str) {
        let mut batch = WriteBatch::default();
        let req = Request::Put(PutRequest {
            key: key.into(),
            value: vec![7; 300],
            ..Default::default()
        });
        let (res, _) = a.apply(KvOp::try_from(&req).unwrap(), &mut batch, false);
        res.unwrap();
        a.stage_revision(&mut batch);
        a.mvcc().db_for_tests().write_sync(batch).unwrap();
        a.publish();
    }

    fn kv_records(path: &Path) -> usize {
        let mut r = SnapshotReader::open(path).unwrap();
        let mut n = 0;
        while let Some((cf, _, _)) = r.next_record().unwrap() {
            n += usize::from(cf == CF_TAG_KV);
        }
        n
    }

    /// The file holds the state as it was when `start` returned, however
    /// much is written while the writer runs; a stopped member's writer
    /// ends at once instead of finishing.
    #[test]
    fn a_snapshot_written_aside_is_the_state_when_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let mvcc = Mvcc::open(Db::open(dir.path()).unwrap()).unwrap();
        let mut a = Applier::new(mvcc.clone());
        for i in 0..2000 {
            put(&mut a, &format!("k{i:05}"));
        }
        let header = |index| SnapshotHeader {
            index,
            term: 1,
            conf_state: Vec::new(),
        };
        let snaps = dir.path().join("snap");
        let w = Writing::start(mvcc.clone(), &snaps, header(1)).unwrap();
        for i in 2000..3000 {
            put(&mut a, &format!("k{i:05}"));
        }
        assert_eq!(kv_records(&w.wait().unwrap()), 2000);

        let w = Writing::start(mvcc.clone(), &snaps, header(2)).unwrap();
        drop(w); // cancels and joins
        let again = Writing::start(mvcc, &snaps, header(3)).unwrap();
        assert_eq!(kv_records(&again.wait().unwrap()), 3000);
    }
}

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

/// Mode of the mount's root: root alone lists the tasks. A container
/// reaches its task's directory through a bind mount, which does not pass
/// through the root.
pub const ROOT_DIR_MODE: u32 = 0o700;

/// Owner, group and mode of a task's directories: only root and the uids
/// and gids its files are given may enter. Root enters anyway, so files
/// left to root (uid or gid 0, the defaults) do not count. When the other
/// files share one uid, that uid owns the directories; when they share one
/// gid, that group may enter too. Files of several non-root uids and gids:
/// only root and the common uid or gid (if any) enter; give such a task a
/// common gid.
pub fn task_dir_owner(files: &BTreeMap<String, FileEntry>) -> (u32, u32, u32) {
    let common = |f: fn(&FileEntry) -> u32| {
        let mut it = files.values().map(f).filter(|id| *id != 0);
        let first = it.next()?;
        it.all(|x| x == first).then_some(first)
    };
    let uid = common(|f| f.uid);
    let gid = common(|f| f.gid);
    let mode = 0o500 | if gid.is_some() { 0o050 } else { 0 };
    (uid.unwrap_or(0), gid.unwrap_or(0), mode)
}

/// `(uid_t)-1`: chown takes it for "no change", so no file can be owned
/// by it.
const OWNER_UNCHANGED: u32 = u32::MAX;

/// Checks that a task's files can coexist in one tree: relative paths of
/// plain components, none of them the agent's own (`..` names), no file
/// that is also another file's directory, and owners a file can have
/// (not 4294967295). The server refuses such tasks at creation; this
/// guards against tasks stored before it did, the same way in both
/// backends.
pub fn check_task(files: &BTreeMap<String, FileEntry>) -> Result<(), String> {
    for (path, f) in files {
        for (what, id) in [("uid", f.uid), ("gid", f.gid)] {
            if id == OWNER_UNCHANGED {
                return Err(format!(
                    "target {path:?}: {what} {id} is not a valid owner (it is (uid_t)-1, \"no change\" to chown)"
                ));
            }
        }
        if path.is_empty() || path.starts_with('/') {
            return Err(format!("bad target path {path:?}"));
        }
        for part in path.split('/') {
            if part.is_empty() || part == "." || part.starts_with("..") {
                return Err(format!(
                    "target {path:?} has a component that is empty, '.', or starts with '..'"
                ));
            }
            if part.chars().any(char::is_control) {
                return Err(format!("target {path:?} has a control character"));
            }
        }
        let dir = format!("{path}/");
        // BTreeMap order: anything under `path/` sorts right after it.
        if let Some((other, _)) = files.range(dir.clone()..).next() {
            if other.starts_with(&dir) {
                return Err(format!(
                    "targets {path:?} and {other:?} collide: a file cannot also be a directory"
                ));
            }
        }
    }
    Ok(())
}

/// Test hook, compiled only into debug builds: `SECRETD_TEST_FAIL_TASK=T`
/// makes every write of task `T` fail (after its first file, so the
/// cleanup of a half-written task is exercised too). It is how the tests
/// break one task of a node and watch the others keep working.
pub fn injected_failure(task: &str) -> Option<String> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let t = std::env::var("SECRETD_TEST_FAIL_TASK").ok()?;
    (t == task).then(|| format!("injected failure for task {task} (SECRETD_TEST_FAIL_TASK)"))
}

/// Tasks a backend could not show, with the reason.
pub type Failures = BTreeMap<String, String>;

/// How an image reaches the node: a FUSE filesystem or a tmpfs tree.
pub trait Backend: Send + Sync {
    /// Makes the mount show `image`, task by task. Readers see each file's
    /// old or new bytes, never a mix. A task that cannot be shown is
    /// returned with the reason and keeps what it showed before (nothing,
    /// if it is new); every other task, addition and removal still applies.
    fn apply(&self, image: &Image) -> Failures;
    /// Unmounts; the plaintext goes with it.
    fn shutdown(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, u32, u32)]) -> BTreeMap<String, FileEntry> {
        list.iter()
            .map(|(p, uid, gid)| {
                (
                    p.to_string(),
                    FileEntry {
                        uid: *uid,
                        gid: *gid,
                        mode: 0o444,
                        data: Arc::new(SecretBytes::new(b"x".to_vec())),
                        source: (true, "id".into(), 1),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn tasks_whose_files_collide_are_refused() {
        assert!(check_task(&files(&[("password", 0, 0), ("etc/app.conf", 0, 0)])).is_ok());
        assert!(check_task(&files(&[("a", 0, 0), ("a.b", 0, 0), ("a-b/c", 0, 0)])).is_ok());
        for bad in [
            &[("etc", 0, 0), ("etc/app.conf", 0, 0)][..],
            &[("a/b", 0, 0), ("a/b/c", 0, 0)][..],
            &[("..data", 0, 0)][..],
            &[("x/..2024_01/y", 0, 0)][..],
            &[("a//b", 0, 0)][..],
            &[("a\nb", 0, 0)][..],
        ] {
            assert!(check_task(&files(bad)).is_err(), "{bad:?}");
        }
    }

    /// `(uid_t)-1` asks chown for "no change": the tmpfs backend once left
    /// such a file to root while FUSE showed it owned by 4294967295. Both
    /// refuse the task alike now, and show the others.
    #[test]
    fn both_backends_refuse_an_owner_of_minus_one() {
        use crate::{fusefs::FuseBackend, tmpfs::TmpfsBackend};
        use std::os::unix::fs::MetadataExt;
        assert!(
            nix::unistd::Uid::effective().is_root() && std::path::Path::new("/dev/fuse").exists(),
            "this test mounts FUSE and a tmpfs: run it as root, with /dev/fuse"
        );
        type Mount = fn(&std::path::Path) -> anyhow::Result<Box<dyn Backend>>;
        let backends: [(&str, Mount); 2] = [
            ("fuse", |p| Ok(Box::new(FuseBackend::mount(p)?))),
            ("tmpfs", |p| Ok(Box::new(TmpfsBackend::mount(p)?))),
        ];
        for (name, mount) in backends {
            for (uid, gid) in [(u32::MAX, 0), (0, u32::MAX)] {
                let dir = std::env::temp_dir()
                    .join(format!("secretd-owner-test-{}-{name}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let b = mount(&dir).unwrap();
                let mut image = Image::default();
                image.tasks.insert("bad".into(), files(&[("pw", uid, gid)]));
                image
                    .tasks
                    .insert("good".into(), files(&[("pw", 1000, 1000)]));
                let failures = b.apply(&image);
                let shown_bad = dir.join("bad/pw").exists();
                let good = std::fs::metadata(dir.join("good/pw")).map(|m| m.uid());
                b.shutdown();
                std::fs::remove_dir(&dir).unwrap();
                let why = failures.get("bad").map(String::as_str).unwrap_or_default();
                assert!(
                    why.contains("4294967295"),
                    "{name}, uid {uid} gid {gid}: {failures:?}"
                );
                assert!(!shown_bad, "{name}: the refused task is shown");
                assert_eq!(good.ok(), Some(1000), "{name}: the other task");
                assert_eq!(failures.len(), 1, "{name}: {failures:?}");
            }
        }
    }

    #[test]
    fn task_directories_admit_only_their_uid_and_gid() {
        assert_eq!(
            task_dir_owner(&files(&[("a", 1000, 1000), ("b", 1000, 1000)])),
            (1000, 1000, 0o550)
        );
        assert_eq!(
            task_dir_owner(&files(&[("a", 1000, 50), ("b", 1001, 50)])),
            (0, 50, 0o550)
        );
        assert_eq!(
            task_dir_owner(&files(&[("a", 1000, 1), ("b", 1000, 2)])),
            (1000, 0, 0o500)
        );
        assert_eq!(task_dir_owner(&files(&[])), (0, 0, 0o500));
        // Root's files (the defaults) do not count: it enters anyway.
        assert_eq!(
            task_dir_owner(&files(&[("pw", 1000, 1001), ("conf", 0, 0)])),
            (1000, 1001, 0o550)
        );
        assert_eq!(task_dir_owner(&files(&[("a", 0, 0)])), (0, 0, 0o500));
    }
}

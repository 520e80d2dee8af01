//! The data directory is the member's alone: it holds configs and etcd
//! values in plaintext, and the wrapped keyring. Like etcd, secretd
//! creates it 0700 and everything in it 0600; a directory that others can
//! read is tightened at start, and the member logs what it changed.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Mode bits that let anyone but the owner in.
const OTHERS_MASK: u32 = 0o077;
/// Files looked at when tightening an existing directory; a data directory
/// holds a few hundred at most.
const FILES_CHECKED_MAX: usize = 100_000;

/// New files and directories of this process get no group or other bits
/// (RocksDB creates its files with 0644 and the umask).
pub fn private_umask() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` 0700, or takes group and other access away from it and
/// from everything under it. Returns how many entries were tightened.
pub fn secure(dir: &Path) -> Result<usize> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        // `recursive` applies the mode through the umask; be explicit.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        return Ok(0);
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the data directory {}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("the data directory {} is not a directory", dir.display());
    }
    let mut changed = Vec::new();
    tighten(dir, &mut changed, &mut 0)?;
    if !changed.is_empty() {
        tracing::warn!(
            data_dir = %dir.display(),
            entries = changed.len(),
            first = %changed[0],
            "the data directory was readable by other users; removed group and other access (etcd's rule: 0700 directories, 0600 files)"
        );
    }
    Ok(changed.len())
}

fn tighten(path: &Path, changed: &mut Vec<String>, seen: &mut usize) -> Result<()> {
    *seen += 1;
    if *seen > FILES_CHECKED_MAX {
        anyhow::bail!(
            "the data directory holds more than {FILES_CHECKED_MAX} entries; is it the right one?"
        );
    }
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & OTHERS_MASK != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7700))
            .with_context(|| {
                format!(
                    "{} is readable by other users and cannot be made private (chmod go-rwx it)",
                    path.display()
                )
            })?;
        changed.push(format!("{} ({:o})", path.display(), mode & 0o7777));
    }
    if meta.is_dir() {
        for e in
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
        {
            tighten(&e?.path(), changed, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_tightens_open_ones() {
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("a/b.etcd");
        assert_eq!(secure(&fresh).unwrap(), 0);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        let open = t.path().join("open.etcd");
        std::fs::create_dir_all(open.join("member")).unwrap();
        std::fs::write(open.join("member/v"), b"x").unwrap();
        for (p, m) in [(&open, 0o755), (&open.join("member"), 0o755)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::fs::set_permissions(
            open.join("member/v"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(secure(&open).unwrap(), 3);
        assert_eq!(mode(&open), 0o700);
        assert_eq!(mode(&open.join("member/v")), 0o600);
        assert_eq!(secure(&open).unwrap(), 0, "nothing left to change");
    }
}

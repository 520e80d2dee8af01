//! The keyring's files under `<data dir>/keys/`, written so a crash leaves
//! either the old file or the new one (temp file, fsync, rename, fsync
//! dir), and removed so a copy-on-write file system is the only place an
//! old key may linger.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Error, Result};

pub(crate) const KEYRING_FILE: &str = "keyring";
pub(crate) const LOCKED_KEYRING_FILE: &str = "keyring.locked";
pub(crate) const WRAP_KEY_FILE: &str = "wrap.key";

/// Writes `dir/name` atomically: temp file (0600), fsync, rename, fsync dir.
pub(crate) fn write_file(dir: &Path, name: &str, blob: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(blob)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::internal(format!("cannot save {name}: {e}")))
}

/// Overwrites a small key file with zeros before unlinking it (a best
/// effort on copy-on-write file systems), then fsyncs the directory.
pub(crate) fn remove_file(dir: &Path, name: &str) -> Result<()> {
    let p = dir.join(name);
    let run = || -> std::io::Result<()> {
        match std::fs::metadata(&p) {
            Ok(m) => {
                let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
                f.write_all(&vec![0u8; m.len() as usize])?;
                f.sync_all()?;
                std::fs::remove_file(&p)?;
                std::fs::File::open(dir)?.sync_all()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    run().map_err(|e| Error::internal(format!("cannot remove {}: {e}", p.display())))
}

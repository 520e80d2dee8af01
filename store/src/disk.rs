//! Free space on the data directory's file system. RocksDB does not come
//! back from running out of space in the middle of a write (Debian's build
//! aborts on an internal assertion right after the failed write), so the
//! member stops on its own, with a message that says why, while a reserve
//! is still free: at start, and on every raft tick.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Below this much free space the member refuses to start, or stops.
/// RocksDB preallocates WAL files and needs room to flush a memtable.
pub const DISK_FREE_MIN_BYTES: u64 = 64 << 20;

/// Bytes available to this process on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// An error when the file system holding `path` is (nearly) full.
pub fn check(path: &Path) -> Result<()> {
    let free = free_bytes(path)
        .map_err(|e| StoreError::Storage(format!("cannot stat {}: {e}", path.display())))?;
    if free < DISK_FREE_MIN_BYTES {
        return Err(StoreError::Storage(format!(
            "the file system holding {} is full: {} KiB free, at least {} MiB needed; free some space and restart the member",
            path.display(),
            free / 1024,
            DISK_FREE_MIN_BYTES >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_missing_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let err = check(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("cannot stat"), "{err}");
    }
}

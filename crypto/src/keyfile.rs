//! The member's key file: 32 random bytes in the data directory, mode 0600.
//! In the default ("unlocked") mode it wraps the keyring on disk. It protects
//! against someone who gets the RocksDB files or a backup without the key
//! file; it does not protect against root on the member, who can read both.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{CryptoError, Key, KEY_BYTES};

fn err(path: &Path, msg: impl Into<String>) -> CryptoError {
    CryptoError::KeyFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Loads the key file, creating it (0600, fsynced) if it does not exist.
/// Refuses a file that group or others can access, or of the wrong size.
///
/// A new key is written whole to `<file>.tmp`, synced, then linked into
/// place: the file appears with its 32 bytes or not at all. Created in
/// place, a member killed between the create and the write left an empty
/// key file and could never start again (found by `it membership`: a
/// joiner killed right after its raft loop started).
pub fn load_or_create_key_file(path: &Path) -> Result<Key, CryptoError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(path, format!("key file has mode {mode:04o}; it must not be accessible to group or others (chmod 600)")));
            }
            if meta.len() != KEY_BYTES as u64 {
                return Err(err(path, format!("key file is {} bytes, expected {KEY_BYTES}: damaged or not a secretd key file", meta.len())));
            }
            let mut buf = [0u8; KEY_BYTES];
            fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut buf))
                .map_err(|e| err(path, format!("cannot read: {e}")))?;
            let key = Key::from_slice(&buf);
            zeroize::Zeroize::zeroize(&mut buf);
            key
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            create_whole(path, key.expose(), 0o600)
                .map_err(|e| err(path, format!("cannot create: {e}")))?;
            Ok(key)
        }
        Err(e) => Err(err(path, format!("cannot stat: {e}"))),
    }
}

/// Creates `path` with `data` whole or not at all, never over an existing
/// file: written to `<path>.tmp` (`mode`), synced, linked into place (a
/// link, not a rename, so a file that appeared meanwhile stays), and the
/// directory entry synced. A `.tmp` left by a crash is replaced: it never
/// became the file.
pub fn create_whole(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let _ = fs::remove_file(tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| fs::hard_link(tmp, path));
    let _ = fs::remove_file(tmp);
    written?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_reload_and_refuse_bad_files() {
        let dir = std::env::temp_dir().join(format!("secretd-keyfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        let k1 = load_or_create_key_file(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_key_file(&p).unwrap().expose(), k1.expose());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_key_file(&p)
            .unwrap_err()
            .to_string()
            .contains("mode 0644"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, b"short").unwrap();
        assert!(load_or_create_key_file(&p)
            .unwrap_err()
            .to_string()
            .contains("5 bytes"));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A crash while the key was being written leaves at most a `.tmp`
    /// beside an absent key file: the next start makes a whole key.
    #[test]
    fn a_key_file_appears_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("secretd-keyfile-tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        fs::write(dir.join("key.tmp"), b"").unwrap();
        let k = load_or_create_key_file(&p).unwrap();
        assert_eq!(fs::read(&p).unwrap(), k.expose());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.join("key.tmp").exists(), "the temporary file stays");
        fs::remove_dir_all(&dir).unwrap();
    }
}

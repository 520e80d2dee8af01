//! Test builds only: where the debug hook writes key material, so the
//! canary test can look for KEK and DEK bytes on disk. Release builds do
//! not contain the hook (`#[cfg(debug_assertions)]` on the module).

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

pub const ENV: &str = "SECRETD_TEST_KEY_DUMP";
static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

fn dir() -> Option<&'static PathBuf> {
    DIR.get_or_init(|| std::env::var_os(ENV).map(PathBuf::from))
        .as_ref()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn append(name: &str, bytes: &[u8]) {
    if let Some(d) = dir() {
        let _ = std::fs::create_dir_all(d);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(name))
        {
            // One write per line: members append to the same files.
            let _ = f.write_all(format!("{}\n", hex(bytes)).as_bytes());
        }
    }
}

fn dek(b: &[u8]) {
    append("dek.hex", b);
}

pub fn install() {
    if dir().is_some() {
        tracing::warn!("{ENV} is set: key material is written in the clear (tests only)");
        secretd_crypto::set_dek_observer(dek);
    }
}

pub fn kek(generation: u32, b: &[u8]) {
    append(&format!("kek-{generation}.hex"), b);
}

pub fn unlock_key(b: &[u8]) {
    append("unlock.hex", b);
}

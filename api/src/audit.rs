//! The audit log (`--audit-log FILE`): one JSON line per secret delivery
//! and per change to a secret, config, task or setting. A line records who
//! asked (role from the certificate, and address), what (action, object
//! and version), when, and the outcome. It never holds a plaintext or a key:
//! callers pass only names, IDs and versions.
//!
//! Its size has a budget (`--audit-log-max-bytes`): past half of it the
//! file moves to `FILE.1` and a new one begins, so the two stay under the
//! budget and audit volume can never fill the disk and stop the member
//! (D18). Each such rotation is logged loudly and counted
//! (`secretd_audit_log_rotations_total`): a member rotating often is being
//! flooded, or keeps more history than its budget allows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;
use tonic::{Request, Status};

use crate::identity::{Caller, Role};

static LOG: OnceLock<Mutex<AuditFile>> = OnceLock::new();

static ROTATIONS: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    prometheus::register_int_counter!(
        "secretd_audit_log_rotations_total",
        "Times the audit log reached half its byte budget and moved to FILE.1."
    )
    .expect("metric registered once")
});

/// The open audit file, its size, and its budget.
pub struct AuditFile {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
    max_bytes: u64,
}

impl AuditFile {
    /// Opens (appends to) the audit log, mode 0600.
    pub fn open(path: &Path, max_bytes: u64) -> anyhow::Result<AuditFile> {
        let file = open_file(path)?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(AuditFile {
            path: path.to_path_buf(),
            file,
            bytes,
            max_bytes,
        })
    }

    /// Appends a line, moving the file to `FILE.1` first if the line
    /// would take it past half the budget.
    pub fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.bytes > 0 && self.bytes + len > self.max_bytes / 2 {
            let old = self.path.with_extension(match self.path.extension() {
                Some(e) => format!("{}.1", e.to_string_lossy()),
                None => "1".into(),
            });
            std::fs::rename(&self.path, &old)?;
            self.file = open_file(&self.path).map_err(std::io::Error::other)?;
            self.bytes = 0;
            ROTATIONS.inc();
            tracing::warn!(
                file = %self.path.display(),
                kept = %old.display(),
                max_bytes = self.max_bytes,
                "the audit log reached half its budget and was moved aside; the one before it is gone"
            );
        }
        self.file.write_all(line)?;
        self.bytes += len;
        Ok(())
    }
}

fn open_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("--audit-log {}: {e}", path.display()))
}

/// Opens the member's audit log.
pub fn open(path: &Path, max_bytes: u64) -> anyhow::Result<()> {
    let _ = LOG.set(Mutex::new(AuditFile::open(path, max_bytes)?));
    Ok(())
}

/// Who made a request: the certificate's role, and the address.
pub fn who<T>(req: &Request<T>) -> (String, String) {
    match Caller::of(req) {
        Ok(c) => who_of(&c),
        Err(_) => ("unknown".to_string(), String::new()),
    }
}

pub fn who_of(c: &Caller) -> (String, String) {
    let role = match &c.role {
        Role::Admin => "admin".to_string(),
        Role::Node(n) => format!("node/{n}"),
        Role::Member(n) => format!("member/{n}"),
        Role::Driver(n) => format!("driver/{n}"),
        Role::Unauthenticated => "unauthenticated".to_string(),
        Role::Anonymous => "anonymous".to_string(),
    };
    let addr = c.remote.map(|a| a.to_string()).unwrap_or_default();
    (role, addr)
}

/// A request the role matrix refused, before any service saw it.
pub fn denied(c: &Caller, rpc: &str, status: &Status) {
    record::<()>(&who_of(c), "denied", rpc, None, &Err(status.clone()));
}

/// `count` more refusals like `denied`'s, not written one by one
/// (`refusals`).
pub fn denied_many(c: &Caller, rpc: &str, status: &Status, count: u64) {
    record::<()>(
        &who_of(c),
        &format!("denied x{count}"),
        rpc,
        None,
        &Err(status.clone()),
    );
}

/// Writes one line. A failing audit log is reported in the member's log;
/// the operation has already happened, so it is not undone.
pub fn record<T>(
    who: &(String, String),
    action: &str,
    object: &str,
    version: Option<u64>,
    outcome: &Result<T, Status>,
) {
    let Some(log) = LOG.get() else { return };
    let mut line = serde_json::Map::new();
    line.insert(
        "ts".into(),
        secretd_client::format::rfc3339_nano(secretd_secrets::now_ns()).into(),
    );
    line.insert("who".into(), who.0.clone().into());
    line.insert("remote".into(), who.1.clone().into());
    line.insert("action".into(), action.into());
    // The object as the client named it: bounded, so a hostile name cannot
    // make the audit log grow by a request's size per line.
    line.insert(
        "object".into(),
        secretd_secrets::validate::echo(object).into(),
    );
    if let Some(v) = version {
        line.insert("version".into(), v.into());
    }
    match outcome {
        Ok(_) => {
            line.insert("outcome".into(), "ok".into());
        }
        Err(s) => {
            let outcome = match s.code() {
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "denied",
                _ => "error",
            };
            line.insert("outcome".into(), outcome.into());
            line.insert("error".into(), s.message().into());
        }
    }
    let mut text = serde_json::Value::Object(line).to_string();
    text.push('\n');
    if let Err(e) = log.lock().write(text.as_bytes()) {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever is written, the file and the one moved aside stay within
    /// the budget, and the newest lines are in the file.
    #[test]
    fn the_audit_log_keeps_to_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = AuditFile::open(&path, 64 * 1024).unwrap();
        for i in 0..10_000 {
            f.write(format!("{{\"line\":{i:08}}}\n").as_bytes())
                .unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let old = dir.path().join("audit.log.1");
        assert!(size(&path) + size(&old) <= 64 * 1024);
        assert!(size(&old) > 0, "moved aside");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("{\"line\":00009999}\n"));
        // Reopened, it knows its size.
        let f = AuditFile::open(&path, 64 * 1024).unwrap();
        assert_eq!(f.bytes, size(&path));
    }
}

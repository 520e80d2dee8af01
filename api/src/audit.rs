//! The audit log (`--audit-log FILE`): one JSON line per secret delivery
//! and per change to a secret, config, task or setting. A line records who
//! asked (role from the certificate, and address), what (action, object
//! and version), when, and the outcome. It never holds a plaintext or a key:
//! callers pass only names, IDs and versions.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use parking_lot::Mutex;
use tonic::{Request, Status};

use crate::identity::{Caller, Role};

static LOG: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Opens (appends to) the audit log, mode 0600.
pub fn open(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("--audit-log {}: {e}", path.display()))?;
    let _ = LOG.set(Mutex::new(f));
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
    if let Err(e) = log.lock().write_all(text.as_bytes()) {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

//! A 3-member cluster driven by Debian's real etcdctl: what an operator or
//! orchestrator written for etcd does, and what it must see.
//!
//! - `session`: everyday etcdctl commands and per-endpoint commands.
//! - `gateway`: the JSON gateway compared with etcd 3.4 and 3.5.1.
//! - `patroni`: Patroni and PostgreSQL failing over on secretd.
//! - `auth`: etcd's users, roles and tokens through etcdctl and the gateway.
//!
//! The plain-HTTP helpers here (`http`, `masked`) are shared with other
//! modules.

mod auth;
mod gateway;
mod patroni;
mod session;

use std::time::{Duration, Instant};

/// One HTTP/1.0 request on a plain port: (status, body). `read_for` bounds
/// how long a streaming answer is read.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    read_for: Duration,
) -> (u16, String) {
    http_with(port, method, path, "", body, read_for)
}

/// `http` with extra header lines (each ending in `\r\n`).
fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
    read_for: Duration,
) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    // A whole answer ends with the connection (HTTP/1.0), so wait for it
    // (etcd hashes a new password for tens of milliseconds, more on a busy
    // machine); a stream is read for `read_for`.
    let idle = if read_for.is_zero() { 10_000 } else { 200 };
    s.set_read_timeout(Some(Duration::from_millis(idle)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // A unary answer ends when the member closes the connection (HTTP/1.0):
    // wait for that, however loaded the machine (it once gave up after
    // 200 ms and failed). A stream is read for `read_for`.
    let deadline = Instant::now()
        + if read_for.is_zero() {
            crate::common::secs(30)
        } else {
            read_for
        };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => break,
        }
    }
    crate::common::http_response(&out)
}

/// Values that legitimately differ between two clusters.
fn mask(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "cluster_id" | "member_id" | "raft_term" | "ID" | "hash" | "etcdserver"
                    | "members" | "leader" | "dbSize" | "dbSizeInUse" | "raftIndex"
                    | "raftTerm" | "raftAppliedIndex" | "lease" | "token" => {
                        *x = Value::String("<masked>".into())
                    }
                    "error" | "message" if x.is_string() => {}
                    _ => mask(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// Parses a body as JSON (one object, or one per line for streams) and
/// masks it.
pub(crate) fn masked(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l).unwrap_or(serde_json::Value::String(l.to_string()));
            mask(&mut v);
            v
        })
        .collect()
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

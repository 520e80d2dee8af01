//! Validation of what clients send, with Docker's (swarmkit's) wording
//! where Docker has one, and secretd's limits where it does not.

use rand::RngCore;

use crate::layout::Kind;
use crate::pb::secretstore::Mount;
use crate::{Error, Result};

/// Swarm's limits: secret data must be under 500 KiB, config data under
/// 1000 KiB, and neither may be empty.
pub const SECRET_DATA_BYTES_LIMIT: usize = 500 * 1024;
pub const CONFIG_DATA_BYTES_LIMIT: usize = 1000 * 1024;
pub const NAME_CHARS_MAX: usize = 64;
pub const LABELS_MAX: usize = 64;
pub const LABEL_KEY_BYTES_MAX: usize = 256;
pub const LABEL_VALUE_BYTES_MAX: usize = 4096;
/// Secrets plus configs one task may mount (each is one op in the txn that
/// creates the task, which must stay under the txn op limit).
pub const TASK_MOUNTS_MAX: usize = 100;
pub const TARGET_BYTES_MAX: usize = 1024;
/// Bytes one component of a target may hold: a file name's limit on
/// Linux (`NAME_MAX`), past which no node could create it.
pub const TARGET_COMPONENT_BYTES_MAX: usize = 255;
pub const ID_CHARS: usize = 25;

/// Characters of a client's string repeated back in an error: enough to
/// recognise it, never enough to turn an error into a large response.
pub const ECHO_CHARS_MAX: usize = 80;

/// A client-supplied string, bounded and escaped, for error messages and
/// logs.
pub fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_CHARS_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(ECHO_CHARS_MAX).is_some() {
        out.push_str(&format!("... ({} bytes)", s.len()));
    }
    out
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Docker's name rule: `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`,
/// at most 64 characters.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= NAME_CHARS_MAX
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner)
}

pub fn name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("name must be provided"));
    }
    if !is_valid_name(name) {
        return Err(invalid("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"));
    }
    Ok(())
}

pub fn data(kind: Kind, data: &[u8]) -> Result<()> {
    let limit = match kind {
        Kind::Secret => SECRET_DATA_BYTES_LIMIT,
        Kind::Config => CONFIG_DATA_BYTES_LIMIT,
    };
    if data.is_empty() || data.len() >= limit {
        return Err(invalid(format!(
            "{} data must be larger than 0 and less than {limit} bytes",
            kind.word()
        )));
    }
    Ok(())
}

/// The template drivers the node agent renders: Swarm's only one.
pub const TEMPLATE_DRIVERS: &[&str] = &["golang"];

/// Docker accepts any driver name and fails when a task starts; refusing
/// it at creation loses nothing and says why at once.
pub fn templating(driver: &str) -> Result<()> {
    if driver.is_empty() || TEMPLATE_DRIVERS.contains(&driver) {
        return Ok(());
    }
    Err(invalid(format!(
        "template driver '{}' is not supported: secretd renders \"golang\" templates (or none)",
        echo(driver)
    )))
}

/// Limits on a task's environment (read by `{{env "X"}}`).
pub const ENV_VARS_MAX: usize = 256;
pub const ENV_BYTES_MAX: usize = 64 * 1024;

/// A task's environment: names as POSIX shells accept them, values
/// without NUL, within the limits.
pub fn env(env: &std::collections::HashMap<String, String>) -> Result<()> {
    if env.len() > ENV_VARS_MAX {
        return Err(invalid(format!(
            "too many environment variables: {}, at most {ENV_VARS_MAX}",
            env.len()
        )));
    }
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > ENV_BYTES_MAX {
        return Err(invalid(format!(
            "the environment is too large: {bytes} bytes, at most {ENV_BYTES_MAX}"
        )));
    }
    for (k, v) in env {
        let mut chars = k.chars();
        let good_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !good_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(format!(
                "environment variable name '{}' is not valid: letters, digits and '_', not starting with a digit",
                echo(k)
            )));
        }
        if v.contains('\0') {
            return Err(invalid(format!(
                "environment variable {k} contains a NUL byte"
            )));
        }
    }
    Ok(())
}

pub fn labels(labels: &std::collections::HashMap<String, String>) -> Result<()> {
    if labels.len() > LABELS_MAX {
        return Err(invalid(format!(
            "too many labels: {}, at most {LABELS_MAX}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if k.is_empty() {
            return Err(invalid("label keys must not be empty"));
        }
        if k.len() > LABEL_KEY_BYTES_MAX || v.len() > LABEL_VALUE_BYTES_MAX {
            return Err(invalid(format!(
                "label {} is too long: keys at most {LABEL_KEY_BYTES_MAX} bytes, values at most {LABEL_VALUE_BYTES_MAX}",
                echo(k)
            )));
        }
        // Docker's rule: no whitespace in a key. Ours too: no control
        // characters anywhere, which would forge lines in logs and tables.
        if k.chars().any(char::is_whitespace) {
            return Err(invalid(format!("label '{}' contains whitespaces", echo(k))));
        }
        if has_control(k) || has_control(v) {
            return Err(invalid(format!(
                "label '{}' contains control characters",
                echo(k)
            )));
        }
    }
    Ok(())
}

/// Task ids and node names follow the object name rule, so they are safe
/// as path components and as key parts.
pub fn task_id(id: &str) -> Result<()> {
    if !is_valid_name(id) {
        return Err(invalid(format!(
            "invalid task ID \"{}\": only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
            echo(id)
        )));
    }
    Ok(())
}

pub fn node(node: &str) -> Result<()> {
    if !is_valid_name(node) {
        return Err(invalid(format!(
            "invalid node name \"{}\": only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
            echo(node)
        )));
    }
    Ok(())
}

/// A mount target: a secret's is a file name, or a relative path, under the
/// task's directory; a config's may be absolute (it is placed at that path
/// in the container, and under the task's directory on the node). No `..`,
/// no empty or `.` components, and not the directory itself.
pub fn target(kind: Kind, target: &str) -> Result<()> {
    let bad = |why: &str| {
        invalid(format!(
            "invalid {} target \"{}\": {why}",
            kind.word(),
            echo(target)
        ))
    };
    if target.is_empty() {
        return Err(bad("it is empty"));
    }
    if target.len() > TARGET_BYTES_MAX {
        return Err(bad("it is too long"));
    }
    if has_control(target) {
        return Err(bad("it contains a control character"));
    }
    let rel = match kind {
        Kind::Secret if target.starts_with('/') => {
            return Err(bad("secret targets are file names under /run/secrets"))
        }
        Kind::Secret => target,
        Kind::Config => target.trim_start_matches('/'),
    };
    if rel.is_empty() {
        return Err(bad("it names the directory itself"));
    }
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("empty, '.' and '..' path components are not allowed"));
        }
        // The kubelet's rule: names starting with '..' belong to the agent
        // (`..data` and the timestamped directories of the tmpfs backend).
        if part.starts_with("..") {
            return Err(bad("path components may not start with '..'"));
        }
        if part.len() > TARGET_COMPONENT_BYTES_MAX {
            return Err(bad(&format!(
                "a path component is {} bytes, more than a file name may be ({TARGET_COMPONENT_BYTES_MAX})",
                part.len()
            )));
        }
    }
    Ok(())
}

pub fn mode(mode: u32) -> Result<()> {
    if mode & !0o777 != 0 {
        return Err(invalid(format!(
            "invalid file mode {mode:o}: only permission bits (at most 0777) may be set"
        )));
    }
    Ok(())
}

/// Checks a task's mounts: each valid, and no two that collide: the same
/// path, or one path a directory above another (`a` and `a/b`), which no
/// file tree can hold both of.
/// `(uid_t)-1`: what chown reads as "leave the owner as it is".
pub const OWNER_UNCHANGED: u32 = u32::MAX;

/// A file's uid and gid. 4294967295 is `(uid_t)-1`, which chown takes
/// for "no change", so no file can be given it: refused here, by name,
/// rather than left to root by one agent backend and shown as 4294967295
/// by the other.
fn owner(uid: u32, gid: u32) -> Result<()> {
    for (what, id) in [("uid", uid), ("gid", gid)] {
        if id == OWNER_UNCHANGED {
            return Err(invalid(format!(
                "{what} {id} is not a valid owner: it is (uid_t)-1, which chown takes for \"no change\""
            )));
        }
    }
    Ok(())
}

pub fn mounts(secrets: &[Mount], configs: &[Mount]) -> Result<()> {
    if secrets.len() + configs.len() > TASK_MOUNTS_MAX {
        return Err(invalid(format!(
            "a task may use at most {TASK_MOUNTS_MAX} secrets and configs"
        )));
    }
    let mut places: Vec<(String, Kind, &str)> = Vec::new();
    for (kind, list) in [(Kind::Secret, secrets), (Kind::Config, configs)] {
        for m in list {
            if m.source.is_empty() {
                return Err(invalid(format!("a {} needs a source", kind.word())));
            }
            target(kind, &m.target)?;
            mode(m.mode)?;
            owner(m.uid, m.gid)?;
            let place = match kind {
                Kind::Secret => m.target.clone(),
                Kind::Config => m.target.trim_start_matches('/').to_string(),
            };
            places.push((place, kind, &m.target));
        }
    }
    // Sorted, a path that is a directory of another comes right before
    // one of the paths under it, or right before itself.
    places.sort_by(|a, b| a.0.cmp(&b.0));
    for w in places.windows(2) {
        let ((a, _, ta), (b, _, _)) = (&w[0], &w[1]);
        if a == b {
            return Err(invalid(format!(
                "target \"{}\" is used more than once in this task",
                echo(ta)
            )));
        }
    }
    for (i, (a, ka, ta)) in places.iter().enumerate() {
        let dir = format!("{a}/");
        for (b, kb, tb) in &places[i + 1..] {
            if b.starts_with(&dir) {
                return Err(invalid(format!(
                    "{} target \"{}\" and {} target \"{}\" collide: a file cannot also be a directory",
                    ka.word(),
                    echo(ta),
                    kb.word(),
                    echo(tb)
                )));
            }
        }
    }
    Ok(())
}

/// A new object ID as Swarm makes them: 128 random bits in base 36,
/// 25 characters.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let mut n = u128::from_be_bytes(b);
    let mut out = [b'0'; ID_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["a", "db_pw", "A.b-c_d", "x1", &"a".repeat(64)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "_a", "a_", "a b", "a/b", "é", "-", &"a".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert_eq!(name("").unwrap_err().to_string(), "name must be provided");
        assert!(name("a!")
            .unwrap_err()
            .to_string()
            .starts_with("invalid name, only 64"));
    }

    #[test]
    fn data_limits_are_swarms() {
        assert!(data(Kind::Secret, b"x").is_ok());
        assert!(data(Kind::Secret, &vec![0; 500 * 1024 - 1]).is_ok());
        assert_eq!(
            data(Kind::Secret, &vec![0; 500 * 1024])
                .unwrap_err()
                .to_string(),
            "secret data must be larger than 0 and less than 512000 bytes"
        );
        assert!(data(Kind::Secret, b"").is_err());
        assert!(data(Kind::Config, &vec![0; 1000 * 1024 - 1]).is_ok());
        assert_eq!(
            data(Kind::Config, &vec![0; 1000 * 1024])
                .unwrap_err()
                .to_string(),
            "config data must be larger than 0 and less than 1024000 bytes"
        );
    }

    #[test]
    fn targets_and_modes() {
        assert!(target(Kind::Secret, "password").is_ok());
        assert!(target(Kind::Secret, "tls/key.pem").is_ok());
        for bad in ["", "/etc/x", "../x", "a/../b", "a//b", "."] {
            assert!(target(Kind::Secret, bad).is_err(), "{bad}");
        }
        // A file name's limit, per component, at the edge.
        let name = |n: usize| "n".repeat(n);
        assert!(target(Kind::Secret, &name(255)).is_ok());
        assert!(target(Kind::Secret, &format!("d/{}", name(255))).is_ok());
        let e = target(Kind::Secret, &format!("d/{}", name(256))).unwrap_err();
        assert!(e.to_string().contains("256 bytes"), "{e}");
        assert!(target(Kind::Config, "/etc/nginx/nginx.conf").is_ok());
        assert!(target(Kind::Config, "/").is_err());
        assert!(mode(0o444).is_ok());
        assert!(mode(0o4755).is_err());
        let m = |t: &str| Mount {
            source: "s".into(),
            target: t.into(),
            mode: 0o444,
            ..Default::default()
        };
        assert!(mounts(&[m("a")], &[m("/a")]).is_err());
        assert!(mounts(&[m("a")], &[m("/b")]).is_ok());
        // D2: one target may not be a directory of another.
        let e = mounts(&[m("etc")], &[m("/etc/app.conf")]).unwrap_err();
        assert!(e.to_string().contains("collide"), "{}", e.to_string());
        assert!(mounts(&[m("a")], &[m("/a/b")]).is_err());
        assert!(mounts(&[m("a/b/c"), m("a/b")], &[]).is_err());
        assert!(mounts(&[m("a"), m("ab"), m("a.b")], &[m("/a-b/c")]).is_ok());
        // D3: names starting with '..' are the agent's.
        for bad in ["..data", "...", "..2024_01", "x/..data"] {
            assert!(target(Kind::Secret, bad).is_err(), "{bad}");
        }
        for bad in ["/..data", "/..data/x"] {
            assert!(target(Kind::Config, bad).is_err(), "{bad}");
        }
        assert!(target(Kind::Secret, ".hidden").is_ok());
        assert!(target(Kind::Secret, "a..b").is_ok());
        // Control characters anywhere in a target.
        for bad in ["a\nb", "a\0", "x\t", "\u{7f}"] {
            assert!(target(Kind::Secret, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_follow_dockers_rules_and_refuse_control_characters() {
        let l = |k: &str, v: &str| std::iter::once((k.to_string(), v.to_string())).collect();
        assert!(labels(&l("env", "prod")).is_ok());
        assert!(labels(&l("com.example.x", "a b=c")).is_ok());
        for (k, v) in [
            ("a\0b", "x"),
            ("a b", "x"),
            ("a\tb", "x"),
            ("k", "line\nbreak"),
            ("", "x"),
        ] {
            assert!(labels(&l(k, v)).is_err(), "{k:?}={v:?}");
        }
    }

    /// (uid_t)-1 means "no change" to chown: no file can be owned by it,
    /// so a task asking for it is refused at creation, by name.
    #[test]
    fn an_owner_of_minus_one_is_refused() {
        let m = |uid, gid| Mount {
            source: "db_pw".into(),
            target: "pw".into(),
            uid,
            gid,
            mode: 0o400,
            ..Default::default()
        };
        assert!(mounts(&[m(4294967294, 4294967294)], &[]).is_ok());
        for (uid, gid, what) in [(u32::MAX, 0, "uid"), (0, u32::MAX, "gid")] {
            let e = mounts(&[m(uid, gid)], &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("{what} 4294967295")), "{e}");
            let mut c = m(uid, gid);
            c.target = "/etc/x.conf".into();
            assert!(mounts(&[], &[c]).is_err());
        }
    }

    #[test]
    fn echoes_are_bounded_and_escaped() {
        let long = "x".repeat(1 << 20);
        let e = echo(&long);
        assert!(e.len() < 120, "{}", e.len());
        assert!(e.ends_with("(1048576 bytes)"));
        assert_eq!(echo("a\nb"), "a\\nb");
        assert_eq!(echo("db_pw"), "db_pw");
    }

    #[test]
    fn ids_are_25_base36_chars_and_differ() {
        let a = new_id();
        assert_eq!(a.len(), 25);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_ne!(a, new_id());
    }
}

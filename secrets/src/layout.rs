//! Where secretd's objects live in the reserved key range. One place for
//! every key, so the layout can be read (and changed) at a glance:
//!
//! ```text
//! R obj/{s,c}/<id>             Object record (secret metadata, or config with data)
//! R name/{s,c}/<name>          <id>: names are unique per kind
//! R data/<id>/<version:016x>   a secret version, sealed (crypto's SDSE format)
//! R task/<task id>             Task record
//! R ref/{s,c}/<id>/<task id>   a task uses the object; value: pinned version (u64 BE, 0 = current)
//! R kek/<generation:08x>       KekRecord: a KEK generation's verifier, never the key
//! R settings                   SettingsRecord
//! R kekheld/<gen:08x>/<member:016x>  empty: that member holds that generation
//! R lock                       LockRecord: autolock and the unlock key's verifier
//! ```
//!
//! `R` is [`RESERVED`]. IDs and names never contain `/`,
//! so a prefix of one id cannot reach into another's keys by accident of
//! the separator.

/// Every key at or after this one belongs to secretd: the etcd API may
/// neither read nor write there (`api::reserved`), so no client key can
/// collide with an object's.
pub const RESERVED: &[u8] = b"\xff\xffsecretd/";

/// Secrets or configs, the words the clients use too (`secretd_vocab`).
pub use secretd_vocab::Kind;

/// A kind's letter in its keys (stored: never change one).
fn tag(kind: Kind) -> &'static str {
    match kind {
        Kind::Secret => "s",
        Kind::Config => "c",
    }
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = RESERVED.to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub fn object_prefix(kind: Kind) -> Vec<u8> {
    key(&[b"obj/", tag(kind).as_bytes(), b"/"])
}

pub fn object_key(kind: Kind, id: &str) -> Vec<u8> {
    key(&[&object_prefix(kind)[RESERVED.len()..], id.as_bytes()])
}

/// The id inside an object key.
pub fn id_of_object_key(kind: Kind, k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(object_prefix(kind).as_slice())?;
    String::from_utf8(rest.to_vec()).ok()
}

pub fn name_key(kind: Kind, name: &str) -> Vec<u8> {
    key(&[b"name/", tag(kind).as_bytes(), b"/", name.as_bytes()])
}

pub fn data_prefix(id: &str) -> Vec<u8> {
    key(&[b"data/", id.as_bytes(), b"/"])
}

pub fn data_key(id: &str, version: u64) -> Vec<u8> {
    key(&[
        b"data/",
        id.as_bytes(),
        format!("/{version:016x}").as_bytes(),
    ])
}

/// Every sealed secret version, of every secret.
pub fn all_data_prefix() -> Vec<u8> {
    key(&[b"data/"])
}

/// (object id, version) of a data key.
pub fn parse_data_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(all_data_prefix().as_slice())?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (id, version) = rest.rsplit_once('/')?;
    if version.len() != 16 {
        return None;
    }
    Some((id.to_string(), u64::from_str_radix(version, 16).ok()?))
}

pub fn task_prefix() -> Vec<u8> {
    key(&[b"task/"])
}

pub fn task_key(id: &str) -> Vec<u8> {
    key(&[b"task/", id.as_bytes()])
}

pub fn ref_prefix(kind: Kind, object_id: &str) -> Vec<u8> {
    key(&[
        b"ref/",
        tag(kind).as_bytes(),
        b"/",
        object_id.as_bytes(),
        b"/",
    ])
}

pub fn ref_key(kind: Kind, object_id: &str, task: &str) -> Vec<u8> {
    let mut k = ref_prefix(kind, object_id);
    k.extend_from_slice(task.as_bytes());
    k
}

/// The task id inside a ref key.
pub fn task_of_ref_key(kind: Kind, object_id: &str, k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(ref_prefix(kind, object_id).as_slice())?;
    String::from_utf8(rest.to_vec()).ok()
}

pub fn kek_prefix() -> Vec<u8> {
    key(&[b"kek/"])
}

pub fn kek_key(generation: u32) -> Vec<u8> {
    key(&[b"kek/", format!("{generation:08x}").as_bytes()])
}

pub fn settings_key() -> Vec<u8> {
    key(&[b"settings"])
}

pub fn kek_held_prefix(generation: u32) -> Vec<u8> {
    key(&[b"kekheld/", format!("{generation:08x}/").as_bytes()])
}

pub fn kek_held_key(generation: u32, member: u64) -> Vec<u8> {
    let mut k = kek_held_prefix(generation);
    k.extend_from_slice(format!("{member:016x}").as_bytes());
    k
}

/// The member id inside a kekheld key.
pub fn member_of_kek_held_key(generation: u32, k: &[u8]) -> Option<u64> {
    let rest = k.strip_prefix(kek_held_prefix(generation).as_slice())?;
    u64::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()
}

pub fn lock_key() -> Vec<u8> {
    key(&[b"lock"])
}

pub use secretd_store::mvcc::prefix_end;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_in_the_reserved_range_and_parse_back() {
        let k = object_key(Kind::Secret, "abc");
        assert!(k.starts_with(RESERVED));
        assert_eq!(id_of_object_key(Kind::Secret, &k).as_deref(), Some("abc"));
        assert_eq!(id_of_object_key(Kind::Config, &k), None);
        let r = ref_key(Kind::Config, "id1", "web.1");
        assert_eq!(
            task_of_ref_key(Kind::Config, "id1", &r).as_deref(),
            Some("web.1")
        );
        // Versions sort numerically.
        assert!(data_key("x", 2) < data_key("x", 10));
        assert!(data_key("x", 10).starts_with(&data_prefix("x")));
        assert_eq!(parse_data_key(&data_key("ab", 10)), Some(("ab".into(), 10)));
        assert_eq!(parse_data_key(&object_key(Kind::Secret, "ab")), None);
    }
}

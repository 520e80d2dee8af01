//! How Go prints values in templates: fmt's verbs (`sprintf`), its
//! default printing of maps and lists, and `time.Time`'s `String()`.

use serde_json::Value;

use super::output::{Output, OutputFull};

/// Go's fmt.Sprintf for the verbs templates use, written into `out`; a verb
/// without an operand prints `%!v(MISSING)` and an operand left over
/// `%!(EXTRA ...)`, as Go does.
pub(super) fn sprintf(
    format: &str,
    args: &[Option<&Value>],
    out: &mut Output,
) -> Result<(), OutputFull> {
    let mut next = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_char(c)?;
            continue;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)")?;
            break;
        };
        if verb == '%' {
            out.push_char('%')?;
            continue;
        }
        let Some(arg) = next.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"))?;
            continue;
        };
        let v = go_value(*arg);
        match (verb, arg) {
            // `%s` of a []byte is its text.
            ('s', Some(b)) if bytes_of(b).is_some() => {
                let b = bytes_of(b).unwrap_or_default();
                out.push_str(&String::from_utf8_lossy(&b))?
            }
            ('s' | 'v', _) => out.push_str(&v)?,
            ('d', Some(Value::Number(n))) if n.is_i64() || n.is_u64() => out.push_str(&v)?,
            ('q', Some(Value::String(s))) => out.push_str(&format!("{s:?}"))?,
            _ => out.push_str(&format!("%!{verb}({v})"))?,
        }
    }
    let mut extra = false;
    for a in next {
        out.push_str(if extra { ", " } else { "%!(EXTRA " })?;
        out.push_str(&go_value(*a))?;
        extra = true;
    }
    if extra {
        out.push_char(')')?;
    }
    Ok(())
}

/// An RFC 3339 UTC time (`2026-11-30T18:33:40.270352427Z`) as Go's
/// `Time.String()` prints it (`2026-11-30 18:33:40.270352427 +0000 UTC`);
/// `None` for anything else (a listing's "2 hours ago").
pub(super) fn go_time(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z');
    shaped.then(|| format!("{} {} +0000 UTC", &s[..10], &s[11..s.len() - 1]))
}

pub(super) fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, f| v.get(f))
}

/// Go's default printing: strings bare, missing values `<no value>`,
/// maps as `map[k:v k2:v2]` (keys sorted, as Go's fmt sorts them), lists
/// as `[a b]`.
pub(super) fn plain(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<no value>".into(),
        Some(v) => go_value(Some(v)),
    }
}

/// Marks an object that stands for a Go value JSON cannot say; its value
/// says which (`go_bytes`, `go_nil`, `go_struct`, `go_stringer`).
const GO_KIND: &str = "\u{0}go";

/// A Go `[]byte`: printed `[120 10]`, by `%s` as its text.
pub fn go_bytes(data: &[u8]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(GO_KIND.into(), "bytes".into());
    m.insert(
        "bytes".into(),
        data.iter().map(|b| Value::from(*b)).collect(),
    );
    Value::Object(m)
}

/// A Go nil pointer: printed `<nil>`.
pub fn go_nil() -> Value {
    let mut m = serde_json::Map::new();
    m.insert(GO_KIND.into(), "nil".into());
    Value::Object(m)
}

/// A Go struct: its fields are looked up by name and printed in order,
/// `{v1 v2}`.
pub fn go_struct(fields: Vec<(&str, Value)>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(GO_KIND.into(), "struct".into());
    for (k, v) in fields {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// A Go struct with a `String()` method: its fields are looked up by name,
/// and it prints as `text`.
pub fn go_stringer(text: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut v = go_struct(fields);
    v[GO_KIND] = "stringer".into();
    v[GO_TEXT] = text.into();
    v
}

/// A `go_stringer`'s text.
const GO_TEXT: &str = "\u{0}text";

/// A `go_bytes` value's bytes.
pub(super) fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    if v.get(GO_KIND)?.as_str()? != "bytes" {
        return None;
    }
    let list = v.get("bytes")?.as_array()?;
    Some(
        list.iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).unwrap_or(0))
            .collect(),
    )
}

pub(super) fn go_value(v: Option<&Value>) -> String {
    match v {
        None => "<nil>".into(),
        Some(Value::Null) => "<nil>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) if m.contains_key(GO_KIND) => {
            match m.get(GO_KIND).and_then(Value::as_str) {
                Some("bytes") => {
                    let b = v.and_then(bytes_of).unwrap_or_default();
                    let items: Vec<String> = b.iter().map(u8::to_string).collect();
                    format!("[{}]", items.join(" "))
                }
                Some("stringer") => m
                    .get(GO_TEXT)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                Some("struct") => {
                    let items: Vec<String> = m
                        .iter()
                        .filter(|(k, _)| k.as_str() != GO_KIND)
                        .map(|(_, v)| go_value(Some(v)))
                        .collect();
                    format!("{{{}}}", items.join(" "))
                }
                _ => "<nil>".into(),
            }
        }
        Some(Value::Object(m)) => {
            let mut kv: Vec<(&String, &Value)> = m.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let items: Vec<String> = kv
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_value(Some(v))))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        Some(Value::Array(a)) => {
            let items: Vec<String> = a.iter().map(|v| go_value(Some(v))).collect();
            format!("[{}]", items.join(" "))
        }
        Some(other) => other.to_string(),
    }
}

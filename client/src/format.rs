//! Output as Docker's CLI prints it (secretctl, and the audit log's
//! timestamps): Go's time formats, go-units' relative
//! durations, natural name order, tabwriter tables, and JSON indented by
//! four spaces with keys in the order given.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn parts(ns: i64) -> (String, String) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let date_time = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    // Go's ".999999999": trailing zeros, and then the dot, trimmed.
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    (date_time, frac)
}

/// Go's RFC3339Nano in UTC, as Docker's JSON carries timestamps.
pub fn rfc3339_nano(ns: i64) -> String {
    let (dt, frac) = parts(ns);
    format!("{dt}{frac}Z")
}

/// Docker's `--pretty` timestamps: Go's `Time.String()`, lowercased.
pub fn pretty_time(ns: i64) -> String {
    let (dt, frac) = parts(ns);
    format!("{}{frac} +0000 utc", dt.replace('T', " "))
}

/// go-units' HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let s = secs;
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (s as f64 / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", s / 3600 / 24 / 365)
}

/// "2 minutes ago", as `docker secret ls` shows times.
pub fn ago(ns: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    format!("{} ago", human_duration((now - ns).max(0) / 1_000_000_000))
}

/// Natural order (sortorder.NaturalLess): digit runs compare as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                let ta = trim_zeros(na);
                let tb = trim_zeros(nb);
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                // Equal numbers: fewer leading zeros first, as NaturalLess.
                if da != db {
                    return da.cmp(&db);
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n..]
}

/// Go's tabwriter as Docker configures it (minwidth 10, padding 3):
/// every column but the last is padded to its widest cell plus 3.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let w = (width[i] + 3).max(10);
                line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        // Go's tabwriter pads every cell but the last, even when the last
        // is empty: a line may end in spaces, as Docker's do.
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// JSON indented by four spaces, as `docker inspect` prints it.
pub fn indented_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("a Value always serializes");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// Parses Go-style durations as etcd's flags take them: `500ms`, `2s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 2s or 10m"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_formats() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        let t = 1_490_343_309_735_271_783;
        assert_eq!(rfc3339_nano(t), "2017-03-24T08:15:09.735271783Z");
        assert_eq!(rfc3339_nano(t - 783), "2017-03-24T08:15:09.735271Z");
        assert_eq!(pretty_time(t), "2017-03-24 08:15:09.735271783 +0000 utc");
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn human_durations_match_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(120), "2 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(15 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["s10", "s2", "a", "s1", "B", "s02"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["B", "a", "s1", "s2", "s02", "s10"]);
    }

    #[test]
    fn tables_pad_like_tabwriter() {
        let t = table(&[
            vec!["ID".into(), "NAME".into()],
            vec!["abc".into(), "db_pw".into()],
        ]);
        assert_eq!(t, "ID        NAME\nabc       db_pw\n");
    }
}

//! BENCHMARKS.md's generated section: `secretd-bench compare --markdown
//! BENCHMARKS.md` replaces what lies between its two markers with this
//! run's tables, dated and with the commit and machine they came from, and
//! keeps the rest of the file (the notes people wrote about earlier runs).
//! Dated numbers live there, not in ARCHITECTURE.md, which says why the
//! code is shaped as it is and should not go stale with each run.

use std::path::Path;

use anyhow::{bail, Context, Result};

pub const BEGIN: &str = "<!-- secretd-bench compare: begin (generated, do not edit) -->";
pub const END: &str = "<!-- secretd-bench compare: end -->";

/// Writes `tables` between the markers of `path` (creating the file, or
/// the markers at its top, if missing).
pub fn write(path: &Path, rounds: usize, tables: &[String], prov: &Provenance) -> Result<()> {
    let what = format!("{rounds} rounds");
    write_between(path, (BEGIN, END), &what, tables, prov)
}

/// `bench scale`'s section has markers of its own, so each command
/// replaces only its part of the file.
pub const SCALE_BEGIN: &str = "<!-- secretd-bench scale: begin (generated, do not edit) -->";
pub const SCALE_END: &str = "<!-- secretd-bench scale: end -->";

/// Writes `tables` (and where they came from, with `what` said of the
/// run) between `markers` in `path`, creating the file or the markers (at
/// its top) if missing.
pub fn write_between(
    path: &Path,
    markers: (&str, &str),
    what: &str,
    tables: &[String],
    prov: &Provenance,
) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let section = section(markers, what, tables, prov);
    let new = splice(&old, markers, &section)?;
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

fn section((begin, end): (&str, &str), what: &str, tables: &[String], prov: &Provenance) -> String {
    let mut s = format!(
        "{begin}\n\nLast run: {} UTC, commit {}, {} ({what}).\n\n",
        prov.date_utc,
        prov.commit(),
        prov.machine(),
    );
    for t in tables {
        s.push_str("```\n");
        s.push_str(t.trim_matches('\n'));
        s.push_str("\n```\n\n");
    }
    s.push_str(end);
    s
}

/// `old` with the section between `markers` replaced by `section`.
fn splice(old: &str, (begin, end): (&str, &str), section: &str) -> Result<String> {
    match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => Ok(format!("{}{section}{}", &old[..b], &old[e + end.len()..])),
        (None, None) if old.is_empty() => Ok(format!("# Benchmarks\n\n{section}\n")),
        (None, None) => Ok(format!("{section}\n\n{old}")),
        _ => bail!("the file's generated-section markers are out of order or one is missing; fix them by hand"),
    }
}

/// Where and from what a run's numbers came: the date, the commit of the
/// checkout the binary was built from (and whether its tracked files had
/// changes not committed), the machine.
pub struct Provenance {
    pub date_utc: String,
    pub commit: String,
    pub dirty: bool,
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
}

impl Provenance {
    pub fn gather() -> Provenance {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        // The checkout this binary was built from, wherever it runs.
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let git = |args: &[&str]| run_output("git", &[&["-C", repo], args].concat());
        let commit = git(&["rev-parse", "--short", "HEAD"]);
        let status = git(&["status", "--porcelain", "--untracked-files=no"]);
        Provenance {
            date_utc: run_output("date", &["-u", "+%Y-%m-%d %H:%M"]),
            dirty: commit != "unknown" && !status.is_empty() && status != "unknown",
            commit,
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: run_output("uname", &["-r"]),
        }
    }

    /// The commit, `-dirty` when the tree had changes.
    pub fn commit(&self) -> String {
        let dirty = if self.dirty { "-dirty" } else { "" };
        format!("{}{dirty}", self.commit)
    }

    pub fn machine(&self) -> String {
        format!(
            "{}, {} cores, Linux {}",
            self.cpu_model, self.cores, self.kernel
        )
    }
}

fn run_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_section_is_replaced_and_the_notes_kept() {
        let old = format!("# Benchmarks\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## Notes\nkept\n");
        let m = (BEGIN, END);
        let new = splice(&old, m, &format!("{BEGIN}\nnew table\n{END}")).unwrap();
        assert_eq!(
            new,
            format!("# Benchmarks\n\nintro\n\n{BEGIN}\nnew table\n{END}\n\n## Notes\nkept\n")
        );
        assert!(splice(&format!("{END}\n{BEGIN}"), m, "x").is_err());
        assert!(splice(&format!("{BEGIN} only"), m, "x").is_err());
        assert!(splice("", m, "S").unwrap().starts_with("# Benchmarks\n\nS"));
        assert_eq!(splice("notes", m, "S").unwrap(), "S\n\nnotes");
        // The other command's section is left alone.
        let both = format!("{BEGIN}\nc\n{END}\n{SCALE_BEGIN}\ns\n{SCALE_END}\n");
        let new = splice(
            &both,
            (SCALE_BEGIN, SCALE_END),
            &format!("{SCALE_BEGIN}\nS\n{SCALE_END}"),
        )
        .unwrap();
        assert_eq!(
            new,
            format!("{BEGIN}\nc\n{END}\n{SCALE_BEGIN}\nS\n{SCALE_END}\n")
        );
    }
}

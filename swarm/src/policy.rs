//! Which Swarm service may receive which secretd secret: the plugin's
//! delivery policy, a JSON file the operator writes.
//!
//! ```json
//! { "rules": [
//!     { "services": ["web", "api-*"], "secrets": ["db_pw", "tls_*"] }
//! ] }
//! ```
//!
//! Nothing is delivered unless a rule names both the service and the
//! secret (`*` matches any run of characters). Unknown fields are errors,
//! not ignored: a misspelt `"secret"` must not read as a rule that allows
//! nothing, or, worse, one that was meant to narrow another. The file and
//! its parts are bounded, and a file that breaks a bound is refused whole.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Largest policy file.
pub const POLICY_BYTES_MAX: u64 = 1 << 20;
/// Rules in one policy.
pub const RULES_MAX: usize = 1000;
/// Patterns in one rule's `services` or `secrets`.
pub const PATTERNS_MAX: usize = 256;
/// Longest pattern.
pub const PATTERN_BYTES_MAX: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub services: Vec<String>,
    pub secrets: Vec<String>,
}

/// A checked policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads and checks the policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read the policy {}", path.display()))?;
        if meta.len() > POLICY_BYTES_MAX {
            bail!(
                "the policy {} is {} bytes, more than the {POLICY_BYTES_MAX} allowed",
                path.display(),
                meta.len()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the policy {}", path.display()))?;
        Policy::parse(&text).with_context(|| format!("the policy {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Policy> {
        let file: File = serde_json::from_str(text).context("not a valid policy")?;
        if file.rules.len() > RULES_MAX {
            bail!(
                "{} rules, more than the {RULES_MAX} allowed",
                file.rules.len()
            );
        }
        for (i, rule) in file.rules.iter().enumerate() {
            for (field, list) in [("services", &rule.services), ("secrets", &rule.secrets)] {
                check_patterns(i, field, list)?;
            }
        }
        Ok(Policy { rules: file.rules })
    }

    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// May `service` receive the secretd secret `secret`?
    pub fn allows(&self, service: &str, secret: &str) -> bool {
        self.rules.iter().any(|r| {
            r.services.iter().any(|p| glob(p, service)) && r.secrets.iter().any(|p| glob(p, secret))
        })
    }
}

fn check_patterns(rule: usize, field: &str, list: &[String]) -> Result<()> {
    if list.is_empty() {
        bail!("rule {rule}: {field} is empty, so the rule allows nothing; remove it");
    }
    if list.len() > PATTERNS_MAX {
        bail!(
            "rule {rule}: {} {field}, more than the {PATTERNS_MAX} allowed",
            list.len()
        );
    }
    for p in list {
        if p.is_empty() || p.len() > PATTERN_BYTES_MAX {
            bail!("rule {rule}: {field} pattern {p:?} must be 1 to {PATTERN_BYTES_MAX} bytes");
        }
        if p.chars().any(char::is_control) {
            bail!("rule {rule}: {field} pattern {p:?} holds a control character");
        }
    }
    Ok(())
}

/// `*` matches any run of characters (none included); everything else
/// matches itself. Iterative, with one backtrack point, so a pattern of
/// many stars costs O(len(pattern) × len(text)) at worst, never more.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_nothing_else() {
        assert!(glob("web", "web"));
        assert!(!glob("web", "web2"));
        assert!(glob("api-*", "api-"));
        assert!(glob("api-*", "api-eu"));
        assert!(!glob("api-*", "xapi-eu"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("**", "anything"));
        assert!(!glob("?", "a"), "only * is special");
        let long = "a".repeat(10_000);
        assert!(!glob(&format!("{}b", "*a".repeat(100)), &long));
    }

    #[test]
    fn a_rule_needs_both_the_service_and_the_secret() {
        let p = Policy::parse(
            r#"{"rules":[{"services":["web","api-*"],"secrets":["db_pw","tls_*"]},
                        {"services":["batch"],"secrets":["batch_key"]}]}"#,
        )
        .unwrap();
        assert_eq!(p.rules(), 2);
        assert!(p.allows("web", "db_pw"));
        assert!(p.allows("api-eu", "tls_cert"));
        assert!(p.allows("batch", "batch_key"));
        assert!(!p.allows("batch", "db_pw"));
        assert!(!p.allows("web", "batch_key"));
        assert!(!p.allows("webx", "db_pw"));
        assert!(!Policy::parse(r#"{"rules":[]}"#)
            .unwrap()
            .allows("web", "db_pw"));
    }

    #[test]
    fn a_bad_policy_is_refused_with_its_reason() {
        let cases = [
            (
                r#"{"rules":[{"services":["web"],"secret":["x"]}]}"#,
                "unknown field `secret`",
            ),
            (
                r#"{"rules":[{"services":[],"secrets":["x"]}]}"#,
                "services is empty",
            ),
            (
                r#"{"rules":[{"services":[""],"secrets":["x"]}]}"#,
                "must be 1 to 256 bytes",
            ),
            (
                r#"{"rules":[{"services":["a\u0000"],"secrets":["x"]}]}"#,
                "control character",
            ),
            (r#"{"rule":[]}"#, "unknown field `rule`"),
            ("not json", "not a valid policy"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", Policy::parse(text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
        let many = format!(
            r#"{{"rules":[{}]}}"#,
            vec![r#"{"services":["a"],"secrets":["b"]}"#; RULES_MAX + 1].join(",")
        );
        let e = format!("{:#}", Policy::parse(&many).unwrap_err());
        assert!(e.contains("1001 rules"), "{e}");
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, vec![b' '; POLICY_BYTES_MAX as usize + 1]).unwrap();
        let e = format!("{:#}", Policy::load(&path).unwrap_err());
        assert!(e.contains("more than the 1048576 allowed"), "{e}");
        let e = format!("{:#}", Policy::load(&dir.path().join("nope")).unwrap_err());
        assert!(e.contains("cannot read the policy"), "{e}");
    }
}

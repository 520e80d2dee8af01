//! The `keys` nemesis: the cluster's keys change under load, through the
//! operator's own tool (`secretctl`, beside the `secretd` under test), while
//! the `secrets` workload keeps creating, rotating and reading:
//!
//! - `rotate`: `secretctl cluster rotate-key` (a new KEK generation, every
//!   stored version re-wrapped, the old generations destroyed);
//! - `autolock`: `cluster settings --autolock=true`, then one member killed
//!   and restarted, so it comes back locked; the heal unlocks it with
//!   `cluster unlock` (the key on stdin) and switches autolock off.
//!
//! The workload's checker already requires every acknowledged version to
//! read back as written, before, during and after. After the run,
//! [`retired_on_disk`] requires that no member's keyring file still holds
//! a generation a rotation destroyed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use super::Check;
use crate::check::Verdict;

/// One secretctl command may take this long (a rotation re-wraps every
/// stored version in bounded txns).
const COMMAND_TIMEOUT_MS: u64 = 60_000;
/// Attempts at unlocking and at switching autolock off while healing (a
/// restarted member takes a moment to listen).
const HEAL_ATTEMPTS_MAX: usize = 20;
const HEAL_RETRY_MS: u64 = 500;

/// What the keys nemesis did and must undo.
pub struct KeysState {
    secretctl: PathBuf,
    /// The unlock key while autolock is on.
    unlock_key: Option<Zeroizing<String>>,
    /// Generations rotations reported destroyed.
    pub retired: BTreeSet<u32>,
}

impl KeysState {
    /// `secretctl` beside `secretd`: the keys nemesis needs it.
    pub fn new(secretd: &Path) -> Result<KeysState> {
        let secretctl = secretd.with_file_name("secretctl");
        if !secretctl.is_file() {
            bail!(
                "the keys nemesis runs {}, which does not exist: build it beside secretd (cargo build --release -p secretctl)",
                secretctl.display()
            );
        }
        Ok(KeysState {
            secretctl,
            unlock_key: None,
            retired: BTreeSet::new(),
        })
    }

    /// Runs `secretctl --endpoints E ARGS`, feeding `stdin`; its stdout, or
    /// an error with its stderr.
    async fn run(&self, endpoints: &[String], args: &[&str], stdin: &str) -> Result<String> {
        let mut child = tokio::process::Command::new(&self.secretctl)
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.secretctl.display()))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).await?;
        }
        let out = tokio::time::timeout(
            Duration::from_millis(COMMAND_TIMEOUT_MS),
            child.wait_with_output(),
        )
        .await
        .map_err(|_| anyhow!("secretctl {} did not finish in time", args.join(" ")))??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "secretctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            );
        }
        Ok(stdout)
    }

    /// `cluster rotate-key` through `endpoint`; the generations it destroyed.
    pub async fn rotate(&mut self, endpoint: &str) -> Result<Vec<u32>> {
        let out = self
            .run(&[endpoint.to_string()], &["cluster", "rotate-key"], "")
            .await?;
        let retired = parse_destroyed(&out)?;
        self.retired.extend(&retired);
        Ok(retired)
    }

    /// Switches autolock on and keeps the unlock key.
    pub async fn autolock_on(&mut self, endpoints: &[String]) -> Result<()> {
        self.run(endpoints, &["cluster", "settings", "--autolock=true"], "")
            .await?;
        let key = self
            .run(endpoints, &["cluster", "unlock-key", "--quiet"], "")
            .await?;
        let key = Zeroizing::new(key.trim().to_string());
        if key.is_empty() {
            bail!("secretctl cluster unlock-key --quiet printed no key");
        }
        self.unlock_key = Some(key);
        Ok(())
    }

    /// Unlocks every member (a member not locked says so and is fine) and
    /// switches autolock off, retrying while members come up.
    pub async fn heal(&mut self, endpoints: &[String]) -> Result<()> {
        let Some(key) = self.unlock_key.take() else {
            return Ok(());
        };
        let mut last = None;
        for _ in 0..HEAL_ATTEMPTS_MAX {
            let unlocked = self.run(endpoints, &["cluster", "unlock"], &key).await;
            let off = match unlocked {
                Ok(_) => {
                    self.run(endpoints, &["cluster", "settings", "--autolock=false"], "")
                        .await
                }
                Err(e) => Err(e),
            };
            match off {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("autolock is already off") => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(HEAL_RETRY_MS)).await;
        }
        self.unlock_key = Some(key);
        Err(last.unwrap_or_else(|| anyhow!("could not unlock")))
    }
}

/// The generations in rotate-key's "destroyed generation(s) 1, 2".
fn parse_destroyed(out: &str) -> Result<Vec<u32>> {
    let tail = out
        .split("destroyed generation")
        .nth(1)
        .ok_or_else(|| anyhow!("unexpected rotate-key output: {out:?}"))?;
    let list = tail.trim_start_matches('s').trim();
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|g| {
            g.trim()
                .parse()
                .map_err(|_| anyhow!("unexpected rotate-key output: {out:?}"))
        })
        .collect()
}

/// After the run: a member's keyring file (opened with its wrap key, as
/// secretd opens it) must hold no generation a rotation destroyed. A member
/// still autolocked cannot be read this way and is reported as such.
pub fn retired_on_disk(data_dirs: &[PathBuf], retired: &BTreeSet<u32>) -> Check {
    let mut problems = Vec::new();
    let mut read = 0;
    for dir in data_dirs {
        let keys = dir.join("keys");
        match held(&keys) {
            Ok(Some(held)) => {
                read += 1;
                let kept: Vec<u32> = held.into_iter().filter(|g| retired.contains(g)).collect();
                if !kept.is_empty() {
                    problems.push(format!(
                        "{} still holds destroyed generation(s) {kept:?}",
                        keys.display()
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("{}: {e}", keys.display())),
        }
    }
    let verdict = if problems.is_empty() {
        Verdict::Linearizable
    } else {
        Verdict::NotLinearizable {
            explanation: problems.join("\n"),
        }
    };
    let mut c = Check::from_verdict("retired-keys", verdict, read);
    if problems.is_empty() {
        c.detail =
            format!("{read} keyring file(s) read; destroyed generations {retired:?} held by none");
    }
    c
}

/// The generations in `keys/keyring`, or None if the member has none (no
/// secret sealed yet, or a removed member).
fn held(keys: &Path) -> Result<Option<Vec<u32>>> {
    if keys.join("keyring.locked").exists() {
        bail!("still autolocked at the end of the run");
    }
    let blob = match std::fs::read(keys.join("keyring")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot read the keyring: {e}"),
    };
    let wrap = std::fs::read(keys.join("wrap.key")).context("cannot read wrap.key")?;
    let wrap = secretd_crypto::Key::from_slice(&wrap).map_err(|e| anyhow!("wrap.key: {e}"))?;
    let ring = secretd_crypto::Keyring::import(&wrap, &blob)
        .map_err(|e| anyhow!("cannot open the keyring with wrap.key: {e}"))?;
    Ok(Some(ring.generations()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_key_output_parses() {
        let out = "key-encryption key rotated to generation 3: 12 secret versions re-wrapped; destroyed generations 1, 2\n";
        assert_eq!(parse_destroyed(out).unwrap(), vec![1, 2]);
        let out = "key-encryption key rotated to generation 2: 1 secret version re-wrapped; destroyed generation 1\n";
        assert_eq!(parse_destroyed(out).unwrap(), vec![1]);
        assert!(parse_destroyed("something else").is_err());
    }
}

//! The `keys` nemesis: the cluster's keys change under load, through the
//! operator's own tool (`secretctl`, beside the `secretd` under test), while
//! the `secrets` workload keeps creating, rotating and reading:
//!
//! - `rotate`: `secretctl cluster rotate-key` (a new KEK generation, every
//!   stored version re-wrapped, the old generations destroyed);
//! - `autolock`: `cluster settings --autolock=true`, then one member killed
//!   and restarted, so it comes back locked (or, restarted before its
//!   next keyring sync followed the lock, on its key file); the heal
//!   unlocks it with `cluster unlock` (the key on stdin) and switches
//!   autolock off.
//!
//! The heal works from what the members report, not from what the fault
//! did: a member may have restarted before it followed the lock (it comes
//! back unlocked), or been unlocked or restarted again since. Each pass
//! asks every member for its settings, unlocks those that say they are
//! locked, switches autolock off if any says it is on, and is done only
//! when a pass finds every member unlocked with autolock off; the nemesis
//! repeats passes within its bounds.
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

use super::client::{error_text, pb::secretstore as ss, Clients};
use super::Check;
use crate::check::Verdict;

/// A rotation may take this long (it re-wraps every stored version in
/// bounded txns).
const ROTATE_TIMEOUT_MS: u64 = 60_000;
/// Any other secretctl command (secretctl bounds each request by 5 s; a
/// heal pass must not outlast the heal's budget).
const COMMAND_TIMEOUT_MS: u64 = 15_000;
/// `--autolock=true` is refused until every member holds the KEK (the
/// first KEK reaches peers on their next keyring sync, every 2 s), and
/// `unlock-key` until the member followed the lock: retried this often.
const AUTOLOCK_ON_ATTEMPTS_MAX: usize = 10;
const AUTOLOCK_ON_RETRY_MS: u64 = 500;
/// A member's keyring while autolock is on, sealed under the unlock key.
const LOCKED_KEYRING_FILE: &str = "keyring.locked";

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

    /// Runs `secretctl --endpoints E ARGS`, feeding `stdin`, for at most
    /// `timeout_ms`; its stdout, or an error with its stderr.
    async fn run(
        &self,
        endpoints: &[String],
        args: &[&str],
        stdin: &str,
        timeout_ms: u64,
    ) -> Result<String> {
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
        let out = tokio::time::timeout(Duration::from_millis(timeout_ms), child.wait_with_output())
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
            .run(
                &[endpoint.to_string()],
                &["cluster", "rotate-key"],
                "",
                ROTATE_TIMEOUT_MS,
            )
            .await?;
        let retired = parse_destroyed(&out)?;
        self.retired.extend(&retired);
        Ok(retired)
    }

    /// Runs a command that a member refuses with "try again" until the
    /// cluster catches up, retrying within bounds.
    async fn run_until_accepted(&self, endpoints: &[String], args: &[&str]) -> Result<String> {
        let mut attempt = 1;
        loop {
            match self.run(endpoints, args, "", COMMAND_TIMEOUT_MS).await {
                Err(e)
                    if e.to_string().contains("try again")
                        && attempt < AUTOLOCK_ON_ATTEMPTS_MAX =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(AUTOLOCK_ON_RETRY_MS)).await;
                }
                r => return r,
            }
        }
    }

    /// Switches autolock on and keeps the unlock key. The caller counts
    /// autolock as on from the attempt: a command that timed out may have
    /// switched it on.
    pub async fn autolock_on(&mut self, endpoints: &[String]) -> Result<()> {
        self.run_until_accepted(endpoints, &["cluster", "settings", "--autolock=true"])
            .await?;
        self.fetch_unlock_key(endpoints).await
    }

    /// `cluster unlock-key --quiet` through `endpoints` (unlocked members).
    async fn fetch_unlock_key(&mut self, endpoints: &[String]) -> Result<()> {
        let key = self
            .run_until_accepted(endpoints, &["cluster", "unlock-key", "--quiet"])
            .await?;
        let key = Zeroizing::new(key.trim().to_string());
        if key.is_empty() {
            bail!("secretctl cluster unlock-key --quiet printed no key");
        }
        self.unlock_key = Some(key);
        Ok(())
    }

    /// One pass of the autolock heal over `members` (node indexes; a
    /// removed member is not one): None once every member answers
    /// unlocked with autolock off, else what is still wrong and what this
    /// pass did about it. Every step may be repeated: unlocking a member
    /// that is no longer locked and switching off autolock that is off
    /// are no-ops.
    pub async fn heal_pass(&mut self, clients: &Clients, members: &[usize]) -> Option<String> {
        let mut locked = Vec::new();
        let mut unlocked = Vec::new();
        let mut on = Vec::new();
        let mut notes = Vec::new();
        for &i in members {
            let r = ss::admin_client::AdminClient::new(clients.channel(i))
                .get_settings(ss::GetSettingsRequest {})
                .await;
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.locked {
                        locked.push(i);
                    } else {
                        unlocked.push(i);
                    }
                    if r.autolock {
                        on.push(i);
                    }
                }
                Err(e) => notes.push(format!("n{} did not answer: {}", i + 1, error_text(&e))),
            }
        }
        if locked.is_empty() && on.is_empty() && notes.is_empty() {
            self.unlock_key = None;
            return None;
        }
        let urls = |v: &[usize]| {
            v.iter()
                .map(|&i| clients.urls[i].clone())
                .collect::<Vec<_>>()
        };
        if !locked.is_empty() {
            notes.push(match self.unlock(&urls(&locked), &urls(&unlocked)).await {
                Ok(()) => format!("unlocked {}", names(&locked)),
                Err(e) => format!("could not unlock {}: {e:#}", names(&locked)),
            });
        }
        // Through unlocked members: a locked one refuses the change.
        if !on.is_empty() && !unlocked.is_empty() {
            let off = self
                .run(
                    &urls(&unlocked),
                    &["cluster", "settings", "--autolock=false"],
                    "",
                    COMMAND_TIMEOUT_MS,
                )
                .await;
            notes.push(match off {
                Ok(_) => format!("autolock switched off ({} said on)", names(&on)),
                Err(e) if e.to_string().contains("autolock is already off") => {
                    format!("autolock already off ({} said on)", names(&on))
                }
                Err(e) => format!("could not switch autolock off: {e:#}"),
            });
        }
        Some(notes.join("; "))
    }

    /// `cluster unlock` of the `locked` endpoints, with the key kept from
    /// the fault or, failing that, asked of an `unlocked` member. One
    /// unlocked meanwhile is no failure.
    async fn unlock(&mut self, locked: &[String], unlocked: &[String]) -> Result<()> {
        if self.unlock_key.is_none() {
            if unlocked.is_empty() {
                bail!("no unlock key kept, and no unlocked member to ask for it");
            }
            self.fetch_unlock_key(unlocked).await?;
        }
        let key = self.unlock_key.as_ref().map(|k| k.as_str()).unwrap_or("");
        match self
            .run(locked, &["cluster", "unlock"], key, COMMAND_TIMEOUT_MS)
            .await
        {
            Err(e) if not_locked(&e) => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

/// secretctl's "this member is not locked" / "no member is locked": the
/// members were unlocked (or restarted unlocked) since they were asked.
fn not_locked(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    text.contains("is not locked") || text.contains("no member is locked")
}

/// "n1, n3" for node indexes.
fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| format!("n{}", i + 1))
        .collect::<Vec<_>>()
        .join(", ")
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
/// still autolocked cannot be read this way: an anomaly after a final heal
/// that switched autolock off, undecided (`autolock_left`) after one that
/// could not, since then the nemesis left it so, not secretd.
pub fn retired_on_disk(
    data_dirs: &[PathBuf],
    retired: &BTreeSet<u32>,
    autolock_left: bool,
) -> Check {
    let mut problems = Vec::new();
    let mut unread = Vec::new();
    let mut read = 0;
    for dir in data_dirs {
        let keys = dir.join("keys");
        if autolock_left && keys.join(LOCKED_KEYRING_FILE).exists() {
            unread.push(format!(
                "{}: still autolocked (the final heal could not switch autolock off)",
                keys.display()
            ));
            continue;
        }
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
    let verdict = if !problems.is_empty() {
        Verdict::NotLinearizable {
            explanation: problems.join("\n"),
        }
    } else if !unread.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    let mut c = Check::from_verdict("retired-keys", verdict, read);
    if problems.is_empty() {
        c.detail =
            format!("{read} keyring file(s) read; destroyed generations {retired:?} held by none");
        if !unread.is_empty() {
            c.detail = format!("{}\n{}", c.detail, unread.join("\n"));
        }
    }
    c
}

/// The generations in `keys/keyring`, or None if the member has none (no
/// secret sealed yet, or a removed member).
fn held(keys: &Path) -> Result<Option<Vec<u32>>> {
    if keys.join(LOCKED_KEYRING_FILE).exists() {
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

    /// A keyring still sealed under the unlock key is secretd's fault
    /// only if the final heal switched autolock off.
    #[test]
    fn a_locked_keyring_is_invalid_after_a_heal_and_unknown_without_one() {
        let dir = std::env::temp_dir().join(format!("jepsen-keys-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys").join(LOCKED_KEYRING_FILE), b"sealed").unwrap();
        let dirs = [dir.clone()];
        let healed = retired_on_disk(&dirs, &BTreeSet::new(), false);
        assert_eq!(healed.valid, Some(false), "{}", healed.detail);
        assert!(
            healed.detail.contains("still autolocked"),
            "{}",
            healed.detail
        );
        let unhealed = retired_on_disk(&dirs, &BTreeSet::new(), true);
        assert_eq!(unhealed.valid, None, "{}", unhealed.detail);
        assert!(
            unhealed.detail.contains("could not switch autolock off"),
            "{}",
            unhealed.detail
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

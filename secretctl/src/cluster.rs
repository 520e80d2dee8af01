//! `secretctl cluster` key commands: autolock on and off, the unlock key,
//! unlocking a member, and KEK rotation. The unlock key is read from a
//! prompt (no echo) or from stdin, never from a flag: flags end up in shell
//! history and in `ps`.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use secretd_client::reason::Reason;
use zeroize::Zeroize;

use super::{channel, endpoints, grpc_error, Cli};
use crate::pb::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use crate::pb::secretstore::{
    admin_client::AdminClient, GetSettingsRequest, RotateKeyRequest, SetAutolockRequest,
    UnlockKeyRequest, UnlockRequest,
};

/// A rotation re-wraps every stored secret version; give it time.
const ROTATE_TIMEOUT_MS: u64 = 600_000;
/// Longest line accepted as an unlock key (it is 58 characters).
const UNLOCK_KEY_INPUT_BYTES_MAX: u64 = 4096;

fn print_key_notice(key: &str) {
    println!("To unlock a restarted member, run `secretctl cluster unlock` and give it this key:");
    println!();
    println!("    {key}");
    println!();
    println!("Keep it somewhere safe: without it a restarted member cannot open any secret.");
}

pub async fn set_autolock(cli: &Cli, enabled: bool) -> Result<()> {
    let key = super::call(cli, |ch| async move {
        AdminClient::new(ch)
            .set_autolock(SetAutolockRequest { enabled })
            .await
    })
    .await
    .map_err(|(e, ep)| grpc_error(e, &ep))?
    .into_inner()
    .unlock_key;
    if enabled {
        print_key_notice(&key);
    } else {
        println!("autolock is off");
    }
    Ok(())
}

/// `docker swarm unlock-key`: Docker's words when autolock is off, which
/// its CLI says itself (docker/cli `runUnlockKey`): before rotating, and
/// when the daemon answers an empty key.
pub async fn unlock_key(cli: &Cli, rotate: bool, quiet: bool) -> Result<()> {
    if rotate && !autolock_on(cli).await? {
        bail!("cannot rotate because autolock is not turned on");
    }
    let mut key = super::call(cli, |ch| async move {
        AdminClient::new(ch)
            .unlock_key(UnlockKeyRequest { rotate })
            .await
    })
    .await
    .map_err(|(e, ep)| match super::transport_error(&e, &ep) {
        Some(t) => t,
        None => anyhow!("Error response from daemon: {}", e.message()),
    })?
    .into_inner()
    .unlock_key;
    if key.is_empty() {
        bail!("no unlock key is set");
    }
    if quiet {
        println!("{key}");
    } else {
        if rotate {
            println!("Successfully rotated the unlock key.");
        }
        print_key_notice(&key);
    }
    key.zeroize();
    Ok(())
}

fn read_unlock_key() -> Result<String> {
    let mut text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Unlock key: ")
            .map_err(|e| anyhow!("cannot read the unlock key: {e}"))?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .take(UNLOCK_KEY_INPUT_BYTES_MAX)
            .read_to_string(&mut s)
            .map_err(|e| anyhow!("error reading from STDIN: {e}"))?;
        s
    };
    let trimmed = text.trim().to_string();
    text.zeroize();
    if trimmed.is_empty() {
        bail!("error reading from STDIN: the unlock key is empty");
    }
    Ok(trimmed)
}

/// Unlocks every member named by --endpoints (each must be reachable):
/// after a restart an operator usually unlocks the one member that
/// restarted, and `--endpoints` names it.
pub async fn unlock(cli: &Cli) -> Result<()> {
    let timeout = Duration::from_secs(cli.command_timeout);
    let eps = secretd_client::endpoints(&cli.endpoints)?;
    // As `docker swarm unlock`: find out which members are locked before
    // asking for the key; when none is, say so and fail.
    let mut failed = 0;
    let mut locked = Vec::new();
    for ep in &eps {
        let r = AdminClient::new(channel(cli, ep, timeout)?)
            .get_settings(GetSettingsRequest {})
            .await;
        match r {
            Ok(s) if s.get_ref().locked => locked.push(ep.clone()),
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                eprintln!("{ep}: {}", grpc_error(e, ep));
            }
        }
    }
    if locked.is_empty() && failed == 0 {
        bail!(if eps.len() == 1 {
            "Error: this member is not locked"
        } else {
            "Error: no member is locked"
        });
    }
    if !locked.is_empty() {
        let mut key = read_unlock_key()?;
        for ep in &locked {
            let r = AdminClient::new(channel(cli, ep, timeout)?)
                .unlock(UnlockRequest {
                    unlock_key: key.clone(),
                })
                .await;
            match r {
                // Silent on success, as `docker swarm unlock`; one unlocked
                // meanwhile (by another admin) is no failure either.
                Ok(_) => {}
                Err(e) if Reason::of(&e) == Some(Reason::NotLocked) => {}
                Err(e) => {
                    failed += 1;
                    eprintln!("{ep}: {}", grpc_error(e, ep));
                }
            }
        }
        key.zeroize();
    }
    if failed > 0 {
        bail!(
            "{failed} of {} member{} not unlocked",
            eps.len(),
            if eps.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

pub async fn rotate_key(cli: &Cli) -> Result<()> {
    let eps = secretd_client::endpoints(&cli.endpoints)?;
    let ep = eps
        .first()
        .ok_or_else(|| anyhow!("no endpoint given"))?
        .clone();
    let r = AdminClient::new(channel(cli, &ep, Duration::from_millis(ROTATE_TIMEOUT_MS))?)
        .rotate_key(RotateKeyRequest {})
        .await
        .map_err(|e| grpc_error(e, &ep))?
        .into_inner();
    println!(
        "key-encryption key rotated to generation {}: {} secret version{} re-wrapped; destroyed generation{} {}",
        r.generation,
        r.rewrapped,
        if r.rewrapped == 1 { "" } else { "s" },
        if r.retired.len() == 1 { "" } else { "s" },
        r.retired
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Whether autolock is on, as the member that answers knows it.
async fn autolock_on(cli: &Cli) -> Result<bool> {
    let r = super::call(cli, |ch| async move {
        AdminClient::new(ch)
            .get_settings(GetSettingsRequest {})
            .await
    })
    .await
    .map_err(|(e, ep)| match super::transport_error(&e, &ep) {
        Some(t) => t,
        None => anyhow!("Error response from daemon: {}", e.message()),
    })?;
    Ok(r.into_inner().autolock)
}

/// `cluster settings` without `--autolock`: shows the settings, or changes
/// the secret cipher.
pub(crate) async fn settings(cli: &Cli, secret_cipher: Option<&str>) -> Result<()> {
    use crate::pb::secretstore::{admin_client::AdminClient, GetSettingsRequest, Settings};
    let r = match secret_cipher {
        Some(c) => {
            let s = Settings {
                secret_cipher: c.to_string(),
            };
            super::call(cli, |ch| {
                let s = s.clone();
                async move { AdminClient::new(ch).update_settings(s).await }
            })
            .await
        }
        None => {
            super::call(cli, |ch| async move {
                AdminClient::new(ch)
                    .get_settings(GetSettingsRequest {})
                    .await
            })
            .await
        }
    }
    .map_err(|(e, ep)| grpc_error(e, &ep))?
    .into_inner();
    let s = r.settings.unwrap_or_default();
    let k = r.keys.unwrap_or_default();
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    println!("secret cipher:         {}", s.secret_cipher);
    println!(
        "KEK generations:       {}",
        if k.registered.is_empty() {
            "none yet (created with the first secret)".to_string()
        } else {
            list(&k.registered)
        }
    );
    println!("held by this member:   {}", list(&k.held));
    println!(
        "autolock:              {}",
        match (r.autolock, r.locked) {
            (false, _) => "off",
            (true, false) => "on (this member is unlocked)",
            (true, true) => "on (this member is LOCKED)",
        }
    );
    Ok(())
}

/// `cluster status`: each endpoint's member, leader, term and indexes.
pub(crate) async fn status(cli: &Cli) -> Result<()> {
    let timeout = Duration::from_secs(cli.command_timeout);
    println!(
        "{:<24} {:<17} {:<17} {:>6} {:>10} {:>10} {:>8}",
        "ENDPOINT", "ID", "LEADER", "TERM", "INDEX", "APPLIED", "REVISION"
    );
    let mut failed = 0;
    for ep in endpoints(&cli.endpoints)? {
        let mut c = MaintenanceClient::new(channel(cli, &ep, timeout)?);
        match c.status(StatusRequest {}).await {
            Ok(s) => {
                let s = s.into_inner();
                let h = s.header.unwrap_or_default();
                println!(
                    "{:<24} {:<17x} {:<17x} {:>6} {:>10} {:>10} {:>8}",
                    ep,
                    h.member_id,
                    s.leader,
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    h.revision
                );
            }
            Err(e) => {
                eprintln!("{}", grpc_error(e, &ep));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} endpoint(s) did not answer");
    }
    Ok(())
}

//! `secretctl`, the operator's CLI: Docker's `secret` and `config`
//! commands (`objects`), task assignments, cluster status and settings, and
//! the etcd-compatible keyspace. Every failure is one sentence on stderr
//! and exit status 1.

mod cluster;
mod kv;
mod objects;
mod task;
pub mod usage;
#[cfg(test)]
mod usage_docker_tests;

pub use secretd_client::pb;

/// Secrets or configs, as the server names them (`secretd_vocab`).
pub use secretd_vocab::Kind;

/// A flag value found wrong after parsing (a `--filter` without `=`):
/// printed as Docker prints a usage error, with the command's usage line,
/// exit 125 (`usage::flag_error_for`).
#[derive(Debug)]
pub struct UsageError {
    pub message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage_error(message: String) -> anyhow::Error {
    UsageError { message }.into()
}

/// Docker's limits on an object's data, checked before anything is sent
/// (the server checks them again: `secretd_secrets::validate`).
pub const SECRET_DATA_BYTES_LIMIT: usize = 500 * 1024;
pub const CONFIG_DATA_BYTES_LIMIT: usize = 1000 * 1024;

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use tonic::transport::Channel;

use crate::pb::etcdserverpb::kv_client::KvClient;

#[derive(Parser, Debug)]
#[command(name = "secretctl", version, about = "Operate a secretd cluster")]
pub struct Cli {
    /// Comma-separated member client endpoints (host:port).
    #[arg(
        long,
        global = true,
        env = "SECRETCTL_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: String,
    /// The cluster's CA certificate (turns on TLS), as etcdctl's --cacert.
    #[arg(long, global = true, env = "SECRETCTL_CACERT")]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (an admin's: spiffe://secretd/admin).
    #[arg(long, global = true, env = "SECRETCTL_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// Key for --cert.
    #[arg(long = "key", id = "client_key", global = true, env = "SECRETCTL_KEY")]
    pub key: Option<std::path::PathBuf>,
    /// Time allowed for each request, in seconds.
    #[arg(long, global = true, default_value_t = 5)]
    pub command_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage secrets (as `docker secret`).
    // Its own help says what Docker's does (cobra prints Long over Short).
    #[command(subcommand, long_about = "Manage Swarm secrets")]
    Secret(objects::SecretCmd),
    /// Manage configs (as `docker config`).
    #[command(subcommand, long_about = "Manage Swarm configs")]
    Config(objects::ConfigCmd),
    /// Manage task assignments: which secrets and configs a task gets.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// Cluster administration.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The etcd-compatible keyspace.
    #[command(subcommand)]
    Kv(KvCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Status of every endpoint: member id, leader, raft term and index.
    Status,
    /// Show cluster settings and key generations; change settings.
    Settings {
        /// Cipher for new secret versions: xchacha20-poly1305 or aes-256-gcm.
        #[arg(long)]
        secret_cipher: Option<String>,
        /// Switch autolock on (prints the unlock key, once) or off.
        #[arg(long, value_name = "BOOL")]
        autolock: Option<bool>,
    },
    /// Unlock the members at --endpoints; the key is read from a prompt or stdin.
    Unlock,
    /// Show the current unlock key, or make a new one.
    UnlockKey {
        /// Make a new unlock key; the old one stops working.
        #[arg(long)]
        rotate: bool,
        /// Print only the key.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Rotate the key-encryption key: new generation, every stored key
    /// re-wrapped, old generations destroyed.
    RotateKey,
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Writes a key.
    Put { key: String, value: String },
    /// Reads a key, or every key with the prefix.
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Deletes a key, or every key with the prefix; prints how many.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
}

use secretd_client::endpoints;

fn channel(cli: &Cli, endpoint: &str, timeout: Duration) -> Result<Channel> {
    let tls = secretd_client::ClientTls::from_flags(
        cli.cacert.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
    )?;
    secretd_client::channel(endpoint, tls.as_ref(), Some(timeout))
}

pub use secretd_client::prefix_end;

/// A key, or a prefix as etcd clients send it: the empty prefix is every
/// key (`\0` to `\0`).
fn key_range(key: &str, prefix: bool) -> (Vec<u8>, Vec<u8>) {
    match (prefix, key.is_empty()) {
        (false, _) => (key.as_bytes().to_vec(), Vec::new()),
        (true, true) => (vec![0], vec![0]),
        (true, false) => (key.as_bytes().to_vec(), prefix_end(key.as_bytes())),
    }
}

/// Marks a status made here, before any member was asked (a bad endpoint,
/// TLS settings that do not fit it): never shown as the daemon's answer.
const LOCAL_KEY: &str = "secretctl-local";

fn local_error(msg: String) -> tonic::Status {
    let mut s = tonic::Status::invalid_argument(msg);
    s.metadata_mut()
        .insert(LOCAL_KEY, tonic::metadata::MetadataValue::from_static("1"));
    s
}

use secretd_client::speaks_tls;

/// A connection failure or a local mistake (as opposed to an answer), in
/// words.
fn transport_error(e: &tonic::Status, endpoint: &str) -> Option<anyhow::Error> {
    if e.metadata().contains_key(LOCAL_KEY) {
        return Some(anyhow!("{}", e.message()));
    }
    // Plain HTTP/2 to a member that serves TLS fails as an h2 protocol
    // error, which reads like the member's fault. Ask the port itself.
    let plain = !endpoint.starts_with("https://");
    let broken = matches!(
        e.code(),
        tonic::Code::Internal | tonic::Code::Unavailable | tonic::Code::Unknown
    ) && !e.message().starts_with("etcdserver");
    if plain && broken && speaks_tls(endpoint) {
        let host_port = endpoint.trim_start_matches("http://");
        return Some(anyhow!(
            "cannot talk to secretd at {endpoint}: it serves TLS; use --endpoints https://{host_port} with --cacert (and --cert/--key)"
        ));
    }
    match e.code() {
        tonic::Code::Unavailable if e.message().starts_with("etcdserver") => None,
        tonic::Code::Unavailable | tonic::Code::Unknown => Some(anyhow!(
            "cannot reach secretd at {endpoint}: {}",
            e.message()
        )),
        tonic::Code::DeadlineExceeded => Some(anyhow!("{endpoint} did not answer in time")),
        _ => None,
    }
}

fn grpc_error(e: tonic::Status, endpoint: &str) -> anyhow::Error {
    transport_error(&e, endpoint).unwrap_or_else(|| anyhow!("{}", e.message()))
}

/// Runs a call against the first endpoint that answers, as etcd clients
/// do: only a connection failure moves on to the next endpoint. The error
/// keeps the status and the endpoint that gave it.
async fn call<T, F, Fut>(cli: &Cli, f: F) -> Result<T, (tonic::Status, String)>
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let timeout = Duration::from_secs(cli.command_timeout);
    let eps = endpoints(&cli.endpoints).map_err(|e| (local_error(e.to_string()), String::new()))?;
    let mut last = None;
    for ep in eps {
        let ch =
            channel(cli, &ep, timeout).map_err(|e| (local_error(e.to_string()), ep.clone()))?;
        match f(ch).await {
            Ok(v) => return Ok(v),
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && !e.message().starts_with("etcdserver") =>
            {
                last = Some((e, ep))
            }
            Err(e) => return Err((e, ep)),
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            tonic::Status::unavailable("no endpoint answered"),
            String::new(),
        )
    }))
}

/// Runs a keyspace call; errors in etcdctl's words.
async fn with_kv<T, F, Fut>(cli: &Cli, f: F) -> Result<T>
where
    F: Fn(KvClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    call(cli, |ch| f(KvClient::new(ch)))
        .await
        .map_err(|(e, ep)| grpc_error(e, &ep))
}

/// The command tree as parsed and as `usage` describes it: the derive's,
/// with Docker's per-kind names (`SECRET`, `CONFIG`) and `config create`'s
/// file required, as in Docker.
pub fn cli_command() -> clap::Command {
    use clap::CommandFactory;
    let name_as = |word: &'static str| {
        move |c: clap::Command| {
            c.mut_subcommand("create", |c| c.mut_arg("name", |a| a.value_name(word)))
                .mut_subcommand("inspect", |c| c.mut_arg("names", |a| a.value_name(word)))
                .mut_subcommand("rm", |c| c.mut_arg("names", |a| a.value_name(word)))
        }
    };
    Cli::command()
        .mut_subcommand("secret", name_as("SECRET"))
        .mut_subcommand("config", |c| {
            name_as("CONFIG")(c).mut_subcommand("create", |c| {
                c.mut_arg("file", |a| a.required(true))
                    .mut_arg("labels", |a| a.help("Config labels"))
            })
        })
}

/// Parses `argv` (with the binary's name first) as Docker would: a mistake
/// in a `secret`/`config` command is reported in Docker's words.
pub fn parse(argv: Vec<String>) -> std::result::Result<Cli, usage::Exit> {
    use clap::FromArgMatches;
    let parsed = cli_command()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.map_err(|e| {
        usage::docker_error(&cli_command(), &argv[1.min(argv.len())..], &e).unwrap_or_else(|| {
            let text = e.render().to_string();
            let (stdout, stderr) = if e.use_stderr() {
                (String::new(), text)
            } else {
                (text, String::new())
            };
            usage::Exit {
                stdout,
                stderr,
                status: u8::try_from(e.exit_code()).unwrap_or(2),
            }
        })
    })
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Secret(cmd) => match cmd {
            objects::SecretCmd::Create(a) => {
                objects::create(&cli, Kind::Secret, &a.common, a.driver.as_deref()).await?
            }
            objects::SecretCmd::Inspect(a) => objects::inspect(&cli, Kind::Secret, a).await?,
            objects::SecretCmd::Ls(a) => objects::ls(&cli, Kind::Secret, a).await?,
            objects::SecretCmd::Rm(a) => objects::rm(&cli, Kind::Secret, a).await?,
            objects::SecretCmd::Rotate { name, file } => objects::rotate(&cli, name, file).await?,
            objects::SecretCmd::Versions { names } => objects::versions(&cli, names).await?,
        },
        Command::Config(cmd) => match cmd {
            objects::ConfigCmd::Create(a) => objects::create(&cli, Kind::Config, a, None).await?,
            objects::ConfigCmd::Inspect(a) => objects::inspect(&cli, Kind::Config, a).await?,
            objects::ConfigCmd::Ls(a) => objects::ls(&cli, Kind::Config, a).await?,
            objects::ConfigCmd::Rm(a) => objects::rm(&cli, Kind::Config, a).await?,
        },
        Command::Task(cmd) => task::run(&cli, cmd).await?,
        Command::Completion { shell } => {
            let mut cmd = cli_command();
            clap_complete::generate(*shell, &mut cmd, "secretctl", &mut std::io::stdout());
        }
        Command::Cluster(ClusterCmd::Settings {
            autolock: Some(on),
            secret_cipher: None,
        }) => cluster::set_autolock(&cli, *on).await?,
        Command::Cluster(ClusterCmd::Settings {
            autolock: Some(_),
            secret_cipher: Some(_),
        }) => bail!("change --autolock and --secret-cipher in separate commands"),
        Command::Cluster(ClusterCmd::Unlock) => cluster::unlock(&cli).await?,
        Command::Cluster(ClusterCmd::UnlockKey { rotate, quiet }) => {
            cluster::unlock_key(&cli, *rotate, *quiet).await?
        }
        Command::Cluster(ClusterCmd::RotateKey) => cluster::rotate_key(&cli).await?,
        Command::Cluster(ClusterCmd::Settings {
            secret_cipher,
            autolock: None,
        }) => cluster::settings(&cli, secret_cipher.as_deref()).await?,
        Command::Cluster(ClusterCmd::Status) => cluster::status(&cli).await?,
        Command::Kv(cmd) => kv::run(&cli, cmd).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(key_range("", true), (vec![0], vec![0]));
        assert_eq!(key_range("a", true), (b"a".to_vec(), b"b".to_vec()));
        assert_eq!(key_range("a", false), (b"a".to_vec(), vec![]));
    }
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_tree_is_valid() {
        super::cli_command().debug_assert();
    }
}

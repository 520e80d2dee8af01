//! `secretctl`, the operator's CLI. This version speaks to the cluster
//! (status) and its keyspace; secret and config commands build on it.
//! Every failure is one sentence on stderr and exit status 1.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use tonic::transport::Channel;

use crate::pb::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, DeleteRangeRequest, PutRequest,
    RangeRequest, StatusRequest,
};

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
    /// Time allowed for each request, in seconds.
    #[arg(long, global = true, default_value_t = 5)]
    pub command_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Cluster administration.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The etcd-compatible keyspace.
    #[command(subcommand)]
    Kv(KvCmd),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Status of every endpoint: member id, leader, raft term and index.
    Status,
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

fn endpoints(list: &str) -> Result<Vec<String>> {
    let eps: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if eps.is_empty() {
        bail!("--endpoints is empty");
    }
    Ok(eps)
}

fn channel(endpoint: &str, timeout: Duration) -> Result<Channel> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Channel::from_shared(url.clone())
        .map_err(|_| anyhow!("invalid endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .connect_lazy())
}

/// The key just past every key with this prefix (etcd's prefix range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// A key, or a prefix as etcd clients send it: the empty prefix is every
/// key (`\0` to `\0`).
fn key_range(key: &str, prefix: bool) -> (Vec<u8>, Vec<u8>) {
    match (prefix, key.is_empty()) {
        (false, _) => (key.as_bytes().to_vec(), Vec::new()),
        (true, true) => (vec![0], vec![0]),
        (true, false) => (key.as_bytes().to_vec(), prefix_end(key.as_bytes())),
    }
}

fn grpc_error(e: tonic::Status, endpoint: &str) -> anyhow::Error {
    match e.code() {
        tonic::Code::Unavailable if e.message().starts_with("etcdserver") => {
            anyhow!("{}", e.message())
        }
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            anyhow!("cannot reach {endpoint}: {}", e.message())
        }
        tonic::Code::DeadlineExceeded => anyhow!("{endpoint} did not answer in time"),
        _ => anyhow!("{}", e.message()),
    }
}

/// Runs the first endpoint that answers, as etcd clients do.
async fn with_kv<T, F, Fut>(cli: &Cli, f: F) -> Result<T>
where
    F: Fn(KvClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let timeout = Duration::from_secs(cli.command_timeout);
    let mut last = None;
    for ep in endpoints(&cli.endpoints)? {
        match f(KvClient::new(channel(&ep, timeout)?)).await {
            Ok(v) => return Ok(v),
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && !e.message().starts_with("etcdserver") =>
            {
                last = Some(grpc_error(e, &ep))
            }
            Err(e) => return Err(grpc_error(e, &ep)),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no endpoint answered")))
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Cluster(ClusterCmd::Status) => {
            let timeout = Duration::from_secs(cli.command_timeout);
            println!(
                "{:<24} {:<17} {:<17} {:>6} {:>10} {:>10} {:>8}",
                "ENDPOINT", "ID", "LEADER", "TERM", "INDEX", "APPLIED", "REVISION"
            );
            let mut failed = 0;
            for ep in endpoints(&cli.endpoints)? {
                let mut c = MaintenanceClient::new(channel(&ep, timeout)?);
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
                        eprintln!("secretctl: {}", grpc_error(e, &ep));
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} endpoint(s) did not answer");
            }
        }
        Command::Kv(KvCmd::Put { key, value }) => {
            let req = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            with_kv(&cli, |mut c| {
                let req = req.clone();
                async move { c.put(req).await }
            })
            .await?;
            println!("OK");
        }
        Command::Kv(KvCmd::Get { key, prefix }) => {
            let (key, range_end) = key_range(key, *prefix);
            let req = RangeRequest {
                key,
                range_end,
                ..Default::default()
            };
            let resp = with_kv(&cli, |mut c| {
                let req = req.clone();
                async move { c.range(req).await }
            })
            .await?
            .into_inner();
            for kv in resp.kvs {
                println!(
                    "{}\n{}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                );
            }
        }
        Command::Kv(KvCmd::Del { key, prefix }) => {
            let (key, range_end) = key_range(key, *prefix);
            let req = DeleteRangeRequest {
                key,
                range_end,
                prev_kv: false,
            };
            let resp = with_kv(&cli, |mut c| {
                let req = req.clone();
                async move { c.delete_range(req).await }
            })
            .await
            .context("delete")?
            .into_inner();
            println!("{}", resp.deleted);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

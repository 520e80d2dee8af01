//! `secretctl kv put|get|del`: the etcd keyspace, as etcdctl shows it.

use anyhow::{Context, Result};

use super::{key_range, with_kv, Cli, KvCmd};
use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

pub(crate) async fn run(cli: &Cli, cmd: &KvCmd) -> Result<()> {
    match cmd {
        KvCmd::Put { key, value } => {
            let req = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            with_kv(cli, |mut c| {
                let req = req.clone();
                async move { c.put(req).await }
            })
            .await?;
            println!("OK");
        }
        KvCmd::Get { key, prefix } => {
            let (key, range_end) = key_range(key, *prefix);
            let req = RangeRequest {
                key,
                range_end,
                ..Default::default()
            };
            let resp = with_kv(cli, |mut c| {
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
        KvCmd::Del { key, prefix } => {
            let (key, range_end) = key_range(key, *prefix);
            let req = DeleteRangeRequest {
                key,
                range_end,
                prev_kv: false,
            };
            let resp = with_kv(cli, |mut c| {
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

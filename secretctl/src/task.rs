//! `secretctl task`: assignments of secrets and configs to a task on a
//! node (what a Swarm task's spec carries), which the node's agent mounts.
//! Output and errors follow the secret and config commands' Docker style.

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::objects::{print_inspect, print_rows};
use super::{call, Cli};
use crate::pb::secretstore::{tasks_client::TasksClient, ListTasksRequest, Mount, Task, TaskRef};
use crate::Kind;
use secretd_client::format::{ago, natural_cmp, rfc3339_nano};
use secretd_client::reason::Reason;

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Assign secrets and configs to a task on a node.
    Create {
        id: String,
        /// The node the task runs on.
        #[arg(long)]
        node: String,
        /// source=S[,target=T][,uid=U][,gid=G][,mode=M][,version=V], or just S.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// source=C[,target=PATH][,uid=U][,gid=G][,mode=M], or just C.
        #[arg(long = "config")]
        configs: Vec<String>,
        /// KEY=VALUE in the task's environment (what templated configs
        /// read with `{{env "KEY"}}`).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
    },
    /// Display detailed information on one or more tasks.
    Inspect {
        /// Format output using a custom template: 'json' or a Go template.
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Only tasks on this node.
        #[arg(long)]
        node: Option<String>,
        /// Format output: 'table', 'json' or a Go template.
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove one or more tasks.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `source=S,target=T,uid=U,gid=G,mode=M,version=V`, or just `S`.
pub fn parse_mount(kind: Kind, spec: &str) -> Result<Mount> {
    let mut m = Mount {
        mode: 0o444,
        ..Default::default()
    };
    let flag = format!("--{}", kind.word());
    if !spec.contains('=') {
        m.source = spec.to_string();
    } else {
        for field in spec.split(',') {
            let (k, v) = field.split_once('=').ok_or_else(|| {
                anyhow!("invalid field '{field}' in {flag} {spec:?}: must be a key=value pair")
            })?;
            let num = |what: &str, radix: u32| {
                u32::from_str_radix(v, radix)
                    .map_err(|_| anyhow!("invalid {what} {v:?} in {flag} {spec:?}"))
            };
            match k {
                "source" | "src" => m.source = v.to_string(),
                "target" => m.target = v.to_string(),
                "uid" => m.uid = num("uid", 10)?,
                "gid" => m.gid = num("gid", 10)?,
                "mode" => m.mode = num("mode (octal)", 8)?,
                "version" if kind == Kind::Secret => {
                    m.version = v
                        .parse()
                        .map_err(|_| anyhow!("invalid version {v:?} in {flag} {spec:?}"))?
                }
                other => bail!("invalid field key '{other}' in {flag} {spec:?}"),
            }
        }
    }
    if m.source.is_empty() {
        bail!("{flag} {spec:?}: source is required");
    }
    if m.target.is_empty() {
        m.target = m.source.clone();
    }
    Ok(m)
}

fn mount_json(kind: Kind, m: &Mount) -> Value {
    let (id_key, name_key) = match kind {
        Kind::Secret => ("SecretID", "SecretName"),
        Kind::Config => ("ConfigID", "ConfigName"),
    };
    let mut o = Map::new();
    o.insert(
        "File".into(),
        json!({ "Name": m.target, "UID": m.uid.to_string(), "GID": m.gid.to_string(), "Mode": m.mode }),
    );
    o.insert(id_key.into(), json!(m.source_id));
    o.insert(name_key.into(), json!(m.source));
    if m.version != 0 {
        o.insert("Version".into(), json!(m.version));
    }
    Value::Object(o)
}

pub fn task_json(t: &Task) -> Value {
    json!({
        "ID": t.id,
        "Version": { "Index": t.version_index },
        "CreatedAt": rfc3339_nano(t.created_at_ns),
        "UpdatedAt": rfc3339_nano(t.updated_at_ns),
        "Spec": {
            "Node": t.node,
            "Secrets": t.secrets.iter().map(|m| mount_json(Kind::Secret, m)).collect::<Vec<_>>(),
            "Configs": t.configs.iter().map(|m| mount_json(Kind::Config, m)).collect::<Vec<_>>(),
            "Env": t.env.iter().collect::<std::collections::BTreeMap<_, _>>(),
        }
    })
}

/// Tasks are secretd's own (Docker has no such command): its errors keep
/// the plain "Error: No such task: X" and the server's sentence.
fn task_error(id: &str, (s, ep): (tonic::Status, String)) -> anyhow::Error {
    if let Some(Reason::NotFound { kind, .. }) = Reason::of(&s) {
        if kind == "task" {
            return anyhow!("Error: No such task: {id}");
        }
    }
    match super::transport_error(&s, &ep) {
        Some(e) => e,
        None => anyhow!("Error response from daemon: {}", s.message()),
    }
}

pub async fn run(cli: &Cli, cmd: &TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::Create {
            id,
            node,
            secrets,
            configs,
            env,
        } => create(cli, id, node, secrets, configs, env).await,
        TaskCmd::Inspect { format, ids } => inspect(cli, format.as_deref(), ids).await,
        TaskCmd::Ls {
            quiet,
            node,
            format,
        } => ls(cli, *quiet, node.as_deref(), format.as_deref()).await,
        TaskCmd::Rm { ids } => rm(cli, ids).await,
    }
}

async fn create(
    cli: &Cli,
    id: &str,
    node: &str,
    secrets: &[String],
    configs: &[String],
    env: &[String],
) -> Result<()> {
    let env = env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(anyhow!("invalid --env {e:?}: expected KEY=VALUE")),
        })
        .collect::<Result<_>>()?;
    let req = Task {
        env,
        id: id.to_string(),
        node: node.to_string(),
        secrets: secrets
            .iter()
            .map(|s| parse_mount(Kind::Secret, s))
            .collect::<Result<_>>()?,
        configs: configs
            .iter()
            .map(|s| parse_mount(Kind::Config, s))
            .collect::<Result<_>>()?,
        ..Default::default()
    };
    let t = call(cli, |ch| {
        let req = req.clone();
        async move { TasksClient::new(ch).create(req).await }
    })
    .await
    .map_err(|(s, ep)| {
        // A missing source in Docker's words: docker/cli's `ParseSecrets`
        // and `ParseConfigs` say it for `docker service create`.
        if let Some(Reason::NotFound { kind, name }) = Reason::of(&s) {
            if kind == "secret" || kind == "config" {
                return anyhow!("{kind} not found: {name}");
            }
        }
        task_error(id, (s, ep))
    })?
    .into_inner();
    println!("{}", t.id);
    Ok(())
}

async fn inspect(cli: &Cli, format: Option<&str>, ids: &[String]) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        let r = call(cli, |ch| {
            let id = id.clone();
            async move { TasksClient::new(ch).inspect(TaskRef { id }).await }
        })
        .await;
        match r {
            Ok(t) => found.push(task_json(&t.into_inner())),
            Err(e) => errors.push(task_error(id, e).to_string()),
        }
    }
    print_inspect(format, found, Vec::new(), errors)
}

async fn ls(cli: &Cli, quiet: bool, node: Option<&str>, format: Option<&str>) -> Result<()> {
    let mut req = ListTasksRequest {
        node: node.unwrap_or_default().to_string(),
        page_size: crate::objects::LS_PAGE_SIZE,
        page_token: String::new(),
    };
    let mut tasks = Vec::new();
    for page in 0.. {
        if page == crate::objects::LS_PAGES_MAX {
            bail!(
                "the member's task list went on past {} pages; stopped",
                crate::objects::LS_PAGES_MAX
            );
        }
        let r = call(cli, |ch| {
            let req = req.clone();
            async move { TasksClient::new(ch).list(req).await }
        })
        .await
        .map_err(|e| task_error("", e))?
        .into_inner();
        tasks.extend(r.tasks);
        if r.next_page_token.is_empty() {
            break;
        }
        req.page_token = r.next_page_token;
    }
    tasks.sort_by(|a, b| natural_cmp(&a.id, &b.id));
    let names = |l: &[Mount]| {
        l.iter()
            .map(|m| m.source.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let rows: Vec<Value> = tasks
        .iter()
        .map(|t| {
            json!({
                "Configs": names(&t.configs),
                "CreatedAt": ago(t.created_at_ns),
                "ID": t.id,
                "Node": t.node,
                "Secrets": names(&t.secrets),
            })
        })
        .collect();
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let labels = vec![json!({}); rows.len()];
    let table = "table {{.ID}}\t{{.Node}}\t{{.Secrets}}\t{{.Configs}}\t{{.CreatedAt}}";
    let fields: &[&str] = &["Configs", "CreatedAt", "ID", "Node", "Secrets"];
    print_rows(
        quiet,
        format,
        table,
        &rows,
        &ids,
        &labels,
        (fields, "*task.taskContext"),
    )
}

async fn rm(cli: &Cli, ids: &[String]) -> Result<()> {
    let mut errors = Vec::new();
    for id in ids {
        let r = call(cli, |ch| {
            let id = id.clone();
            async move { TasksClient::new(ch).remove(TaskRef { id }).await }
        })
        .await;
        match r {
            Ok(_) => println!("{id}"),
            Err(e) => errors.push(task_error(id, e).to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_with_docker_defaults() {
        let m = parse_mount(Kind::Secret, "db_pw").unwrap();
        assert_eq!(
            (m.source.as_str(), m.target.as_str(), m.uid, m.gid, m.mode),
            ("db_pw", "db_pw", 0, 0, 0o444)
        );
        let m = parse_mount(
            Kind::Secret,
            "source=db_pw,target=password,uid=1000,gid=50,mode=0400,version=2",
        )
        .unwrap();
        assert_eq!(
            (m.target.as_str(), m.uid, m.gid, m.mode, m.version),
            ("password", 1000, 50, 0o400, 2)
        );
        assert!(parse_mount(Kind::Secret, "source=a,mode=9").is_err());
        assert!(parse_mount(Kind::Secret, "target=a").is_err());
        assert!(parse_mount(Kind::Config, "source=a,version=2").is_err());
        assert!(parse_mount(Kind::Secret, "source=a,colour=red").is_err());
    }
}

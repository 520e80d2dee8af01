//! `secretctl secret|config`: Docker's `docker secret` and `docker config`
//! commands, flag for flag and message for message, plus `secret rotate`,
//! over `secretstore.v1`.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{anyhow, bail, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::{call, Cli};
use crate::pb::secretstore::{
    configs_client::ConfigsClient, secrets_client::SecretsClient, CreateRequest, InspectRequest,
    ListRequest, ListResponse, Object, RemoveRequest, RotateRequest,
};
use crate::{Kind, CONFIG_DATA_BYTES_LIMIT, SECRET_DATA_BYTES_LIMIT};
use secretd_client::format::{self, ago, indented_json, natural_cmp, rfc3339_nano};
use secretd_client::reason::Reason;
use secretd_client::template::Template;

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(
        short = 'l',
        long = "label",
        value_name = "list",
        help = "Secret labels"
    )]
    pub labels: Vec<String>,
    /// The object's name (`value_name` per kind: `cli_command`).
    /// Swarm's templated configs and secrets: "golang" makes the node
    /// agent render the data per task.
    #[arg(long, value_name = "string", help = "Template driver")]
    pub template_driver: Option<String>,
    /// Indexes are explicit: `cli_command` edits these arguments, and an
    /// edited positional would otherwise move to the end.
    #[arg(index = 1, value_name = "SECRET")]
    pub name: String,
    /// A file, or - for standard input (Docker's `secret create` takes one
    /// argument with a driver, so only `config create` requires it).
    #[arg(index = 2, value_name = "file|-")]
    pub file: Option<String>,
}

/// `secret create` has Docker's `--driver`, which `config create` lacks.
#[derive(Args, Debug)]
pub struct SecretCreateArgs {
    /// Secret driver: secretd has none, so only the empty one is accepted.
    #[arg(short = 'd', long, value_name = "string", help = "Secret driver")]
    pub driver: Option<String>,
    #[command(flatten)]
    pub common: CreateArgs,
}

/// docker/cli's `flagsHelper.InspectFormatHelp`, spaces and all.
const FORMAT_HELP: &str = "Format output using a custom template:\n\
'json':             Print in JSON format\n\
'TEMPLATE':         Print output using the given Go template.\n\
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates";

/// docker/cli's `flagsHelper.FormatHelp` (listings), spaces and all.
const LS_FORMAT_HELP: &str = "Format output using a custom template:\n\
'table':            Print output in table format with column headers (default)\n\
'table TEMPLATE':   Print output in table format using the given Go template\n\
'json':             Print in JSON format\n\
'TEMPLATE':         Print output using the given Go template.\n\
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates";

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(short = 'f', long, value_name = "string", help = FORMAT_HELP)]
    pub format: Option<String>,
    #[arg(long, help = "Print the information in a human friendly format")]
    pub pretty: bool,
    #[arg(required = true, value_name = "SECRET")]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// `-q -q` is `-q`, as in Docker.
    #[arg(short, long, action = clap::ArgAction::Count, help = "Only display IDs")]
    pub quiet: u8,
    #[arg(
        short = 'f',
        long = "filter",
        value_name = "filter",
        help = "Filter output based on conditions provided"
    )]
    pub filters: Vec<String>,
    #[arg(long, value_name = "string", help = LS_FORMAT_HELP)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(required = true, value_name = "SECRET")]
    pub names: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Create a secret from a file or STDIN as content.
    Create(SecretCreateArgs),
    /// Display detailed information on one or more secrets.
    Inspect(InspectArgs),
    /// List secrets.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove one or more secrets.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Add a new version of a secret from a file or STDIN as content.
    Rotate {
        #[arg(value_name = "NAME|ID")]
        name: String,
        /// A file, or - for standard input.
        file: String,
    },
    /// Show a secret's current version and every version kept.
    Versions {
        #[arg(required = true, value_name = "NAME|ID")]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Create a config from a file or STDIN
    Create(CreateArgs),
    /// Display detailed information on one or more configs.
    Inspect(InspectArgs),
    /// List configs.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove one or more configs.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

/// Docker's sentence for a locked manager, with secretd's unlock command
/// where Docker names `docker swarm unlock`.
pub(crate) const LOCKED_DOCKER: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"secretctl cluster unlock\" to unlock it.";

/// A failed call as Docker 28 prints it: a lookup that found nothing is
/// the daemon's "secret X not found"; anything swarm refused comes with
/// gRPC's wrapper, "rpc error: code = InvalidArgument desc = ...".
pub(crate) fn daemon(word: &str, input: &str, (s, ep): (tonic::Status, String)) -> anyhow::Error {
    // Lookups happen in Docker's daemon, outside swarm's gRPC: their
    // errors come without the wrapper.
    match Reason::of(&s) {
        Some(Reason::NotFound { kind, .. }) if kind == word => {
            return anyhow!("Error response from daemon: {word} {input} not found");
        }
        // A locked manager refuses in the daemon, without the wrapper, in
        // these words (Docker 28.2.2 against a locked swarm-mode dockerd),
        // naming the command that unlocks.
        Some(Reason::Locked) => return anyhow!("Error response from daemon: {LOCKED_DOCKER}"),
        Some(Reason::Ambiguous) => return anyhow!("Error response from daemon: {}", s.message()),
        _ => {}
    }
    match super::transport_error(&s, &ep) {
        Some(e) => e,
        None => anyhow!(
            "Error response from daemon: rpc error: code = {} desc = {}",
            go_code(s.code()),
            s.message()
        ),
    }
}

/// A gRPC code as Go's `codes.Code` prints it.
fn go_code(c: tonic::Code) -> String {
    match c {
        tonic::Code::Ok => "OK".into(),
        tonic::Code::Cancelled => "Canceled".into(),
        other => format!("{other:?}"),
    }
}

/// An OS error as Go's `syscall.Errno` prints it: the C library's text,
/// first letter lowercased, without Rust's "(os error N)".
fn go_errno(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Reads a secret's or config's content as Docker does, refusing empty
/// input. At most one byte past the limit is read; the server gives the
/// size error in Docker's words. The buffer never reallocates, so no
/// unzeroized copy of a secret is left behind.
fn read_data(file: &str, limit: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(limit + 1));
    let what = |e: String| {
        if file == "-" {
            anyhow!("error reading from STDIN: {e}")
        } else {
            anyhow!("error reading from {file}: {e}")
        }
    };
    let reader: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file)
                .map_err(|e| what(format!("open {file}: {}", go_errno(&e))))?,
        )
    };
    let mut take = reader.take(limit as u64 + 1);
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = take.read(&mut chunk[..]).map_err(|e| {
            let at = if file == "-" { "/dev/stdin" } else { file };
            what(format!("read {at}: {}", go_errno(&e)))
        })?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.is_empty() {
        return Err(what("data is empty".into()));
    }
    Ok(buf)
}

/// An object's content as Docker's `secret create` and `config create`
/// read it, in their words: a driver takes no data; a config's read errors
/// carry `Error reading content from "FILE": `, a secret's do not.
fn read_content(
    kind: Kind,
    file: Option<&str>,
    driver: Option<&str>,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(d) = driver.filter(|d| !d.is_empty()) {
        if file.is_some_and(|f| !f.is_empty()) {
            bail!("When using secret driver secret data must be empty");
        }
        // Docker's daemon looks the driver up as a plugin; secretd has no
        // secret drivers, so none is ever found.
        bail!(
            "Error response from daemon: rpc error: code = Unknown desc = plugin {d:?} not found"
        );
    }
    // Docker's words: a secret needs content unless a driver provides it.
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        bail!("{} file is required", kind.word());
    };
    read_data(file, limit).map_err(|e| match kind {
        Kind::Secret => e,
        Kind::Config => anyhow!("Error reading content from {file:?}: {e}"),
    })
}

fn parse_labels(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

fn parse_filters(list: &[String]) -> Result<ListRequest> {
    let mut req = ListRequest::default();
    for f in list {
        let Some((k, v)) = f.split_once('=') else {
            return Err(crate::usage_error(format!(
                "invalid argument {f:?} for \"-f, --filter\" flag: bad format of filter (expected name=value)"
            )));
        };
        match k {
            "name" => req.name_prefixes.push(v.to_string()),
            "id" => req.id_prefixes.push(v.to_string()),
            "label" => req.labels.push(v.to_string()),
            other => bail!("Error response from daemon: Invalid filter '{other}'"),
        }
    }
    Ok(req)
}

fn labels_json(labels: &std::collections::HashMap<String, String>) -> Value {
    let sorted: BTreeMap<_, _> = labels.iter().collect();
    let mut m = Map::new();
    for (k, v) in sorted {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(m)
}

/// `inspect`'s JSON: Docker's keys in Docker's order, nothing more (the
/// version history is `secret versions`).
pub fn object_json(kind: Kind, o: &Object) -> Value {
    let spec = o.spec.clone().unwrap_or_default();
    let mut s = Map::new();
    s.insert("Name".into(), json!(spec.name));
    s.insert("Labels".into(), labels_json(&spec.labels));
    if kind == Kind::Config {
        s.insert(
            "Data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&spec.data)),
        );
    }
    if !spec.templating.is_empty() {
        s.insert("Templating".into(), json!({ "Name": spec.templating }));
    }
    let mut m = Map::new();
    m.insert("ID".into(), json!(o.id));
    m.insert("Version".into(), json!({ "Index": o.version_index }));
    m.insert("CreatedAt".into(), json!(rfc3339_nano(o.created_at_ns)));
    m.insert("UpdatedAt".into(), json!(rfc3339_nano(o.updated_at_ns)));
    m.insert("Spec".into(), Value::Object(s));
    Value::Object(m)
}

/// `inspect -f`'s first context: Docker runs the template on its Go
/// struct (swarm.Secret, swarm.Config), which prints differently from its
/// JSON where JSON cannot say a Go value: `Version` prints its index (its
/// `String()`), `Spec.Data` is a []byte (a secret's is nil, `[]`),
/// `Driver` and `Templating` are nil pointers or `{Name Options}`.
fn object_typed(kind: Kind, o: &Object) -> Value {
    use secretd_client::template::{go_bytes, go_nil, go_stringer, go_struct};
    let spec = o.spec.clone().unwrap_or_default();
    let mut v = object_json(kind, o);
    let index = o.version_index;
    v["Version"] = go_stringer(&index.to_string(), vec![("Index", json!(index))]);
    let data = match kind {
        Kind::Secret => go_bytes(&[]),
        Kind::Config => go_bytes(&spec.data),
    };
    let templating = match spec.templating.as_str() {
        "" => go_nil(),
        name => go_struct(vec![("Name", json!(name)), ("Options", json!({}))]),
    };
    if let Some(s) = v.get_mut("Spec").and_then(Value::as_object_mut) {
        s.insert("Data".into(), data);
        if kind == Kind::Secret {
            s.insert("Driver".into(), go_nil());
        }
        s.insert("Templating".into(), templating);
    }
    v
}

/// `secret versions`' JSON: the current version and every version kept.
fn versions_json(o: &Object) -> Value {
    let versions: Vec<Value> = o
        .versions
        .iter()
        .map(|v| json!({ "Version": v.version, "CreatedAt": rfc3339_nano(v.created_at_ns) }))
        .collect();
    json!({
        "ID": o.id,
        "Name": o.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        "CurrentVersion": o.current_version,
        "Versions": versions,
    })
}

/// `inspect --pretty`, laid out as docker/cli's templates: secrets end
/// with their "Updated at" line, configs with their data and a blank line.
fn pretty(kind: Kind, o: &Object) -> String {
    let spec = o.spec.clone().unwrap_or_default();
    let mut out = String::new();
    let (id_pad, name_pad) = match kind {
        Kind::Secret => ("              ", "              "),
        Kind::Config => ("\t\t\t", "\t\t\t"),
    };
    out.push_str(&format!("ID:{id_pad}{}\n", o.id));
    out.push_str(&format!("Name:{name_pad}{}\n", spec.name));
    if !spec.labels.is_empty() {
        out.push_str("Labels:\n");
        let sorted: BTreeMap<_, _> = spec.labels.iter().collect();
        for (k, v) in sorted {
            if v.is_empty() {
                out.push_str(&format!(" - {k}\n"));
            } else {
                out.push_str(&format!(" - {k}={v}\n"));
            }
        }
    }
    let (created, updated) = (
        format::pretty_time(o.created_at_ns),
        format::pretty_time(o.updated_at_ns),
    );
    match kind {
        Kind::Secret => {
            out.push_str("Driver:            \n");
            out.push_str(&format!("Created at:        {created}\n"));
            out.push_str(&format!("Updated at:        {updated}\n"));
        }
        Kind::Config => {
            out.push_str(&format!("Created at:            \t{created}\n"));
            out.push_str(&format!("Updated at:            \t{updated}\n"));
            if !spec.data.is_empty() {
                out.push_str(&format!("Data:\n{}\n", String::from_utf8_lossy(&spec.data)));
            }
        }
    }
    out
}

/// One row of `ls` as Docker's listing context: times relative, labels
/// joined. `LabelMap` backs `{{.Label "k"}}` and is not printed by json.
fn list_row(kind: Kind, o: &Object) -> Value {
    let spec = o.spec.clone().unwrap_or_default();
    let sorted: BTreeMap<_, _> = spec.labels.iter().collect();
    let joined: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut m = Map::new();
    m.insert("CreatedAt".into(), json!(ago(o.created_at_ns)));
    if kind == Kind::Secret {
        m.insert("Driver".into(), json!(""));
    }
    m.insert("ID".into(), json!(o.id));
    m.insert("Labels".into(), json!(joined.join(",")));
    m.insert("Name".into(), json!(spec.name));
    m.insert("UpdatedAt".into(), json!(ago(o.updated_at_ns)));
    Value::Object(m)
}

/// Prints rows for `ls`: `-q`, the default table, `json`, or a template.
pub(crate) fn print_rows(
    quiet: bool,
    format: Option<&str>,
    default_table: &str,
    rows: &[Value],
    ids: &[String],
    label_maps: &[Value],
    (fields, go_type): (&[&str], &str),
) -> Result<()> {
    let format = match format {
        // As docker/cli's formatter: -q replaces the table, not a format
        // the user wrote.
        None | Some("") | Some("table") if quiet => {
            for id in ids {
                println!("{id}");
            }
            return Ok(());
        }
        None | Some("") | Some("table") => default_table,
        Some(f) => f,
    };
    if format == "json" {
        for r in rows {
            println!("{r}");
        }
        return Ok(());
    }
    let t = Template::parse(format).map_err(template_error)?;
    t.check_fields(fields, go_type).map_err(template_error)?;
    let mut lines: Vec<String> = Vec::new();
    if t.table {
        lines.push(t.header());
    }
    for (r, labels) in rows.iter().zip(label_maps) {
        lines.push(t.render_with(r, Some(labels)));
    }
    if t.table {
        let cells: Vec<Vec<String>> = lines
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        print!("{}", format::table(&cells));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

/// A template that does not parse or run, in Docker's words.
fn template_error(e: String) -> anyhow::Error {
    anyhow!("template parsing error: {e}")
}

/// Prints inspect results (JSON array or a template per object), then the
/// errors; fails if any lookup failed, as `docker inspect` does. A
/// template runs on each object's Go view in `typed` first, if given
/// (`object_typed`), as Docker's runs on its struct.
pub(crate) fn print_inspect(
    format: Option<&str>,
    found: Vec<Value>,
    typed: Vec<Value>,
    errors: Vec<String>,
) -> Result<()> {
    match format {
        None | Some("") | Some("json") => {
            println!("{}", indented_json(&Value::Array(found)));
        }
        Some(f) => {
            let t = Template::parse(f).map_err(template_error)?;
            for (i, v) in found.iter().enumerate() {
                let line = match typed.get(i) {
                    Some(go) => t.render_inspect_typed(go, v),
                    None => t.render_inspect(v),
                };
                match line {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        // Docker has already started the line.
                        println!();
                        return Err(template_error(e));
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", errors.join("\n")))
    }
}

macro_rules! object_call {
    ($cli:expr, $kind:expr, $arg:expr, |$c:ident, $a:ident| $body:expr) => {
        call($cli, |ch: Channel| {
            let $a = $arg.clone();
            async move {
                match $kind {
                    Kind::Secret => {
                        let mut $c = ObjClient::Secret(SecretsClient::new(ch));
                        $body.await
                    }
                    Kind::Config => {
                        let mut $c = ObjClient::Config(ConfigsClient::new(ch));
                        $body.await
                    }
                }
            }
        })
    };
}

/// Secrets and configs answer the same calls; one client type for both.
enum ObjClient {
    Secret(SecretsClient<Channel>),
    Config(ConfigsClient<Channel>),
}

impl ObjClient {
    async fn create(&mut self, r: CreateRequest) -> Result<String, tonic::Status> {
        Ok(match self {
            ObjClient::Secret(c) => c.create(r).await?.into_inner().id,
            ObjClient::Config(c) => c.create(r).await?.into_inner().id,
        })
    }
    async fn inspect(&mut self, name_or_id: String) -> Result<Object, tonic::Status> {
        let r = InspectRequest { name_or_id };
        Ok(match self {
            ObjClient::Secret(c) => c.inspect(r).await?.into_inner(),
            ObjClient::Config(c) => c.inspect(r).await?.into_inner(),
        })
    }
    async fn list(&mut self, r: ListRequest) -> Result<ListResponse, tonic::Status> {
        Ok(match self {
            ObjClient::Secret(c) => c.list(r).await?.into_inner(),
            ObjClient::Config(c) => c.list(r).await?.into_inner(),
        })
    }
    async fn remove(&mut self, name_or_id: String) -> Result<String, tonic::Status> {
        let r = RemoveRequest { name_or_id };
        Ok(match self {
            ObjClient::Secret(c) => c.remove(r).await?.into_inner().id,
            ObjClient::Config(c) => c.remove(r).await?.into_inner().id,
        })
    }
}

pub async fn create(cli: &Cli, kind: Kind, a: &CreateArgs, driver: Option<&str>) -> Result<()> {
    let limit = match kind {
        Kind::Secret => SECRET_DATA_BYTES_LIMIT,
        Kind::Config => CONFIG_DATA_BYTES_LIMIT,
    };
    let data = read_content(kind, a.file.as_deref(), driver, limit)?;
    let labels = parse_labels(&a.labels).into_iter().collect();
    let mut req = CreateRequest {
        name: a.name.clone(),
        labels,
        data: data.to_vec(),
        templating: a.template_driver.clone().unwrap_or_default(),
    };
    let id = object_call!(cli, kind, req, |c, r| c.create(r))
        .await
        .map_err(|e| daemon(kind.word(), &a.name, e))?;
    zeroize::Zeroize::zeroize(&mut req.data);
    println!("{id}");
    Ok(())
}

pub async fn inspect(cli: &Cli, kind: Kind, a: &InspectArgs) -> Result<()> {
    // With --pretty, Docker ignores --format.
    let mut found = Vec::new();
    let mut pretty_out = Vec::new();
    let mut typed = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        match object_call!(cli, kind, name, |c, n| c.inspect(n)).await {
            Ok(o) => {
                if a.pretty {
                    pretty_out.push(pretty(kind, &o));
                }
                found.push(object_json(kind, &o));
                typed.push(object_typed(kind, &o));
            }
            Err(e) => errors.push(daemon(kind.word(), name, e).to_string()),
        }
    }
    if a.pretty {
        // Blocks follow each other directly; a config's ends with a blank
        // line after its data (`pretty`).
        for block in &pretty_out {
            print!("{block}");
        }
        if errors.is_empty() {
            return Ok(());
        }
        return Err(anyhow!("{}", errors.join("\n")));
    }
    print_inspect(a.format.as_deref(), found, typed, errors)
}

/// Records per List page secretctl asks for (the member caps a page at
/// 10,000 records and 3 MiB), and the most pages one `ls` reads (objects'
/// and tasks').
pub(crate) const LS_PAGE_SIZE: u32 = 10_000;
pub(crate) const LS_PAGES_MAX: usize = 10_000;

pub async fn ls(cli: &Cli, kind: Kind, a: &LsArgs) -> Result<()> {
    let mut req = parse_filters(&a.filters)?;
    req.page_size = LS_PAGE_SIZE;
    let mut objects = Vec::new();
    for page in 0.. {
        if page == LS_PAGES_MAX {
            bail!("the member's list went on past {LS_PAGES_MAX} pages; stopped");
        }
        let r = object_call!(cli, kind, req, |c, r| c.list(r))
            .await
            .map_err(|e| daemon(kind.word(), "", e))?;
        objects.extend(r.objects);
        if r.next_page_token.is_empty() {
            break;
        }
        req.page_token = r.next_page_token;
    }
    objects.sort_by(|x, y| {
        let n = |o: &Object| o.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        natural_cmp(&n(x), &n(y))
    });
    let rows: Vec<Value> = objects.iter().map(|o| list_row(kind, o)).collect();
    let ids: Vec<String> = objects.iter().map(|o| o.id.clone()).collect();
    let labels: Vec<Value> = objects
        .iter()
        .map(|o| labels_json(&o.spec.clone().unwrap_or_default().labels))
        .collect();
    let table = match kind {
        Kind::Secret => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
        Kind::Config => "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
    };
    let context: (&[&str], &str) = match kind {
        Kind::Secret => (
            &["ID", "Name", "Driver", "CreatedAt", "UpdatedAt", "Labels"],
            "*secret.secretContext",
        ),
        Kind::Config => (
            &["ID", "Name", "CreatedAt", "UpdatedAt", "Labels"],
            "*config.configContext",
        ),
    };
    print_rows(
        a.quiet > 0,
        a.format.as_deref(),
        table,
        &rows,
        &ids,
        &labels,
        context,
    )
}

pub async fn rm(cli: &Cli, kind: Kind, a: &RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &a.names {
        match object_call!(cli, kind, name, |c, n| c.remove(n)).await {
            Ok(_) => println!("{name}"),
            Err(e) => errors.push(daemon(kind.word(), name, e).to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", errors.join("\n")))
    }
}

/// `secret versions`: the version history `inspect` leaves out (Docker's
/// shape has none).
pub async fn versions(cli: &Cli, names: &[String]) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match object_call!(cli, Kind::Secret, name, |c, n| c.inspect(n)).await {
            Ok(o) => found.push(versions_json(&o)),
            Err(e) => errors.push(daemon("secret", name, e).to_string()),
        }
    }
    print_inspect(None, found, Vec::new(), errors)
}

pub async fn rotate(cli: &Cli, name: &str, file: &str) -> Result<()> {
    let data = read_data(file, SECRET_DATA_BYTES_LIMIT)?;
    let mut req = RotateRequest {
        name_or_id: name.to_string(),
        data: data.to_vec(),
    };
    let resp = call(cli, |ch| {
        let req = req.clone();
        async move { SecretsClient::new(ch).rotate(req).await }
    })
    .await
    .map_err(|e| daemon("secret", name, e))?
    .into_inner();
    zeroize::Zeroize::zeroize(&mut req.data);
    println!("{}", resp.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let f =
            parse_filters(&["name=db".into(), "label=env=prod".into(), "id=ab".into()]).unwrap();
        assert_eq!(f.name_prefixes, ["db"]);
        assert_eq!(f.labels, ["env=prod"]);
        assert_eq!(f.id_prefixes, ["ab"]);
        assert!(parse_filters(&["colour=red".into()]).is_err());
        assert!(parse_filters(&["name".into()]).is_err());
    }

    /// Docker 28.2.2's answers against a swarm-mode dockerd: the template
    /// sees the struct first, the JSON map when the struct lacks a field.
    #[test]
    fn inspect_templates_see_dockers_struct_first() {
        let o = |data: &[u8], templating: &str| Object {
            id: "abc".into(),
            version_index: 13,
            spec: Some(crate::pb::secretstore::Spec {
                name: "lab".into(),
                labels: [("k".to_string(), "v".to_string()), ("a".into(), "b".into())]
                    .into_iter()
                    .collect(),
                data: data.to_vec(),
                templating: templating.into(),
            }),
            ..Default::default()
        };
        let run = |kind, o: &Object, f: &str| {
            Template::parse(f)
                .unwrap()
                .render_inspect_typed(&object_typed(kind, o), &object_json(kind, o))
        };
        let secret = o(b"", "");
        assert_eq!(
            run(
                Kind::Secret,
                &secret,
                r#"{{.Spec.Data}}|{{printf "%s" .Spec.Labels}}|{{.Spec.Labels}}|{{.Spec.Templating}}|{{.Version}}"#
            )
            .unwrap(),
            "[]|map[a:b k:v]|map[a:b k:v]|<nil>|13"
        );
        // Fields the struct lacks as such: the JSON map answers.
        assert_eq!(
            run(
                Kind::Secret,
                &secret,
                "{{.Version.Index}} {{json .Spec.Data}}"
            )
            .unwrap(),
            "13 null"
        );
        assert_eq!(
            run(Kind::Secret, &secret, "{{.Spec.Bogus}}").unwrap_err(),
            "template: :1:7: executing \"\" at <.Spec.Bogus>: map has no entry for key \"Bogus\""
        );
        let config = o(b"x\n", "golang");
        assert_eq!(
            run(
                Kind::Config,
                &config,
                r#"{{.Spec.Data}}|{{printf "%s" .Spec.Data}}|{{.Spec.Templating}}|{{json .Spec.Data}}|{{.Spec.Templating.Name}}"#
            )
            .unwrap(),
            "[120 10]|x\n|{golang map[]}|\"eAo=\"|golang"
        );
    }

    /// Docker 28.2.2's `secret create` and `config create` read errors
    /// (docker/cli `readSecretData`, `readConfigData`, `RunConfigCreate`).
    #[test]
    fn content_errors_are_dockers() {
        let err = |kind, file: Option<&str>, driver| {
            read_content(kind, file, driver, 16)
                .unwrap_err()
                .to_string()
        };
        let dir = std::env::temp_dir().join(format!("secretctl-content-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let empty = empty.to_str().unwrap();
        assert_eq!(
            err(Kind::Config, Some(empty), None),
            format!(
                "Error reading content from \"{empty}\": error reading from {empty}: data is empty"
            )
        );
        assert_eq!(
            err(Kind::Secret, Some(empty), None),
            format!("error reading from {empty}: data is empty")
        );
        assert_eq!(
            err(Kind::Config, Some("/nonexistent/file"), None),
            "Error reading content from \"/nonexistent/file\": error reading from /nonexistent/file: \
             open /nonexistent/file: no such file or directory"
        );
        assert_eq!(
            err(Kind::Secret, Some("-"), Some("vault")),
            "When using secret driver secret data must be empty"
        );
        assert_eq!(
            err(Kind::Secret, None, Some("vault")),
            "Error response from daemon: rpc error: code = Unknown desc = plugin \"vault\" not found"
        );
        assert_eq!(err(Kind::Secret, None, Some("")), "secret file is required");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

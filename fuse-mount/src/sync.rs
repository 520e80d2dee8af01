//! Keeping the mount in step with the cluster: one `Agent.Watch` stream at
//! a time, plaintext fetched only for files whose (object, version) is new,
//! then the whole image handed to the backend. When the cluster is
//! unreachable the mount keeps what it has and the agent reconnects with
//! exponential backoff, trying each endpoint in turn; the first state after
//! a reconnect is complete, so nothing missed during the gap stays missed.
//! Failures are per task: a task whose files cannot be fetched, rendered
//! (templated configs and secrets, `render`) or written keeps what it
//! showed, is reported (`health`), and is retried every `TASK_RETRY_MS`;
//! the node's other tasks, additions and removals apply.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use secretd_crypto::SecretBytes;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::health::Health;
use crate::image::{Backend, FileEntry, Image};
use crate::pb::{agent_client::AgentClient, AgentState, AgentWatchRequest, FetchRequest};
use crate::render;

const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5_000;
const FETCH_TIMEOUT_MS: u64 = 10_000;
/// Largest message the agent accepts (a config is under 1000 KiB; a
/// state's part under 1 MiB).
const MESSAGE_BYTES_MAX: usize = 4 << 20;
/// A node's whole state, put together from its parts, at most.
const STATE_BYTES_MAX: usize = 256 << 20;

type Key = crate::image::Source;

/// A task that failed is tried again this often, with the last state.
const TASK_RETRY_MS: u64 = 5_000;

pub struct Sync {
    pub endpoints: Vec<String>,
    pub node: String,
    pub backend: Arc<dyn Backend>,
    tls: Option<secretd_client::ClientTls>,
    /// Plaintext by (secret?, object, version); entries no file uses are
    /// dropped (and zeroized) after each update.
    cache: HashMap<Key, Arc<SecretBytes>>,
    /// What was last handed to the backend, per task: a task whose files
    /// cannot be fetched keeps these.
    last: Image,
    health: Health,
    /// This machine's name, for templates' `.Node.Hostname`.
    hostname: String,
}

/// Whether a plaintext endpoint is a member that serves only TLS
/// (`secretd_client::speaks_tls`, which secretctl asks too).
async fn serves_tls(endpoint: &str) -> bool {
    if endpoint.starts_with("https://") {
        return false;
    }
    let ep = endpoint.to_string();
    tokio::task::spawn_blocking(move || secretd_client::speaks_tls(&ep))
        .await
        .unwrap_or(false)
}

impl Sync {
    pub fn new(
        endpoints: Vec<String>,
        tls: Option<secretd_client::ClientTls>,
        node: String,
        backend: Arc<dyn Backend>,
        health: Health,
    ) -> Sync {
        Sync {
            endpoints,
            tls,
            node,
            backend,
            cache: HashMap::new(),
            last: Image::default(),
            health,
            hostname: render::hostname(),
        }
    }

    /// Runs until the process is told to stop.
    pub async fn run(mut self) {
        let mut backoff_ms = BACKOFF_MIN_MS;
        let mut i = 0usize;
        loop {
            let ep = self.endpoints[i % self.endpoints.len()].clone();
            i += 1;
            let followed = self.follow(&ep, &mut backoff_ms).await;
            let tls_only = followed.is_err() && self.tls.is_none() && serves_tls(&ep).await;
            match followed {
                Ok(()) => {
                    tracing::warn!(endpoint = %ep, "the cluster closed the agent stream; reconnecting")
                }
                Err(e) if tls_only => {
                    // Otherwise an endless "h2 protocol error": name it.
                    tracing::error!(endpoint = %ep, error = %e, backoff_ms, "cannot talk to secretd at {ep}: it serves TLS; give the agent --cacert, and the node's certificate with --cert and --key");
                }
                Err(e) => {
                    tracing::warn!(endpoint = %ep, error = %e, backoff_ms, "agent stream failed; keeping the current files and reconnecting")
                }
            }
            self.health.connected(false);
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }

    async fn follow(&mut self, endpoint: &str, backoff_ms: &mut u64) -> anyhow::Result<()> {
        let mut client =
            AgentClient::new(secretd_client::channel(endpoint, self.tls.as_ref(), None)?)
                .max_decoding_message_size(MESSAGE_BYTES_MAX);
        let mut stream = client
            .watch(AgentWatchRequest {
                node: self.node.clone(),
                parts: true,
            })
            .await?
            .into_inner();
        self.health.connected(true);
        let mut state: Option<AgentState> = None;
        // A state comes whole or in parts; only a whole one is applied.
        let mut parts = crate::state::Assembler::default();
        loop {
            let failing = self.health.failing();
            tokio::select! {
                next = stream.next() => {
                    let Some(next) = next else { return Ok(()) };
                    let Some(next) = parts.add(next?, STATE_BYTES_MAX)? else { continue };
                    tracing::debug!(revision = next.revision, "state received");
                    self.apply(&mut client, &next).await?;
                    state = Some(next);
                    *backoff_ms = BACKOFF_MIN_MS;
                }
                _ = tokio::time::sleep(Duration::from_millis(TASK_RETRY_MS)), if failing => {
                    if let Some(s) = &state {
                        tracing::info!("retrying the tasks that failed");
                        self.apply(&mut client, s).await?;
                    }
                }
            }
        }
    }

    /// Makes the mount show `state`, task by task: a task whose files
    /// cannot be fetched or written keeps what it showed and is reported;
    /// the others apply. Fails (to reconnect) only when the connection
    /// itself broke, after applying what it could.
    async fn apply(
        &mut self,
        client: &mut AgentClient<Channel>,
        state: &AgentState,
    ) -> anyhow::Result<()> {
        let mut image = Image::default();
        for t in &state.tasks {
            image.tasks.entry(t.clone()).or_default();
        }
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut broken: Option<tonic::Status> = None;
        for f in &state.files {
            if failed.contains_key(&f.task) {
                continue;
            }
            let key: Key = (f.secret, f.object_id.clone(), f.version);
            let data = match self.data_for(client, f, &key, &mut broken).await {
                Ok(d) => d,
                Err(why) => {
                    failed.insert(f.task.clone(), why);
                    continue;
                }
            };
            image.tasks.entry(f.task.clone()).or_default().insert(
                f.path.clone(),
                FileEntry {
                    uid: f.uid,
                    gid: f.gid,
                    mode: f.mode,
                    data,
                    source: key,
                },
            );
        }
        // The raw bytes of templated files stay cached under their own
        // source; the image shows the rendered bytes.
        let mut used: std::collections::HashSet<Key> = state
            .files
            .iter()
            .map(|f| (f.secret, f.object_id.clone(), f.version))
            .collect();
        self.render_templates(state, &mut image, &mut failed);
        self.keep_failed(&mut image, &failed);
        let written = self.backend.apply(&image);
        failed.extend(written);
        used.extend(
            image
                .tasks
                .values()
                .flat_map(|files| files.values().map(|f| f.source.clone())),
        );
        self.cache.retain(|k, _| used.contains(k));
        self.last = image;
        tracing::info!(
            revision = state.revision,
            tasks = state.tasks.len(),
            files = state.files.len(),
            failed = failed.len(),
            "mount updated"
        );
        self.health.updated(state.tasks.len(), failed);
        match broken {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// A file's data: from the cache, or fetched (and cached). Once the
    /// connection broke (`broken`), nothing more is fetched; the error is
    /// the reason the file's task fails this round.
    async fn data_for(
        &mut self,
        client: &mut AgentClient<Channel>,
        f: &crate::pb::AgentFile,
        key: &Key,
        broken: &mut Option<tonic::Status>,
    ) -> Result<Arc<SecretBytes>, String> {
        if let Some(d) = self.cache.get(key) {
            return Ok(d.clone());
        }
        if broken.is_some() {
            return Err("the connection to the cluster broke".into());
        }
        match self.fetch(client, f).await {
            Ok(d) => {
                self.cache.insert(key.clone(), d.clone());
                Ok(d)
            }
            Err(e) => {
                let why = format!(
                    "cannot fetch {} {}: {}",
                    if f.secret { "secret" } else { "config" },
                    f.object_id,
                    e.message()
                );
                if matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                ) {
                    *broken = Some(e);
                }
                Err(why)
            }
        }
    }

    /// Replaces each templated file's raw bytes with its rendering for
    /// its task (`render`); a task whose template fails fails alone.
    fn render_templates(
        &self,
        state: &AgentState,
        image: &mut Image,
        failed: &mut BTreeMap<String, String>,
    ) {
        let envs: HashMap<&str, &HashMap<String, String>> = state
            .envs
            .iter()
            .map(|e| (e.task.as_str(), &e.env))
            .collect();
        let mut rendered: Vec<(String, String, Arc<SecretBytes>, Key)> = Vec::new();
        for f in state.files.iter().filter(|f| !f.template_driver.is_empty()) {
            let Some(files) = image
                .tasks
                .get(&f.task)
                .filter(|_| !failed.contains_key(&f.task))
            else {
                continue;
            };
            let ctx = render::TaskContext {
                task: &f.task,
                node: &self.node,
                hostname: &self.hostname,
                env: envs.get(f.task.as_str()).copied(),
            };
            let source: Key = (f.secret, f.object_id.clone(), f.version);
            let t = render::Templated {
                path: &f.path,
                secret: f.secret,
                source: &source,
            };
            match render::render(&ctx, files, &t) {
                Ok((data, key)) => rendered.push((f.task.clone(), f.path.clone(), data, key)),
                Err(why) => {
                    let kind = if f.secret { "secret" } else { "config" };
                    failed.insert(
                        f.task.clone(),
                        format!("cannot render {kind} {} ({}): {why}", f.object_id, f.path),
                    );
                }
            }
        }
        for (task, path, data, key) in rendered {
            if failed.contains_key(&task) {
                continue;
            }
            if let Some(entry) = image.tasks.get_mut(&task).and_then(|t| t.get_mut(&path)) {
                entry.data = data;
                entry.source = key;
            }
        }
    }

    /// A task that could not be fetched keeps what it showed before; a new
    /// one waits.
    fn keep_failed(&self, image: &mut Image, failed: &BTreeMap<String, String>) {
        for t in failed.keys() {
            match self.last.tasks.get(t) {
                Some(old) => {
                    image.tasks.insert(t.clone(), old.clone());
                }
                None => {
                    image.tasks.remove(t);
                }
            }
        }
    }

    async fn fetch(
        &self,
        client: &mut AgentClient<Channel>,
        f: &crate::pb::AgentFile,
    ) -> Result<Arc<SecretBytes>, tonic::Status> {
        let mut req = tonic::Request::new(FetchRequest {
            node: self.node.clone(),
            task: f.task.clone(),
            secret: f.secret,
            object_id: f.object_id.clone(),
            version: f.version,
        });
        req.set_timeout(Duration::from_millis(FETCH_TIMEOUT_MS));
        tracing::debug!(object = %f.object_id, version = f.version, "fetching");
        let mut resp = client.fetch(req).await?.into_inner();
        Ok(Arc::new(SecretBytes::new(std::mem::take(&mut resp.data))))
    }
}

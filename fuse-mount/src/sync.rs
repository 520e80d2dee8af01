//! Keeping the mount in step with the cluster: one `Agent.Watch` stream at
//! a time, plaintext fetched only for files whose (object, version) is new,
//! then the whole image handed to the backend. When the cluster is
//! unreachable the mount keeps what it has and the agent reconnects with
//! exponential backoff, trying each endpoint in turn; the first state after
//! a reconnect is complete, so nothing missed during the gap stays missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secretd_crypto::SecretBytes;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::image::{Backend, FileEntry, Image};
use crate::pb::{agent_client::AgentClient, AgentState, AgentWatchRequest, FetchRequest};

const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5_000;
const FETCH_TIMEOUT_MS: u64 = 10_000;
/// Largest message the agent accepts (a config is under 1000 KiB).
const MESSAGE_BYTES_MAX: usize = 4 << 20;

type Key = crate::image::Source;

pub struct Sync {
    pub endpoints: Vec<String>,
    pub node: String,
    pub backend: Arc<dyn Backend>,
    tls: Option<crate::connect::ClientTls>,
    /// Plaintext by (secret?, object, version); entries no file uses are
    /// dropped (and zeroized) after each update.
    cache: HashMap<Key, Arc<SecretBytes>>,
}

impl Sync {
    pub fn new(
        endpoints: Vec<String>,
        tls: Option<crate::connect::ClientTls>,
        node: String,
        backend: Arc<dyn Backend>,
    ) -> Sync {
        Sync {
            endpoints,
            tls,
            node,
            backend,
            cache: HashMap::new(),
        }
    }

    /// Runs until the process is told to stop.
    pub async fn run(mut self) {
        let mut backoff_ms = BACKOFF_MIN_MS;
        let mut i = 0usize;
        loop {
            let ep = self.endpoints[i % self.endpoints.len()].clone();
            i += 1;
            match self.follow(&ep, &mut backoff_ms).await {
                Ok(()) => {
                    tracing::warn!(endpoint = %ep, "the cluster closed the agent stream; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(endpoint = %ep, error = %e, backoff_ms, "agent stream failed; keeping the current files and reconnecting")
                }
            }
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }

    async fn follow(&mut self, endpoint: &str, backoff_ms: &mut u64) -> anyhow::Result<()> {
        let mut client =
            AgentClient::new(crate::connect::channel(endpoint, self.tls.as_ref(), None)?)
                .max_decoding_message_size(MESSAGE_BYTES_MAX);
        let mut stream = client
            .watch(AgentWatchRequest {
                node: self.node.clone(),
            })
            .await?
            .into_inner();
        while let Some(state) = stream.next().await {
            let state = state?;
            tracing::debug!(revision = state.revision, "state received");
            self.apply(&mut client, state).await?;
            *backoff_ms = BACKOFF_MIN_MS;
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        client: &mut AgentClient<Channel>,
        state: AgentState,
    ) -> anyhow::Result<()> {
        let mut image = Image::default();
        for t in &state.tasks {
            image.tasks.entry(t.clone()).or_default();
        }
        for f in &state.files {
            let key: Key = (f.secret, f.object_id.clone(), f.version);
            let data = match self.cache.get(&key) {
                Some(d) => d.clone(),
                None => {
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
                    tracing::debug!(object = %f.object_id, version = f.version, "fetched");
                    let d = Arc::new(SecretBytes::new(std::mem::take(&mut resp.data)));
                    self.cache.insert(key.clone(), d.clone());
                    d
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
        self.backend.apply(&image)?;
        let used: std::collections::HashSet<Key> = state
            .files
            .iter()
            .map(|f| (f.secret, f.object_id.clone(), f.version))
            .collect();
        self.cache.retain(|k, _| used.contains(k));
        tracing::info!(
            revision = state.revision,
            tasks = state.tasks.len(),
            files = state.files.len(),
            "mount updated"
        );
        Ok(())
    }
}

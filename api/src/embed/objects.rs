//! The in-process client's secretstore.v1 calls: secrets (create, inspect,
//! list, remove, rotate), configs (create, inspect, list, remove) and
//! tasks (create, inspect, list, remove), each through the role matrix to
//! the service the member registers. These are admin calls: a `Node`
//! identity is refused them, as over the network. No answer carries a
//! secret's data.

use std::collections::HashMap;

use super::client::Client;
use super::error::EmbedError;
use crate::pb::secretstore::{
    configs_server::Configs, secrets_server::Secrets, tasks_server::Tasks, CreateRequest,
    InspectRequest, ListRequest, ListTasksRequest, Mount, Object, RemoveRequest, RotateRequest,
    Task, TaskRef,
};

/// A secret or a config mounted by a task: `source` (a name or an ID) at
/// `target` (a secret's file name; a config's path), mode 0444 for root
/// unless changed.
pub fn mount(source: &str, target: &str) -> Mount {
    Mount {
        source: source.to_string(),
        target: target.to_string(),
        mode: 0o444,
        ..Default::default()
    }
}

fn create_request(name: &str, data: Vec<u8>, labels: HashMap<String, String>) -> CreateRequest {
    CreateRequest {
        name: name.to_string(),
        labels,
        data,
        templating: String::new(),
    }
}

/// Secrets and configs answer the same four calls; which service a call
/// goes to (and which gRPC path the gate checks).
#[derive(Clone, Copy)]
enum Objects {
    Secrets,
    Configs,
}

impl Objects {
    fn path(self, call: &str) -> String {
        let service = match self {
            Objects::Secrets => "Secrets",
            Objects::Configs => "Configs",
        };
        format!("/secretstore.v1.{service}/{call}")
    }
}

impl Client {
    /// Creates a secret; its ID. The data is sealed before it is stored.
    pub async fn secret_create(
        &self,
        name: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<String, EmbedError> {
        self.object_create(Objects::Secrets, name, data, labels)
            .await
    }

    /// A secret's metadata and versions (never its data), by name or ID.
    pub async fn secret_inspect(&self, name_or_id: &str) -> Result<Object, EmbedError> {
        self.object_inspect(Objects::Secrets, name_or_id).await
    }

    /// Secrets whose name starts with `name_prefix` ("": all).
    pub async fn secret_list(&self, name_prefix: &str) -> Result<Vec<Object>, EmbedError> {
        self.object_list(Objects::Secrets, name_prefix).await
    }

    /// Removes a secret no task uses; its ID.
    pub async fn secret_remove(&self, name_or_id: &str) -> Result<String, EmbedError> {
        self.object_remove(Objects::Secrets, name_or_id).await
    }

    /// A new version of a secret, delivered to the tasks that follow its
    /// current version; the version's number.
    pub async fn secret_rotate(&self, name_or_id: &str, data: Vec<u8>) -> Result<u64, EmbedError> {
        let msg = RotateRequest {
            name_or_id: name_or_id.to_string(),
            data,
        };
        let (s, req) = self.request("/secretstore.v1.Secrets/Rotate", msg)?;
        Ok(Secrets::rotate(&s.objects, req).await?.into_inner().version)
    }

    /// Creates a config; its ID.
    pub async fn config_create(
        &self,
        name: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<String, EmbedError> {
        self.object_create(Objects::Configs, name, data, labels)
            .await
    }

    /// A config, by name or ID.
    pub async fn config_inspect(&self, name_or_id: &str) -> Result<Object, EmbedError> {
        self.object_inspect(Objects::Configs, name_or_id).await
    }

    /// Configs whose name starts with `name_prefix` ("": all).
    pub async fn config_list(&self, name_prefix: &str) -> Result<Vec<Object>, EmbedError> {
        self.object_list(Objects::Configs, name_prefix).await
    }

    /// Removes a config no task uses; its ID.
    pub async fn config_remove(&self, name_or_id: &str) -> Result<String, EmbedError> {
        self.object_remove(Objects::Configs, name_or_id).await
    }

    async fn object_create(
        &self,
        kind: Objects,
        name: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<String, EmbedError> {
        let msg = create_request(name, data, labels);
        let (s, req) = self.request(&kind.path("Create"), msg)?;
        let r = match kind {
            Objects::Secrets => Secrets::create(&s.objects, req).await?,
            Objects::Configs => Configs::create(&s.objects, req).await?,
        };
        Ok(r.into_inner().id)
    }

    async fn object_inspect(&self, kind: Objects, name_or_id: &str) -> Result<Object, EmbedError> {
        let msg = InspectRequest {
            name_or_id: name_or_id.to_string(),
        };
        let (s, req) = self.request(&kind.path("Inspect"), msg)?;
        let r = match kind {
            Objects::Secrets => Secrets::inspect(&s.objects, req).await?,
            Objects::Configs => Configs::inspect(&s.objects, req).await?,
        };
        Ok(r.into_inner())
    }

    /// Every object whose name starts with `name_prefix`, one page (each a
    /// call through the gate) after another.
    async fn object_list(
        &self,
        kind: Objects,
        name_prefix: &str,
    ) -> Result<Vec<Object>, EmbedError> {
        let mut msg = ListRequest {
            name_prefixes: match name_prefix {
                "" => Vec::new(),
                p => vec![p.to_string()],
            },
            page_size: secretd_secrets::store::LIST_PAGE_OBJECTS_MAX as u32,
            ..Default::default()
        };
        let mut all = Vec::new();
        loop {
            let (s, req) = self.request(&kind.path("List"), msg.clone())?;
            let page = match kind {
                Objects::Secrets => Secrets::list(&s.objects, req).await?,
                Objects::Configs => Configs::list(&s.objects, req).await?,
            }
            .into_inner();
            all.extend(page.objects);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            msg.page_token = page.next_page_token;
        }
    }

    async fn object_remove(&self, kind: Objects, name_or_id: &str) -> Result<String, EmbedError> {
        let msg = RemoveRequest {
            name_or_id: name_or_id.to_string(),
        };
        let (s, req) = self.request(&kind.path("Remove"), msg)?;
        let r = match kind {
            Objects::Secrets => Secrets::remove(&s.objects, req).await?,
            Objects::Configs => Configs::remove(&s.objects, req).await?,
        };
        Ok(r.into_inner().id)
    }

    /// Creates a task: `id`, the `node` whose agent serves it, and its
    /// mounts (see [`mount`]). The stored task, sources resolved.
    pub async fn task_create(
        &self,
        id: &str,
        node: &str,
        secrets: Vec<Mount>,
        configs: Vec<Mount>,
    ) -> Result<Task, EmbedError> {
        let msg = Task {
            id: id.to_string(),
            node: node.to_string(),
            secrets,
            configs,
            ..Default::default()
        };
        let (s, req) = self.request("/secretstore.v1.Tasks/Create", msg)?;
        Ok(Tasks::create(&s.objects, req).await?.into_inner())
    }

    /// A task, by ID.
    pub async fn task_inspect(&self, id: &str) -> Result<Task, EmbedError> {
        let msg = TaskRef { id: id.to_string() };
        let (s, req) = self.request("/secretstore.v1.Tasks/Inspect", msg)?;
        Ok(Tasks::inspect(&s.objects, req).await?.into_inner())
    }

    /// The tasks of `node` ("": every node).
    pub async fn task_list(&self, node: &str) -> Result<Vec<Task>, EmbedError> {
        let mut msg = ListTasksRequest {
            node: node.to_string(),
            page_size: secretd_secrets::store::LIST_PAGE_OBJECTS_MAX as u32,
            page_token: String::new(),
        };
        let mut all = Vec::new();
        loop {
            let (s, req) = self.request("/secretstore.v1.Tasks/List", msg.clone())?;
            let page = Tasks::list(&s.objects, req).await?.into_inner();
            all.extend(page.tasks);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            msg.page_token = page.next_page_token;
        }
    }

    /// Removes a task: its node's agent stops serving its files.
    pub async fn task_remove(&self, id: &str) -> Result<(), EmbedError> {
        let msg = TaskRef { id: id.to_string() };
        let (s, req) = self.request("/secretstore.v1.Tasks/Remove", msg)?;
        Tasks::remove(&s.objects, req).await?;
        Ok(())
    }
}

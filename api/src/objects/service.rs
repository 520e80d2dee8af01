//! `secretstore.v1` over gRPC: Secrets, Configs, Tasks and Admin, thin
//! shells over [`ObjectStore`]. A secret's data arrives in a request and is
//! moved at once into a zeroizing buffer; no response ever carries it.

use std::sync::Arc;

use secretd_crypto::SecretBytes;
use secretd_secrets::layout::Kind;
use secretd_secrets::store::ObjectStore;
use tonic::{Request, Response, Status};

use crate::audit;
use crate::errors::secrets_status as status;
use crate::pb::secretstore::{
    admin_server::Admin, configs_server::Configs, secrets_server::Secrets, tasks_server::Tasks,
    ClusterSettings, CreateRequest, CreateResponse, GetSettingsRequest, InspectRequest, KeyStatus,
    ListRequest, ListResponse, ListTasksRequest, ListTasksResponse, Object, RemoveRequest,
    RemoveResponse, RotateKeyRequest, RotateKeyResponse, RotateRequest, RotateResponse,
    SetAutolockRequest, Settings, Task, TaskRef, UnlockKeyRequest, UnlockKeyResponse,
    UnlockRequest, UnlockResponse,
};

#[derive(Clone)]
pub struct ObjectService {
    pub store: Arc<ObjectStore>,
}

impl ObjectService {
    /// A locked member refuses every secret and config call, as a locked
    /// Docker manager does ("Swarm is encrypted and needs to be unlocked
    /// before it can be used"), listings included: it cannot open what it
    /// would list. Tasks, agents and the keyspace go on.
    fn unlocked(&self) -> Result<(), Status> {
        if self.store.keys().is_locked() {
            return Err(status(secretd_secrets::Error::Locked));
        }
        Ok(())
    }

    /// A List page, charged to the member's answer budget and held like
    /// an etcd read's answer until it is sent, or given up if its client
    /// stops taking it (`gate`).
    fn held<T: prost::Message>(&self, page: T) -> Result<Response<T>, Status> {
        let charge = self
            .store
            .answer_charge(page.encoded_len())
            .map_err(status)?;
        Ok(crate::gate::held_until_sent(page, charge))
    }

    async fn create(
        &self,
        kind: Kind,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let who = audit::who(&req);
        let req = req.into_inner();
        let name = req.name.clone();
        let r = match self.unlocked() {
            Ok(()) => self.store.create(kind, req).await.map_err(status),
            Err(e) => Err(e),
        };
        let v = (kind == Kind::Secret).then_some(1);
        audit::record(&who, &format!("{}.create", kind.word()), &name, v, &r);
        Ok(Response::new(CreateResponse { id: r? }))
    }

    async fn list(&self, kind: Kind, req: ListRequest) -> Result<Response<ListResponse>, Status> {
        self.unlocked()?;
        let page = self.store.list(kind, &req).await.map_err(status)?;
        self.held(page)
    }

    async fn remove(
        &self,
        kind: Kind,
        req: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let who = audit::who(&req);
        let target = req.into_inner().name_or_id;
        let r = match self.unlocked() {
            Ok(()) => self.store.remove(kind, &target).await.map_err(status),
            Err(e) => Err(e),
        };
        audit::record(&who, &format!("{}.remove", kind.word()), &target, None, &r);
        Ok(Response::new(RemoveResponse { id: r? }))
    }
}

#[tonic::async_trait]
impl Secrets for ObjectService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        ObjectService::create(self, Kind::Secret, req).await
    }

    async fn inspect(&self, req: Request<InspectRequest>) -> Result<Response<Object>, Status> {
        self.unlocked()?;
        let o = self
            .store
            .inspect(Kind::Secret, &req.into_inner().name_or_id)
            .await
            .map_err(status)?;
        Ok(Response::new(o))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        ObjectService::list(self, Kind::Secret, req.into_inner()).await
    }

    async fn remove(
        &self,
        req: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        ObjectService::remove(self, Kind::Secret, req).await
    }

    async fn rotate(
        &self,
        req: Request<RotateRequest>,
    ) -> Result<Response<RotateResponse>, Status> {
        let who = audit::who(&req);
        let mut req = req.into_inner();
        let data = SecretBytes::new(std::mem::take(&mut req.data));
        let r = self
            .store
            .rotate(&req.name_or_id, data)
            .await
            .map_err(status);
        let v = r.as_ref().ok().map(|(_, v)| *v);
        audit::record(&who, "secret.rotate", &req.name_or_id, v, &r);
        let (id, version) = r?;
        Ok(Response::new(RotateResponse { id, version }))
    }
}

#[tonic::async_trait]
impl Configs for ObjectService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        ObjectService::create(self, Kind::Config, req).await
    }

    async fn inspect(&self, req: Request<InspectRequest>) -> Result<Response<Object>, Status> {
        self.unlocked()?;
        let o = self
            .store
            .inspect(Kind::Config, &req.into_inner().name_or_id)
            .await
            .map_err(status)?;
        Ok(Response::new(o))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        ObjectService::list(self, Kind::Config, req.into_inner()).await
    }

    async fn remove(
        &self,
        req: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        ObjectService::remove(self, Kind::Config, req).await
    }
}

#[tonic::async_trait]
impl Tasks for ObjectService {
    async fn create(&self, req: Request<Task>) -> Result<Response<Task>, Status> {
        let who = audit::who(&req);
        let t = req.into_inner();
        let id = t.id.clone();
        let r = self.store.task_create(t).await.map_err(status);
        audit::record(&who, "task.create", &id, None, &r);
        Ok(Response::new(r?))
    }

    async fn inspect(&self, req: Request<TaskRef>) -> Result<Response<Task>, Status> {
        Ok(Response::new(
            self.store
                .task_get(&req.into_inner().id, false)
                .await
                .map_err(status)?,
        ))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let page = self
            .store
            .task_page(&req.into_inner())
            .await
            .map_err(status)?;
        self.held(page)
    }

    async fn remove(&self, req: Request<TaskRef>) -> Result<Response<TaskRef>, Status> {
        let who = audit::who(&req);
        let id = req.into_inner().id;
        let r = self.store.task_remove(&id).await.map_err(status);
        audit::record(&who, "task.remove", &id, None, &r);
        Ok(Response::new(TaskRef { id: r? }))
    }
}

impl ObjectService {
    async fn cluster_settings(
        &self,
        settings: Settings,
    ) -> Result<Response<ClusterSettings>, Status> {
        let (registered, held) = self.store.keys().status().await.map_err(status)?;
        let autolock = self.store.keys().autolock().await.map_err(status)?;
        Ok(Response::new(ClusterSettings {
            settings: Some(settings),
            keys: Some(KeyStatus { registered, held }),
            autolock,
            locked: self.store.keys().needs_unlock_key(autolock),
        }))
    }
}

#[tonic::async_trait]
impl Admin for ObjectService {
    async fn get_settings(
        &self,
        _: Request<GetSettingsRequest>,
    ) -> Result<Response<ClusterSettings>, Status> {
        let s = self.store.settings().await.map_err(status)?;
        self.cluster_settings(s).await
    }

    async fn update_settings(
        &self,
        req: Request<Settings>,
    ) -> Result<Response<ClusterSettings>, Status> {
        let who = audit::who(&req);
        let r = self
            .store
            .update_settings(req.into_inner())
            .await
            .map_err(status);
        audit::record(&who, "settings.update", "cluster", None, &r);
        self.cluster_settings(r?).await
    }

    async fn set_autolock(
        &self,
        req: Request<SetAutolockRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        let who = audit::who(&req);
        let enabled = req.into_inner().enabled;
        let r = self
            .store
            .keys()
            .set_autolock(enabled)
            .await
            .map_err(status);
        let what = if enabled {
            "autolock.on"
        } else {
            "autolock.off"
        };
        audit::record(&who, what, "cluster", None, &r);
        Ok(Response::new(UnlockKeyResponse {
            unlock_key: r?.unwrap_or_default(),
        }))
    }

    async fn unlock_key(
        &self,
        req: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        let who = audit::who(&req);
        let rotate = req.into_inner().rotate;
        let r = self.store.keys().unlock_key(rotate).await.map_err(status);
        let what = if rotate {
            "unlock_key.rotate"
        } else {
            "unlock_key.show"
        };
        audit::record(&who, what, "cluster", None, &r);
        Ok(Response::new(UnlockKeyResponse { unlock_key: r? }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let who = audit::who(&req);
        let r = self
            .store
            .keys()
            .unlock(req.into_inner().unlock_key)
            .await
            .map_err(status);
        audit::record(&who, "member.unlock", "member", None, &r);
        r?;
        Ok(Response::new(UnlockResponse {}))
    }

    async fn rotate_key(
        &self,
        req: Request<RotateKeyRequest>,
    ) -> Result<Response<RotateKeyResponse>, Status> {
        let who = audit::who(&req);
        let r = self.store.keys().rotate().await.map_err(status);
        let version = r.as_ref().ok().map(|x| u64::from(x.generation));
        audit::record(&who, "kek.rotate", "cluster", version, &r);
        let r = r?;
        Ok(Response::new(RotateKeyResponse {
            generation: r.generation,
            retired: r.retired,
            rewrapped: r.rewrapped,
        }))
    }
}

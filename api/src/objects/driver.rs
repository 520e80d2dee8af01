//! `secretstore.v1.Driver`: one secret's plaintext for one task of an
//! orchestrator that keeps its own tasks, Docker Swarm's through `secretd
//! docker-plugin` (the `secretd-swarm` crate).
//!
//! Swarm's tasks are not secretd's tasks, so the node agent's rule (a
//! value only for a task assigned to the asking node) cannot apply here.
//! What stands in for it:
//! - only a driver's certificate (`spiffe://secretd/driver/NAME`) reaches
//!   this service (`authz`); the admin is refused, as for the agent's API;
//! - which Swarm service may receive which secret is the driver's policy,
//!   decided before it asks;
//! - every delivery, and every refusal, is audited here with the driver's
//!   name and the orchestrator's service, task and node, so a leak can be
//!   traced to the task it was handed to.
//!
//! The reads are linearizable: a rotation acknowledged before the
//! orchestrator asks is what its next task gets.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use secretd_secrets::layout::Kind;
use secretd_secrets::store::ObjectStore;
use secretd_secrets::validate;

use crate::errors::secrets_status as status;
use crate::pb::secretstore::{driver_server::Driver, DriverFetchRequest, DriverFetchResponse};

/// Longest orchestrator-supplied field (a name or an ID): they are
/// recorded in the audit log, so they are bounded before anything else.
pub const DRIVER_FIELD_BYTES_MAX: usize = 1024;

pub struct DriverService {
    pub store: Arc<ObjectStore>,
}

#[tonic::async_trait]
impl Driver for DriverService {
    async fn fetch(
        &self,
        req: Request<DriverFetchRequest>,
    ) -> Result<Response<DriverFetchResponse>, Status> {
        let who = crate::audit::who(&req);
        let r = req.into_inner();
        let checked = check_fields(&r);
        let what = match &checked {
            Ok(()) => describe(&r),
            Err(_) => format!("secret {}", validate::echo(&r.secret)),
        };
        let pinned = (r.version != 0).then_some(r.version);
        let out = match checked {
            Ok(()) => self.deliver(&r).await,
            Err(e) => Err(e),
        };
        let version = out.as_ref().ok().map(|o| o.version).or(pinned);
        crate::audit::record(&who, "secret.deliver", &what, version, &out);
        match &out {
            Ok(o) => tracing::info!(
                secret = %o.secret_id, version = o.version, service = %r.service_name,
                task = %r.task_name, "delivered to a secret driver"
            ),
            Err(e) => tracing::warn!(
                secret = %validate::echo(&r.secret), service = %validate::echo(&r.service_name),
                error = %e.message(), "refused a secret driver's fetch"
            ),
        }
        out.map(Response::new)
    }
}

impl DriverService {
    async fn deliver(&self, r: &DriverFetchRequest) -> Result<DriverFetchResponse, Status> {
        let object = self
            .store
            .resolve(Kind::Secret, &r.secret)
            .await
            .map_err(status)?;
        let version = if r.version == 0 {
            object.current_version
        } else {
            r.version
        };
        let data = self
            .store
            .open_secret(&object.id, version, false)
            .await
            .map_err(status)?;
        Ok(DriverFetchResponse {
            data: data.expose().to_vec(),
            secret_id: object.id,
            version,
        })
    }
}

/// Every field is bounded, and the secret named.
fn check_fields(r: &DriverFetchRequest) -> Result<(), Status> {
    if r.secret.is_empty() {
        return Err(Status::invalid_argument("a driver fetch names no secret"));
    }
    let fields = [
        ("secret", &r.secret),
        ("service_name", &r.service_name),
        ("service_id", &r.service_id),
        ("task_name", &r.task_name),
        ("task_id", &r.task_id),
        ("node_id", &r.node_id),
        ("image", &r.image),
    ];
    match fields
        .iter()
        .find(|(_, v)| v.len() > DRIVER_FIELD_BYTES_MAX)
    {
        Some((name, v)) => Err(Status::invalid_argument(format!(
            "{name} is {} bytes, more than the {DRIVER_FIELD_BYTES_MAX} a driver fetch allows",
            v.len()
        ))),
        None => Ok(()),
    }
}

/// The audit log's object: the secret, and the orchestrator's task it went
/// to.
fn describe(r: &DriverFetchRequest) -> String {
    format!(
        "{} for service {} ({}) task {} ({}) on node {} image {}",
        validate::echo(&r.secret),
        validate::echo(&r.service_name),
        validate::echo(&r.service_id),
        validate::echo(&r.task_name),
        validate::echo(&r.task_id),
        validate::echo(&r.node_id),
        validate::echo(&r.image),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_bounded_and_the_secret_named() {
        let mut r = DriverFetchRequest {
            secret: "db_pw".into(),
            service_name: "web".into(),
            ..Default::default()
        };
        assert!(check_fields(&r).is_ok());
        r.task_name = "t".repeat(DRIVER_FIELD_BYTES_MAX + 1);
        let e = check_fields(&r).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("task_name is 1025 bytes"), "{e}");
        r.task_name.clear();
        r.secret.clear();
        assert!(check_fields(&r)
            .unwrap_err()
            .message()
            .contains("no secret"));
    }

    #[test]
    fn the_audit_names_the_task_and_escapes_what_it_was_told() {
        let r = DriverFetchRequest {
            secret: "db_pw".into(),
            service_name: "web\n{\"forged\":1}".into(),
            task_name: "web.1.abc".into(),
            ..Default::default()
        };
        let d = describe(&r);
        assert!(d.starts_with("db_pw for service web\\n"), "{d}");
        assert!(d.contains("task web.1.abc"), "{d}");
        assert!(!d.contains('\n'));
    }
}

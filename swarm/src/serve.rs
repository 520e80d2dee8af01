//! The plugin's socket and its two routes.
//!
//! The socket is where dockerd looks for a plugin that is not managed
//! (`/run/docker/plugins/NAME.sock`). Whoever can connect to it can ask for
//! any secret the policy allows, so it is made mode 0600 (dockerd runs as
//! root) before the first request is served. A socket left by a plugin
//! that died is replaced; one that still answers is refused, as is any
//! other file at that path.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::policy::Policy;
use crate::protocol::{self, GetSecretRequest, GetSecretResponse, Source};

/// Largest request body: Docker's requests are a few hundred bytes.
pub const REQUEST_BYTES_MAX: usize = 64 << 10;
/// Requests served at once; more wait for a turn, up to `QUEUE_WAIT`.
pub const IN_FLIGHT_MAX: usize = 64;
/// How long a request waits for a turn before it is refused.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

pub struct Plugin<S> {
    pub policy: RwLock<Arc<Policy>>,
    pub source: S,
    turns: Semaphore,
}

impl<S: Source + 'static> Plugin<S> {
    pub fn new(policy: Policy, source: S) -> Arc<Plugin<S>> {
        Arc::new(Plugin {
            policy: RwLock::new(Arc::new(policy)),
            source,
            turns: Semaphore::new(IN_FLIGHT_MAX),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/Plugin.Activate", post(activate))
            .route("/SecretProvider.GetSecret", post(get_secret::<S>))
            .fallback(unknown)
            .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX))
            .with_state(self.clone())
    }
}

fn docker_json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, protocol::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

fn refusal(status: StatusCode, err: String) -> Response {
    let body = serde_json::to_string(&GetSecretResponse::refused(err)).unwrap_or_default();
    docker_json(status, body)
}

async fn activate() -> Response {
    docker_json(StatusCode::OK, protocol::ACTIVATE_BODY.to_string())
}

async fn unknown(uri: axum::http::Uri) -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        format!(
            "secretd: {} is not an endpoint of a secret provider",
            uri.path()
        ),
    )
}

async fn get_secret<S: Source + 'static>(
    State(plugin): State<Arc<Plugin<S>>>,
    body: Bytes,
) -> Response {
    let req: GetSecretRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "a GetSecret request that is not Docker's");
            return refusal(
                StatusCode::BAD_REQUEST,
                format!("secretd: not a SecretProvider.GetSecret request: {e}"),
            );
        }
    };
    let Ok(Ok(_turn)) = tokio::time::timeout(QUEUE_WAIT, plugin.turns.acquire()).await else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("secretd: more than {IN_FLIGHT_MAX} requests at once; try again"),
        );
    };
    let policy = plugin.policy.read().clone();
    let answer = protocol::get_secret(&req, &policy, &plugin.source).await;
    docker_json(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    )
}

/// Binds `path` (mode 0600), replacing a dead plugin's socket.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot check {}: {e}", path.display()),
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket: not replacing it",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is served by another process (another plugin of that name?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
    }
    // Created 0600 from the start: no window in which another user could
    // connect.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretd_client::pb::secretstore::{DriverFetchRequest, DriverFetchResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Echo;

    impl Source for Echo {
        async fn fetch(
            &self,
            req: DriverFetchRequest,
        ) -> Result<DriverFetchResponse, tonic::Status> {
            Ok(DriverFetchResponse {
                data: req.secret.into_bytes(),
                secret_id: "id".into(),
                version: 1,
            })
        }
    }

    /// One HTTP/1.1 request over the socket; the status line and body.
    async fn call(path: &Path, route: &str, body: &[u8]) -> (String, String) {
        let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
        let head = format!(
            "POST {route} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let _ = s.write_all(body).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out).to_string();
        let status = out.lines().next().unwrap_or_default().to_string();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (status, body)
    }

    async fn serving(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("plugins/secretd-test.sock");
        let listener = bind(&path).unwrap();
        let policy = Policy::parse(r#"{"rules":[{"services":["web"],"secrets":["*"]}]}"#).unwrap();
        let router = Plugin::new(policy, Echo).router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        path
    }

    #[tokio::test]
    async fn docker_is_answered_in_its_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = serving(dir.path()).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only root may ask the plugin");

        let (status, body) = call(&path, "/Plugin.Activate", b"").await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, r#"{"Implements":["secretprovider"]}"#);

        let req = br#"{"SecretName":"db_pw","ServiceName":"web","TaskName":"web.1.x"}"#;
        let (status, body) = call(&path, "/SecretProvider.GetSecret", req).await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, r#"{"Value":"ZGJfcHc=","DoNotReuse":true}"#);

        let req = br#"{"SecretName":"db_pw","ServiceName":"other"}"#;
        let (_, body) = call(&path, "/SecretProvider.GetSecret", req).await;
        assert!(
            body.contains(r#""Err":"secretd: service \"other\" may not receive"#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn garbage_is_refused_in_docker_s_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = serving(dir.path()).await;
        let (status, body) = call(&path, "/SecretProvider.GetSecret", b"{not json").await;
        assert!(status.contains("400"), "{status}");
        assert!(
            body.starts_with(r#"{"Err":"secretd: not a SecretProvider.GetSecret request"#),
            "{body}"
        );

        let (status, body) = call(&path, "/VolumeDriver.Create", b"{}").await;
        assert!(status.contains("404"), "{status}");
        assert!(
            body.contains("is not an endpoint of a secret provider"),
            "{body}"
        );

        let big = vec![b' '; REQUEST_BYTES_MAX + 1];
        let (status, _) = call(&path, "/SecretProvider.GetSecret", &big).await;
        assert!(status.contains("413"), "{status}");
    }

    #[tokio::test]
    async fn a_socket_is_replaced_only_when_dead() {
        let dir = tempfile::tempdir().unwrap();
        let path = serving(dir.path()).await;
        let e = format!("{:#}", bind(&path).unwrap_err());
        assert!(e.contains("is served by another process"), "{e}");

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let _l = bind(&stale).unwrap();

        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"x").unwrap();
        let e = format!("{:#}", bind(&file).unwrap_err());
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}

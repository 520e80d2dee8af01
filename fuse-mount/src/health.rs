//! The agent's own health: whether it follows the cluster, and which tasks
//! it could not serve and why. Served as `/health` (JSON; 503 while a task
//! fails or the cluster was never reached) and `/metrics` (Prometheus
//! text) on `--listen-metrics-urls`, and logged on every change. Anyone
//! who reaches the port may connect, so the listeners hold at most
//! `HEALTH_CONNECTIONS_MAX` connections and close idle ones
//! (`serve_http1`, which a member's metrics listener uses too).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

/// Connections the agent's health listeners hold at once, all together:
/// a prober or two per node need a few.
pub const HEALTH_CONNECTIONS_MAX: usize = 16;
/// A health connection without a request for this long is closed.
pub const HEALTH_IDLE_MS: u64 = 10_000;
/// The longest any plain HTTP connection of `serve_http1` lives, busy or
/// not (a client that never reads its response would hold it otherwise).
const CONNECTION_LIFETIME_MS: u64 = 60_000;
/// A refused connection or failed accept is logged at most this often.
const REFUSAL_LOG_INTERVAL_MS: u64 = 60_000;

/// Serves `app` over HTTP/1.1 on one connection. The head of each request
/// must arrive within `idle_ms` of the connection opening or of the last
/// response (hyper's header timeout, which also closes a silent or idle
/// keep-alive connection); the connection ends after
/// `CONNECTION_LIFETIME_MS` whatever it does.
pub async fn serve_http1(tcp: TcpStream, app: axum::Router, idle_ms: u64) {
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(idle_ms))
        .serve_connection(
            hyper_util::rt::TokioIo::new(tcp),
            hyper_util::service::TowerToHyperService::new(app),
        );
    let _ = tokio::time::timeout(Duration::from_millis(CONNECTION_LIFETIME_MS), conn).await;
}

/// Whether a line about refusals may be logged now: at most one per
/// `REFUSAL_LOG_INTERVAL_MS` (a flood must not fill the disk).
fn may_log(last_ms: &AtomicU64) -> bool {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + REFUSAL_LOG_INTERVAL_MS;
    let last = last_ms.load(Ordering::Relaxed);
    now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_MS
        && last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[derive(Default)]
struct State {
    connected: bool,
    tasks: usize,
    failed: BTreeMap<String, String>,
    updates: u64,
    failures_total: u64,
}

/// Shared between the sync loop and the HTTP listeners.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    pub fn connected(&self, yes: bool) {
        self.0.lock().connected = yes;
    }

    /// Records one update of the mount: how many tasks it holds and which
    /// failed. Logs tasks that start or stop failing.
    pub fn updated(&self, tasks: usize, failed: BTreeMap<String, String>) {
        let mut s = self.0.lock();
        for (t, why) in &failed {
            if s.failed.get(t) != Some(why) {
                tracing::error!(task = %t, reason = %why, "cannot serve this task; the node's other tasks are served, and it is retried");
            }
        }
        for t in s.failed.keys() {
            if !failed.contains_key(t) {
                tracing::info!(task = %t, "task served again");
            }
        }
        s.updates += 1;
        s.failures_total += failed.len() as u64;
        s.tasks = tasks;
        s.failed = failed;
    }

    pub fn failing(&self) -> bool {
        !self.0.lock().failed.is_empty()
    }

    fn report(&self) -> (StatusCode, String) {
        let s = self.0.lock();
        let reason = if !s.connected && s.updates == 0 {
            "the cluster was never reached".to_string()
        } else if !s.failed.is_empty() {
            format!("{} task(s) cannot be served", s.failed.len())
        } else {
            String::new()
        };
        let ok = reason.is_empty();
        let body = serde_json::json!({
            "health": if ok { "true" } else { "false" },
            "reason": reason,
            "connected": s.connected,
            "tasks": s.tasks,
            "failed_tasks": s.failed,
        });
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body.to_string())
    }

    fn metrics(&self) -> String {
        let s = self.0.lock();
        format!(
            "# HELP secretd_agent_connected 1 while the agent follows the cluster.\n\
             # TYPE secretd_agent_connected gauge\nsecretd_agent_connected {}\n\
             # HELP secretd_agent_tasks Tasks assigned to this node.\n\
             # TYPE secretd_agent_tasks gauge\nsecretd_agent_tasks {}\n\
             # HELP secretd_agent_tasks_failed Tasks the agent cannot serve now.\n\
             # TYPE secretd_agent_tasks_failed gauge\nsecretd_agent_tasks_failed {}\n\
             # HELP secretd_agent_updates_total Updates of the mount.\n\
             # TYPE secretd_agent_updates_total counter\nsecretd_agent_updates_total {}\n\
             # HELP secretd_agent_task_failures_total Failed task writes, counted per update.\n\
             # TYPE secretd_agent_task_failures_total counter\nsecretd_agent_task_failures_total {}\n",
            u8::from(s.connected),
            s.tasks,
            s.failed.len(),
            s.updates,
            s.failures_total
        )
    }

    /// Serves `/health` and `/metrics` on each listener, at most
    /// `HEALTH_CONNECTIONS_MAX` connections in all.
    pub fn spawn(&self, listeners: Vec<TcpListener>) {
        self.serve(listeners, HEALTH_IDLE_MS);
    }

    fn serve(&self, listeners: Vec<TcpListener>, idle_ms: u64) {
        let permits = Arc::new(tokio::sync::Semaphore::new(HEALTH_CONNECTIONS_MAX));
        let last_log_ms = Arc::new(AtomicU64::new(0));
        for l in listeners {
            let (h1, h2) = (self.clone(), self.clone());
            let app = axum::Router::new()
                .route(
                    "/health",
                    get(move || async move {
                        let (code, body) = h1.report();
                        (
                            code,
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }),
                )
                .route(
                    "/metrics",
                    get(move || async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            h2.metrics(),
                        )
                    }),
                );
            let (permits, last_log_ms) = (permits.clone(), last_log_ms.clone());
            tokio::spawn(async move {
                loop {
                    let tcp = match l.accept().await {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            if may_log(&last_log_ms) {
                                tracing::warn!(error = %e, "the health listener cannot accept (logged once a minute)");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        if may_log(&last_log_ms) {
                            tracing::warn!(
                                connections_max = HEALTH_CONNECTIONS_MAX,
                                "the health listeners are at their cap: refusing connections (logged once a minute)"
                            );
                        }
                        continue;
                    };
                    let app = app.clone();
                    tokio::spawn(async move {
                        serve_http1(tcp, app, idle_ms).await;
                        drop(permit);
                    });
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads `s` until the other side closes it; false if it is still open
    /// after `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// D19: the agent's health listener holds at most
    /// `HEALTH_CONNECTIONS_MAX` connections (the rest are closed at once),
    /// closes idle ones, and serves again once they are gone.
    #[tokio::test]
    async fn the_health_listener_is_capped_and_closes_idle_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        Health::default().serve(vec![l], 8_000);
        let mut held = Vec::new();
        for _ in 0..HEALTH_CONNECTIONS_MAX + 8 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Those past the cap are closed at once (bound: 4 s, half the idle
        // timeout); the others after the idle timeout (8 s; bound: 30 s).
        let mut refused = 0;
        for s in held.iter_mut().skip(HEALTH_CONNECTIONS_MAX) {
            refused += usize::from(closed_within(s, Duration::from_secs(4)).await);
        }
        assert_eq!(refused, 8, "connections past the cap were kept");
        for s in held.iter_mut().take(HEALTH_CONNECTIONS_MAX) {
            assert!(
                closed_within(s, Duration::from_secs(30)).await,
                "an idle connection was kept"
            );
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("the cluster was never reached"), "{text}");
    }
}

//! The agent's own health: whether it follows the cluster, and which tasks
//! it could not serve and why. Served as `/health` (JSON; 503 while a task
//! fails or the cluster was never reached) and `/metrics` (Prometheus
//! text) on `--listen-metrics-urls`, and logged on every change.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use parking_lot::Mutex;
use tokio::net::TcpListener;

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

    /// Serves `/health` and `/metrics` on each listener.
    pub fn spawn(&self, listeners: Vec<TcpListener>) {
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
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(error = %e, "the health listener stopped");
                }
            });
        }
    }
}

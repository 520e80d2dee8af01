//! The cluster side of the plugin: the Driver API on the members in
//! `--endpoints`, asked in turn. A member that cannot be reached is
//! skipped for the next; any answer (a value, or a refusal such as "not
//! found" or "locked") is final, since another member would say the same.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use tonic::transport::Channel;

use secretd_client::pb::secretstore::{
    driver_client::DriverClient, DriverFetchRequest, DriverFetchResponse,
};
use secretd_client::ClientTls;

use crate::protocol::Source;

/// How long one member may take to answer. Swarm waits for the plugin
/// while it dispatches the task, so a stuck member must not hold it long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest value accepted from a member: above secretd's 500 KiB secret
/// limit, with room for the message around it.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

pub struct Cluster {
    members: Vec<(String, Channel)>,
    /// The member that answered last: asked first next time.
    preferred: AtomicUsize,
}

impl Cluster {
    pub fn new(endpoints: &[String], tls: Option<&ClientTls>) -> Result<Cluster> {
        let members = endpoints
            .iter()
            .map(|ep| {
                Ok((
                    ep.clone(),
                    secretd_client::channel(ep, tls, Some(FETCH_TIMEOUT))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cluster {
            members,
            preferred: AtomicUsize::new(0),
        })
    }
}

/// Worth asking another member: this one did not answer.
fn unreachable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

impl Source for Cluster {
    async fn fetch(&self, req: DriverFetchRequest) -> Result<DriverFetchResponse, tonic::Status> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.members.len() {
            let at = (first + i) % self.members.len();
            let (ep, channel) = &self.members[at];
            let mut client =
                DriverClient::new(channel.clone()).max_decoding_message_size(RESPONSE_BYTES_MAX);
            match client.fetch(req.clone()).await {
                Err(s) if unreachable(&s) => {
                    tracing::warn!(endpoint = %ep, error = %s.message(), "member unreachable; trying the next");
                    last = Some(tonic::Status::unavailable(format!("{ep}: {}", s.message())));
                }
                other => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return other.map(tonic::Response::into_inner);
                }
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no endpoints")))
    }
}

//! How a client of secretd connects: the endpoint list, and TLS with the
//! client's own certificate (an admin's for `secretctl`, a node's for the
//! agent, a member's between members). Shared by every client in the
//! workspace, so they all fail the same clear way on a bad file.

pub mod format;
pub mod reason;
pub mod template;

/// etcd's and secretstore.v1's client stubs, generated from `proto/`: no
/// server types, so no client links the server.
pub mod pb {
    #![allow(clippy::all)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
    pub mod secretstore {
        tonic::include_proto!("secretstore.v1");
    }
}

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A comma-separated endpoint list (`--endpoints`), never empty.
pub fn endpoints(list: &str) -> Result<Vec<String>> {
    let eps: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if eps.is_empty() {
        bail!("--endpoints is empty");
    }
    Ok(eps)
}

fn check_pem(path: &Path, what: &str, marker: &str) -> Result<Vec<u8>> {
    let b =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !String::from_utf8_lossy(&b).contains(marker) {
        bail!("{} is not a PEM {what}", path.display());
    }
    Ok(b)
}

/// A CA to trust, and optionally a certificate and key to present.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Option<Identity>,
}

impl ClientTls {
    pub fn load(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<ClientTls> {
        let ca = Certificate::from_pem(check_pem(ca, "CA certificate", "BEGIN CERTIFICATE")?);
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some(Identity::from_pem(
                check_pem(c, "certificate", "BEGIN CERTIFICATE")?,
                check_pem(k, "private key", "PRIVATE KEY")?,
            )),
            (None, None) => None,
            _ => bail!("a client certificate needs both --cert and --key"),
        };
        Ok(ClientTls { ca, identity })
    }

    /// From optional flags: TLS if a CA is given.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<ClientTls>> {
        match ca {
            Some(ca) => Ok(Some(ClientTls::load(ca, cert, key)?)),
            None if cert.is_some() || key.is_some() => {
                bail!("--cert and --key need --cacert (the cluster's CA)")
            }
            None => Ok(None),
        }
    }

    pub fn config(&self) -> ClientTlsConfig {
        let c = ClientTlsConfig::new().ca_certificate(self.ca.clone());
        match &self.identity {
            Some(i) => c.identity(i.clone()),
            None => c,
        }
    }
}

/// An endpoint for `host:port` or a URL: https when TLS is configured.
pub fn endpoint(ep: &str, tls: Option<&ClientTls>) -> Result<Endpoint> {
    let url = match (ep.contains("://"), tls.is_some()) {
        (true, _) => ep.to_string(),
        (false, true) => format!("https://{ep}"),
        (false, false) => format!("http://{ep}"),
    };
    let e = Endpoint::from_shared(url.clone()).map_err(|_| anyhow!("invalid endpoint {ep:?}"))?;
    match (url.starts_with("https://"), tls) {
        (true, Some(t)) => e
            .tls_config(t.config())
            .map_err(|err| anyhow!("{ep}: {err}")),
        (true, None) => bail!("{ep} is https: give the cluster's CA with --cacert"),
        (false, _) => Ok(e),
    }
}

/// A lazily connecting channel with the usual limits.
pub fn channel(ep: &str, tls: Option<&ClientTls>, timeout: Option<Duration>) -> Result<Channel> {
    let mut e = endpoint(ep, tls)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        e = e.timeout(t);
    }
    Ok(e.connect_lazy())
}

/// How long the TLS probe may take, per step (connect, answer).
const TLS_PROBE_TIMEOUT_MS: u64 = 1_000;

/// Whether the member at a plaintext endpoint answers HTTP/2's preface
/// with a TLS record (an alert, 0x15, or a handshake, 0x16): a client
/// without TLS talking to a member that serves only TLS, whose failure
/// otherwise reads as an h2 protocol error (FRAME_SIZE_ERROR). Blocking,
/// at most twice `TLS_PROBE_TIMEOUT_MS`.
pub fn speaks_tls(endpoint: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let host_port = endpoint.trim_start_matches("http://");
    let timeout = Duration::from_millis(TLS_PROBE_TIMEOUT_MS);
    let Some(addr) = host_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let mut first = [0u8; 1];
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").is_ok()
        && conn.read_exact(&mut first).is_ok()
        && matches!(first[0], 0x15 | 0x16)
}

/// etcd's prefix rule, shared with the server (`secretd_vocab`).
pub use secretd_vocab::prefix_end;

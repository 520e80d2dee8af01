//! Connections coming in: accepted against the listener's budget, the
//! TLS handshake bounded in time and count, the client's role read from
//! its certificate, and on the peer port the raft stream told apart from
//! gRPC by its first bytes. What comes out is an admitted `Conn`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::admission::{Admission, Cap, Slot};
use super::{keepalive, Conn};
use crate::identity::Role;
use crate::tls::{common_name, role_of};

/// Time a client has to finish its TLS handshake: a member or client on
/// any working network needs two round trips and a few milliseconds of
/// CPU; a silent connection holds a handshake slot this long.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 3_000;
/// Time a connection on the peer port has, after its handshake, to say
/// which protocol it speaks (the raft stream's magic or HTTP/2's preface).
const FIRST_BYTES_TIMEOUT_MS: u64 = 3_000;
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 128;

/// Splits a peer listener's connections by the protocol they speak: one
/// that opens with `magic` goes to `raw` (the raft stream, `peer::raw`),
/// any other (gRPC's HTTP/2 preface) comes out of the returned stream, its
/// first bytes put back (`Conn::unread`). A connection that sends fewer
/// bytes than the magic within `FIRST_BYTES_TIMEOUT_MS` is closed.
pub fn split_by_magic<S, In, F>(
    incoming: In,
    magic: &'static [u8],
    raw: F,
) -> impl futures::Stream<Item = std::io::Result<Conn<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    In: futures::Stream<Item = std::io::Result<Conn<S>>> + Send + 'static,
    F: Fn(Conn<S>) + Send + Sync + 'static,
{
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;
    let raw = Arc::new(raw);
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(item) = incoming.next().await {
            let Ok(mut conn) = item else { continue };
            let (conn_tx, raw) = (tx.clone(), raw.clone());
            tokio::spawn(async move {
                let mut head = vec![0u8; magic.len()];
                let read = tokio::time::timeout(
                    Duration::from_millis(FIRST_BYTES_TIMEOUT_MS),
                    conn.read_exact(&mut head),
                )
                .await;
                if !matches!(read, Ok(Ok(_))) {
                    return;
                }
                if head == magic {
                    raw(conn);
                } else {
                    let _ = conn_tx.send(Ok(conn.unread(head))).await;
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The next connection the listener's budget admits, with TCP_NODELAY
/// (`serve_with_incoming` ignores the builder's, and with Nagle on a
/// stream's next small message waited 40 ms for a delayed ACK). Accept
/// errors (EMFILE and friends) wait for descriptors to come back, logged
/// once a minute; refused connections are closed at once.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    adm: &Arc<Admission>,
) -> (tokio::net::TcpStream, SocketAddr, Slot) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                adm.refused(Cap::Accept, None, || format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        keepalive(&tcp);
        if let Some(slot) = adm.admit(Some(addr)) {
            return (tcp, addr, slot);
        }
    }
}

/// Accepted plaintext connections, admitted against `adm`.
pub fn plain_incoming(
    listener: tokio::net::TcpListener,
    adm: Arc<Admission>,
) -> impl futures::Stream<Item = std::io::Result<Conn<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let (tcp, addr, slot) = accept(&listener, &adm).await;
            let conn = Conn::new(tcp, Some(addr), Role::Unauthenticated, slot);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What a TLS listener asks of its clients.
#[derive(Clone, Debug)]
pub enum ClientCerts {
    /// A certificate from the listener's CA; its role is the client's.
    Required,
    /// None is asked for: every client gets this role.
    NotAsked(Role),
}

/// The role of the client on a handshaken connection, and its
/// certificate's common name: from its certificate when the listener
/// requires one, else the listener's role for clients without one.
fn connection_role(
    s: &tokio_rustls::server::TlsStream<TcpStream>,
    certs: &ClientCerts,
) -> Result<(Role, Option<String>), String> {
    if let ClientCerts::NotAsked(role) = certs {
        return Ok((role.clone(), None));
    }
    let (_, conn) = s.get_ref();
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Ok((role_of(cert.as_ref())?, common_name(cert.as_ref()))),
        None => Err("a client certificate from the cluster's CA is required".to_string()),
    }
}

/// Accepted TLS connections, admitted against `adm`. Each handshake runs
/// in its own task with a time limit, so a slow or hostile client holds up
/// no one; refusals are logged with the reason (within the listener's log
/// budget). A certificate without a secretd role is refused here, before
/// any request.
pub fn tls_incoming(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    certs: ClientCerts,
    adm: Arc<Admission>,
) -> impl futures::Stream<Item = std::io::Result<Conn<tokio_rustls::server::TlsStream<TcpStream>>>>
{
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(async move {
        loop {
            let (tcp, addr, mut slot) = accept(&listener, &adm).await;
            let Some(hs_slot) = adm.handshake(addr) else {
                continue;
            };
            let (acceptor, conn_tx, adm, certs) =
                (acceptor.clone(), tx.clone(), adm.clone(), certs.clone());
            tokio::spawn(async move {
                let hs = tokio::time::timeout(
                    Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                    acceptor.accept(tcp),
                )
                .await;
                drop(hs_slot);
                let s = match hs {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return adm.handshake_failed(addr, &e),
                    Err(_) => {
                        let why =
                            format!("the handshake did not end within {HANDSHAKE_TIMEOUT_MS} ms");
                        return adm.handshake_failed(addr, &why);
                    }
                };
                let (role, cn) = match connection_role(&s, &certs) {
                    Ok(r) => r,
                    Err(e) => return adm.handshake_failed(addr, &e),
                };
                if !adm.bind(&mut slot, &role, Some(addr)) {
                    return;
                }
                let _ = conn_tx
                    .send(Ok(Conn::new(s, Some(addr), role, slot).with_common_name(cn)))
                    .await;
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

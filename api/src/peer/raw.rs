//! The raft stream between members: raft messages, length-prefixed, over
//! one TCP (or TLS) connection per ordered pair of members, on the peer
//! port. No HTTP/2: no stream bookkeeping, no HPACK, no per-message gRPC
//! frame, one `write` per batch of whatever raft produced meanwhile.
//!
//! The sender opens with `MAGIC` (its first six bytes, `MAGIC_PREFIX`, are
//! what the peer listener uses to tell this stream from gRPC,
//! `conn::split_by_magic`; the last two are the stream's version,
//! `STREAM_VERSION`) and a hello naming itself, the cluster and the
//! receiver; the receiver answers once (`ANSWER_TAG`, then accepting, or
//! refusing with a reason: a stream version it does not speak is refused
//! with both versions named), then only reads. A peer that answers
//! anything else is no raft stream receiver: a release before peer wire 2
//! (d63c56e and earlier), whose HTTP/2 server answers with its own
//! preface or closes. The sender then falls back to gRPC `Raft.Send`
//! (`peer::peer_sender`, in `peer`). After that each
//! frame is `[len u32 LE][eraftpb.Message]`. The receiver holds the stream
//! to the checks the gRPC `Send` applies: the cluster id, the sender's
//! member certificate bound to the member id it claims (at the hello and
//! again every second, as membership changes), and each message from that
//! sender to this member, never a snapshot (those stream over gRPC's
//! `SendSnapshot`). Anything else ends the stream with a log line saying
//! why; the sender reconnects with backoff, and raft retransmits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::identity::Caller;
use crate::peer::service::RaftService;
use crate::peer::PEER_MESSAGE_BYTES_MAX;

/// What a raft stream opens with (gRPC opens with `PRI * HTTP/2.0`):
/// `MAGIC_PREFIX` and `STREAM_VERSION`.
pub const MAGIC: &[u8; 8] = b"SDRAFT01";
/// What the peer listener splits raft streams off by, whatever their version.
pub const MAGIC_PREFIX: &[u8; 6] = b"SDRAFT";
/// The raw stream's own format version (part of peer wire 2).
pub const STREAM_VERSION: &[u8; 2] = b"01";
/// The receiver's answer starts with this, so an HTTP/2 server's preface
/// (an older member) is never taken for an answer.
const ANSWER_TAG: &[u8; 2] = b"SD";
/// from, cluster id, to (u64 LE each).
const HELLO_BYTES: usize = 24;
/// The largest frame either side accepts.
const FRAME_BYTES_MAX: usize = PEER_MESSAGE_BYTES_MAX;
/// Bytes gathered before one write; below it, a write happens as soon as
/// the queue is empty.
const WRITE_BATCH_BYTES_MAX: usize = 1 << 20;
const CONNECT_TIMEOUT_MS: u64 = 1_000;
const HELLO_TIMEOUT_MS: u64 = 5_000;
/// How often a live stream's sender is checked against membership again.
const REBIND_INTERVAL_MS: u64 = 1_000;
const READ_BUFFER_BYTES: usize = 64 << 10;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a connection attempt failed: the peer refused us (a configuration
/// problem worth a warning), or it could not be reached (routine while a
/// member is down).
pub enum ConnectError {
    Refused(String),
    Unreachable(anyhow::Error),
    /// Connected, but the peer answered the hello with something that is
    /// no raft stream answer, or closed: a member before peer wire 2.
    NotRaw(String),
}

/// `host:port` and whether TLS, from a peer URL.
fn target(url: &str) -> Result<(bool, String)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("peer URL {url} is neither http:// nor https://");
    };
    let hostport = rest.split('/').next().unwrap_or_default();
    if hostport.is_empty() {
        bail!("peer URL {url} has no host");
    }
    Ok((https, hostport.to_string()))
}

/// Connects to member `to` at `url` and introduces ourselves.
pub async fn connect(
    url: &str,
    from: u64,
    cluster_id: u64,
    to: u64,
) -> std::result::Result<Box<dyn Io>, ConnectError> {
    let (https, hostport) = target(url).map_err(|e| ConnectError::Refused(e.to_string()))?;
    let mut io = open(https, &hostport)
        .await
        .map_err(ConnectError::Unreachable)?;
    let mut hello = Vec::with_capacity(MAGIC.len() + HELLO_BYTES);
    hello.extend_from_slice(MAGIC);
    for x in [from, cluster_id, to] {
        hello.extend_from_slice(&x.to_le_bytes());
    }
    let answer = async {
        io.write_all(&hello).await?;
        io.flush().await?;
        let mut head = [0u8; 5];
        io.read_exact(&mut head).await?;
        if &head[..2] != ANSWER_TAG {
            return Ok(Err(head));
        }
        let mut why = vec![0u8; u16::from_le_bytes([head[3], head[4]]) as usize];
        io.read_exact(&mut why).await?;
        Ok::<_, std::io::Error>(Ok((head[2], why)))
    };
    match tokio::time::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), answer).await {
        Ok(Ok(Ok((0, _)))) => Ok(io),
        Ok(Ok(Ok((_, why)))) => Err(ConnectError::Refused(
            String::from_utf8_lossy(&why).into_owned(),
        )),
        Ok(Ok(Err(head))) => Err(ConnectError::NotRaw(format!(
            "the peer answered the raft stream's hello with {head:02x?}, not a raft stream answer"
        ))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ConnectError::NotRaw(
            "the peer closed the connection at the raft stream's hello".into(),
        )),
        Ok(Err(e)) => Err(ConnectError::Unreachable(e.into())),
        Err(_) => Err(ConnectError::Unreachable(anyhow!("no answer to the hello"))),
    }
}

async fn open(https: bool, hostport: &str) -> Result<Box<dyn Io>> {
    let tcp = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        tokio::net::TcpStream::connect(hostport),
    )
    .await
    .map_err(|_| anyhow!("connecting to {hostport} timed out"))?
    .with_context(|| format!("cannot connect to {hostport}"))?;
    tcp.set_nodelay(true)?;
    crate::conn::keepalive(&tcp);
    if !https {
        return Ok(Box::new(tcp));
    }
    let peer_ip = tcp.peer_addr().ok().map(|a| a.ip());
    let cfg = crate::tls::peer_client_config().ok_or_else(|| {
        anyhow!("peer {hostport} is https but this member has no --peer-trusted-ca-file")
    })?;
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| anyhow!("peer host {host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {hostport}"))?;
    // A peer we reached is likely to dial us from the same address: its
    // handshakes may use the peer port's reserve (`conn`), which matters
    // most when this member has just restarted into a flood.
    if let Some(ip) = peer_ip {
        crate::conn::member_seen_at(ip);
    }
    Ok(Box::new(tls))
}

/// Appends `m` as a frame.
fn encode(m: &Message, out: &mut Vec<u8>) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    m.write_to_vec(out)?;
    let len = out.len() - at - 4;
    if len > FRAME_BYTES_MAX {
        out.truncate(at);
        bail!("a raft message of {len} bytes is over the {FRAME_BYTES_MAX}-byte limit");
    }
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Sends what arrives on `rx` until the queue closes (`Ok`) or the
/// connection breaks (`Err`). The peer never writes after its answer, so
/// a read that returns means it went away.
pub async fn pump(io: Box<dyn Io>, rx: &mut mpsc::Receiver<Message>) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { return Ok(()) };
                let mut next = Some(m);
                while let Some(m) = next.take() {
                    if let Err(e) = encode(&m, &mut buf) {
                        tracing::error!(error = %e, "cannot encode a raft message; dropped");
                    }
                    if buf.len() >= WRITE_BATCH_BYTES_MAX {
                        break;
                    }
                    next = rx.try_recv().ok();
                }
                wr.write_all(&buf).await?;
                buf.clear();
            }
            _ = rd.read(&mut probe) => bail!("the peer closed the raft stream"),
        }
    }
}

/// The receiving side of one raft stream (after the magic).
pub async fn serve<S: Io + 'static>(mut conn: Conn<S>, svc: Arc<RaftService>) {
    // A raft stream carries no gRPC request, so it counts as one for the
    // idle timer for as long as it is open.
    let _active = conn.info().streams.begin();
    let info = conn.info().clone();
    let caller = Caller {
        role: info.role.clone(),
        remote: info.remote,
        common_name: info.common_name.clone(),
        token: None,
    };
    // The version (the magic's last two bytes; the listener took the
    // prefix), then the hello.
    let mut hello = [0u8; STREAM_VERSION.len() + HELLO_BYTES];
    let read = tokio::time::timeout(
        Duration::from_millis(HELLO_TIMEOUT_MS),
        conn.read_exact(&mut hello),
    )
    .await;
    if !matches!(read, Ok(Ok(_))) {
        tracing::warn!(remote = ?info.remote, "refused a raft stream: no hello");
        return;
    }
    let (version, hello) = hello.split_at(STREAM_VERSION.len());
    let word = |i: usize| u64::from_le_bytes(hello[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (from, cluster_id, to) = (word(0), word(1), word(2));
    let verdict = if version != STREAM_VERSION {
        let why = format!(
            "raft stream version {:?}: this member speaks version {:?} (peer wire {})",
            String::from_utf8_lossy(version),
            String::from_utf8_lossy(STREAM_VERSION),
            crate::peer::PEER_WIRE_VERSION
        );
        tracing::warn!(remote = ?info.remote, reason = %why, "refused a raft stream");
        Err(tonic::Status::failed_precondition(why))
    } else {
        svc.check_hello(&caller, cluster_id, from, to)
    };
    let why = verdict
        .as_ref()
        .err()
        .map(|s| s.message().to_string())
        .unwrap_or_default();
    let mut answer = ANSWER_TAG.to_vec();
    answer.push(u8::from(verdict.is_err()));
    let why = &why.as_bytes()[..why.len().min(u16::MAX as usize)];
    answer.extend_from_slice(&(why.len() as u16).to_le_bytes());
    answer.extend_from_slice(why);
    if conn.write_all(&answer).await.is_err() || conn.flush().await.is_err() || verdict.is_err() {
        return;
    }
    // The peer is up: our own stream to it need not wait out a backoff.
    svc.node.peer_up(from);
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, conn);
    if let Err(e) = receive(&mut rd, &svc, &caller, cluster_id, from).await {
        tracing::warn!(remote = ?info.remote, from = format_args!("{from:x}"), error = %e, "ended a raft stream");
    }
}

/// Steps every message of the stream; `Ok` when the sender closes it.
async fn receive<R: AsyncRead + Unpin>(
    rd: &mut R,
    svc: &RaftService,
    caller: &Caller,
    cluster_id: u64,
    from: u64,
) -> Result<()> {
    let mut bound_at = Instant::now();
    loop {
        let mut len = [0u8; 4];
        match rd.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > FRAME_BYTES_MAX {
            bail!("refused a frame of {len} bytes (limit {FRAME_BYTES_MAX})");
        }
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await?;
        if bound_at.elapsed() >= Duration::from_millis(REBIND_INTERVAL_MS) {
            svc.check_hello(caller, cluster_id, from, svc.node.id())
                .map_err(|s| anyhow!("{}", s.message()))?;
            bound_at = Instant::now();
        }
        let m = svc
            .check(caller.remote, cluster_id, from, &bytes::Bytes::from(body))
            .map_err(|s| anyhow!("{}", s.message()))?;
        if m.get_msg_type() == MessageType::MsgSnapshot {
            bail!("a snapshot on the raft stream (snapshots travel over SendSnapshot)");
        }
        svc.node.step(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_frames() {
        assert_eq!(
            target("http://127.0.0.1:2380").unwrap(),
            (false, "127.0.0.1:2380".into())
        );
        assert_eq!(
            target("https://[::1]:2380/").unwrap(),
            (true, "[::1]:2380".into())
        );
        assert!(target("unix:///x").is_err());
        let m = Message {
            from: 1,
            to: 2,
            term: 3,
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode(&m, &mut buf).unwrap();
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        assert_eq!(Message::parse_from_bytes(&buf[4..]).unwrap(), m);
    }
}

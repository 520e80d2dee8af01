//! The gate: a tower layer over every listener's router. It decides each
//! request with the role matrix (`authz`), audits denials, counts the
//! connection's streams for the idle timer, and leaves a `Caller` in the
//! request for services that bind to the caller's identity.
//!
//! It sits above the connections (`conn`) and below every service it
//! serves: a refusal is answered here, in gRPC's or etcd's gateway shape
//! (`errors`), without reaching a service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use secretd_store::answers::Charge;
use tonic::Status;

use crate::authz::{self, Decision};
use crate::conn::{ConnInfo, StreamGuard};
use crate::identity::Caller;

/// The gate over a listener's router (see the module comment).
#[derive(Clone, Default)]
pub struct GateLayer;

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(info) = req.extensions().get::<ConnInfo>().cloned() else {
            // Every listener builds `Conn`s; a request without one is a
            // wiring mistake, and the safe answer is no.
            tracing::error!(
                path = req.uri().path(),
                "a request arrived without connection info"
            );
            let s = Status::internal("connection without identity");
            return Box::pin(async move { Ok(s.into_http()) });
        };
        let path = req.uri().path().to_string();
        if let Some(resp) = refusal(&info, &path, req.headers()) {
            return Box::pin(refuse(req.into_body(), resp));
        }
        let token = auth_token(req.headers());
        req.extensions_mut().insert(Caller {
            role: info.role.clone(),
            remote: info.remote,
            common_name: info.common_name.clone(),
            token,
        });
        let guard = info.streams.begin();
        // A gRPC call (not a gateway route) is counted as etcd counts it.
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let mut call = is_grpc
            .then(|| crate::metrics::GrpcCall::start(&path))
            .flatten();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            // A trailers-only answer has its status in the headers.
            if let (Some(c), Some(st)) = (call.as_mut(), resp.headers().get("grpc-status")) {
                c.finish(st.as_bytes());
            }
            let mut resp = resp;
            let held = resp.extensions_mut().remove::<HeldUntilSent>();
            Ok(resp.map(|body| {
                tonic::body::Body::new(Guarded {
                    call,
                    unsent: Arc::new(parking_lot::Mutex::new(Unsent {
                        body: Some(body),
                        held,
                        rest: bytes::Bytes::new(),
                        taken_at: std::time::Instant::now(),
                        cut: false,
                    })),
                    watch: None,
                    _guard: guard,
                })
            }))
        })
    }
}

/// The role matrix's answer when it refuses the request: what the caller
/// gets (in gRPC's shape, or for gateway routes and plain HTTP paths in
/// HTTP's), the denial audited. `None` when the request may go on.
fn refusal(
    info: &ConnInfo,
    path: &str,
    headers: &http::HeaderMap,
) -> Option<http::Response<tonic::body::Body>> {
    // A JSON gateway request is decided as the RPC it calls.
    let rpc = authz::gateway_rpc(path).unwrap_or(path);
    let decision = authz::decide(&info.role, rpc);
    if decision == Decision::Unknown && !authz::PUBLIC_PATHS.contains(&path) {
        // Fail closed: nothing the matrix does not name is served.
        return Some(crate::errors::not_found(headers).map(tonic::body::Body::new));
    }
    let Decision::Deny(why) = decision else {
        return None;
    };
    let caller = Caller {
        role: info.role.clone(),
        remote: info.remote,
        common_name: info.common_name.clone(),
        token: None,
    };
    let status = denied(&caller, path, why);
    // Gateway routes and plain HTTP paths get an HTTP refusal.
    let http = rpc != path || authz::HTTP_PATHS.iter().any(|(p, _)| *p == path);
    Some(if http {
        crate::errors::error_response(&status).map(tonic::body::Body::new)
    } else {
        status.into_http()
    })
}

/// A refusal by the role matrix, counted, logged and audited once per
/// window (`refusals`).
fn denied(caller: &Caller, path: &str, why: String) -> Status {
    let status = Status::permission_denied(why);
    crate::refusals::refused(caller, path, &status);
    status
}

/// The gate's decision for a caller that reaches the services without a
/// connection (`embed`'s in-process client): the same role matrix, the
/// same refusal (counted and audited), and a path the matrix does not
/// name is not served. `Ok` when the RPC `path` may go on.
pub fn admit(caller: &Caller, path: &str) -> Result<(), Status> {
    match authz::decide(&caller.role, path) {
        Decision::Allow => Ok(()),
        Decision::Unknown => Err(Status::unimplemented(format!("{path} is not served"))),
        Decision::Deny(why) => Err(denied(caller, path, why)),
    }
}

/// etcd's auth token: gRPC clients send it as `token` metadata, gateway
/// clients as `Authorization` (with or without `Bearer `), as etcd reads
/// them. A value that is not text is no token (and fails as one).
fn auth_token(headers: &http::HeaderMap) -> Option<String> {
    let v = headers
        .get("token")
        .or_else(|| headers.get(http::header::AUTHORIZATION))?;
    let s = String::from_utf8_lossy(v.as_bytes());
    let s = s.strip_prefix("Bearer ").unwrap_or(&s);
    Some(s.to_string())
}

/// Request bytes a refusal reads before it answers.
const REFUSED_BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a refusal waits for them.
const REFUSED_BODY_WAIT_MS: u64 = 1_000;

/// Answers a refused request after reading (and dropping) a bounded part
/// of its body. Answering first makes HTTP/2 reset the stream while the
/// client is still sending, and curl then reports a framing error instead
/// of our 403 or 404. A body larger or slower than the bounds is cut off,
/// so a refusal costs the member little.
async fn refuse<B, E>(
    body: B,
    resp: http::Response<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, E>
where
    B: http_body::Body + Unpin,
{
    use http_body_util::BodyExt;
    let mut body = body;
    let drain = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                read += bytes::Buf::remaining(d);
            }
            if read > REFUSED_BODY_BYTES_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(REFUSED_BODY_WAIT_MS), drain).await;
    Ok(resp)
}

/// A read answer's charge against the member's budget for answers
/// (`secretd_store::answers`), carried in the response's extensions to
/// the gate, which holds it until the answer's last byte has gone to the
/// connection.
#[derive(Clone)]
pub struct HeldUntilSent {
    _charge: Arc<Charge>,
}

impl HeldUntilSent {
    pub fn charge(&self) -> &Charge {
        &self._charge
    }
}

/// `resp`, with `charge` held until it is sent (see `HeldUntilSent`).
pub fn held_until_sent<T>(resp: T, charge: Charge) -> tonic::Response<T> {
    let mut r = tonic::Response::new(resp);
    r.extensions_mut().insert(HeldUntilSent {
        _charge: Arc::new(charge),
    });
    r
}

/// The most a response body hands the connection at once. HTTP/2 takes a
/// body's next piece when the stream has room and keeps whatever does not
/// fit the peer's window: handed a whole 1 GiB answer, it would hold all
/// of it after the body had ended and the charge was given back. In
/// pieces, the charge lasts until the last piece is taken.
pub const SENT_PIECE_BYTES_MAX: usize = 64 * 1024;

/// A response body that keeps its request counted until it ends, and a
/// read answer's charge until its last piece is taken, or until its
/// client has taken none of it for the budget's stall time
/// (`--max-answer-stall`): then a watch gives the answer up, its bytes and
/// charge dropped, and the stream is reset at the next poll.
struct Guarded {
    /// The gRPC call's metrics, finished by the status in its trailers.
    call: Option<crate::metrics::GrpcCall>,
    /// The answer's charge and unsent bytes, shared with its watch.
    unsent: Arc<parking_lot::Mutex<Unsent>>,
    /// Started once an answer is held and longer than one piece.
    watch: Option<tokio::task::AbortHandle>,
    _guard: StreamGuard,
}

/// What an answer still holds until its client takes it.
struct Unsent {
    /// The service's body: dropped when the answer is given up, since its
    /// encoder's buffer shares the answer's allocation.
    body: Option<tonic::body::Body>,
    held: Option<HeldUntilSent>,
    /// What is left of a data frame cut into pieces.
    rest: bytes::Bytes,
    /// When HTTP/2 last took a piece (it asks for the next one only when
    /// the stream has room).
    taken_at: std::time::Instant,
    /// Given up by the watch.
    cut: bool,
}

impl Unsent {
    /// The next piece of `data` (the rest kept for the next poll). A piece
    /// of a longer answer is a copy: a slice would share the answer's
    /// allocation, and HTTP/2 holding one unsent piece would keep all of
    /// it alive after the answer was given up.
    fn piece(&mut self, mut data: bytes::Bytes) -> bytes::Bytes {
        if data.len() <= SENT_PIECE_BYTES_MAX {
            return data;
        }
        self.rest = data.split_off(SENT_PIECE_BYTES_MAX);
        bytes::Bytes::copy_from_slice(&data)
    }

    /// The next piece of the rest: a copy, the last one too (every piece
    /// of the rest shares the answer's allocation).
    fn next_of_rest(&mut self) -> bytes::Bytes {
        let mut rest = std::mem::take(&mut self.rest);
        if rest.len() > SENT_PIECE_BYTES_MAX {
            self.rest = rest.split_off(SENT_PIECE_BYTES_MAX);
        }
        bytes::Bytes::copy_from_slice(&rest)
    }
}

impl Guarded {
    /// Watches a held answer that has more to send than one piece.
    fn watch_if_held(&mut self) {
        if self.watch.is_some() {
            return;
        }
        let stall_ms = {
            let u = self.unsent.lock();
            match &u.held {
                Some(h) if !u.rest.is_empty() => h.charge().budget().stall_ms(),
                _ => return,
            }
        };
        let unsent = Arc::downgrade(&self.unsent);
        let stall = Duration::from_millis(stall_ms);
        self.watch = Some(tokio::spawn(watch_stall(unsent, stall)).abort_handle());
    }

    fn done(&mut self) {
        self.unsent.lock().held = None;
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

/// Gives the answer up once its client has taken none of it for `stall`.
async fn watch_stall(unsent: std::sync::Weak<parking_lot::Mutex<Unsent>>, stall: Duration) {
    loop {
        let due = match unsent.upgrade() {
            Some(u) => u.lock().taken_at + stall,
            None => return,
        };
        tokio::time::sleep_until(due.into()).await;
        let Some(u) = unsent.upgrade() else { return };
        let mut u = u.lock();
        if u.held.is_none() {
            return;
        }
        if u.taken_at + stall <= std::time::Instant::now() {
            let bytes = u.held.as_ref().map_or(0, |h| h.charge().bytes());
            u.held = None;
            u.rest = bytes::Bytes::new();
            u.body = None;
            u.cut = true;
            secretd_store::metrics::ANSWERS_CUT.inc();
            tracing::warn!(
                bytes,
                stall_s = stall.as_secs(),
                "gave up an answer its client took none of (--max-answer-stall)"
            );
            return;
        }
    }
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        {
            let mut u = self.unsent.lock();
            if u.cut {
                return Poll::Ready(Some(Err(Status::resource_exhausted(
                    "the answer was given up: its client took none of it for --max-answer-stall",
                ))));
            }
            // Asked for the next piece: the last one was taken.
            u.taken_at = std::time::Instant::now();
            if !u.rest.is_empty() {
                let piece = u.next_of_rest();
                return Poll::Ready(Some(Ok(http_body::Frame::data(piece))));
            }
        }
        let polled = {
            let mut u = self.unsent.lock();
            match u.body.as_mut() {
                Some(body) => ready!(Pin::new(body).poll_frame(cx)),
                None => None,
            }
        };
        match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let piece = self.unsent.lock().piece(data);
                    self.watch_if_held();
                    Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
                }
                Err(frame) => {
                    if let (Some(st), Some(call)) = (
                        frame.trailers_ref().and_then(|t| t.get("grpc-status")),
                        self.call.as_mut(),
                    ) {
                        call.finish(st.as_bytes());
                    }
                    // Trailers come after every byte of the answer.
                    self.done();
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            other => {
                self.done();
                Poll::Ready(other)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let u = self.unsent.lock();
        u.rest.is_empty() && u.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let u = self.unsent.lock();
        let inner = u
            .body
            .as_ref()
            .map_or_else(http_body::SizeHint::default, |b| b.size_hint());
        let rest = u.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece of an answer longer than one is its own allocation: an
    /// unsent piece HTTP/2 holds must not keep the whole answer alive once
    /// the rest is dropped (given up by the stall watch).
    #[test]
    fn pieces_of_a_long_answer_do_not_share_its_allocation() {
        let answer = bytes::Bytes::from(vec![7u8; 3 * SENT_PIECE_BYTES_MAX + 10]);
        let whole = answer.as_ptr() as usize..answer.as_ptr() as usize + answer.len();
        let mut u = Unsent {
            body: None,
            held: None,
            rest: bytes::Bytes::new(),
            taken_at: std::time::Instant::now(),
            cut: false,
        };
        let mut pieces = vec![u.piece(answer)];
        while !u.rest.is_empty() {
            pieces.push(u.next_of_rest());
        }
        assert_eq!(pieces.len(), 4);
        let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
        assert_eq!(
            sizes,
            [
                SENT_PIECE_BYTES_MAX,
                SENT_PIECE_BYTES_MAX,
                SENT_PIECE_BYTES_MAX,
                10
            ]
        );
        for p in &pieces {
            assert!(
                !whole.contains(&(p.as_ptr() as usize)),
                "a piece shares the answer"
            );
        }
        // A short answer goes as it is.
        let short = bytes::Bytes::from(vec![1u8; 100]);
        let at = short.as_ptr();
        assert_eq!(u.piece(short).as_ptr(), at);
    }
}

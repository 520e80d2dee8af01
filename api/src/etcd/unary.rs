//! etcd's KV service on gRPC, its unary calls served by hand: a request
//! whose body is one plain message is read whole, decoded and answered as
//! one frame and `grpc-status: 0`, without tonic's streaming decoder and
//! encoder (a tenth of a serializable read's CPU in a profile, more than
//! the store's own work on the read). What a client sees is what tonic's
//! generated server answers: the same headers, the same message bytes, the
//! same trailers.
//!
//! Anything else goes to the generated `KvServer`, which keeps tonic's
//! exact answer for it: a compressed request, a body that is not exactly
//! one well-formed message (given to it as read, so it fails as it
//! would have), a message over the decoding limit (given to it unread past
//! its length prefix, so the member never buffers it), and any path that
//! is not one of the five unary RPCs.
//!
//! The bytes held while bodies arrive count against one budget per member
//! (`reading_budget`): a client cannot make the member hold a message on each of
//! its thousands of streams.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prost::Message;
use tonic::{Request, Response, Status};

use secretd_store::answers::AnswerBudget;

use super::kv::KvService;
use crate::pb::etcdserverpb::kv_server::{Kv, KvServer};

/// A gRPC message's prefix: a compressed flag and a big-endian length.
const PREFIX_BYTES: usize = 5;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Answer = http::Response<tonic::body::Body>;

/// The KV service: unary calls by hand, the rest by `KvServer`.
#[derive(Clone)]
pub struct KvGrpc {
    svc: KvService,
    generated: KvServer<KvService>,
    decoding_bytes_max: usize,
    reading: Arc<AnswerBudget>,
}

/// Request bytes the member's hand path holds at once, read and not yet
/// decoded, at least two requests at the decoding limit (`reading_budget`).
/// A client that opens many streams and sends each a large message
/// without ending it would otherwise make the member hold them all, up to
/// the limit per stream, 1,024 streams per connection.
pub const READING_BYTES_MAX: usize = 256 << 20;

/// The member's budget of request bytes being read: the answers' budget
/// mechanism (`secretd_store::answers`), a count of its own, shared by the
/// member's listeners; `READING_BYTES_MAX`, or two requests at
/// `decoding_bytes_max` if more.
pub fn reading_budget(decoding_bytes_max: usize) -> Arc<AnswerBudget> {
    let budget = AnswerBudget::default();
    budget.set_max(READING_BYTES_MAX.max(2 * (PREFIX_BYTES + decoding_bytes_max)));
    Arc::new(budget)
}

impl KvGrpc {
    /// `reading` (`reading_budget`) is shared by every listener's routes,
    /// and holds two requests at `decoding_bytes_max` at least.
    pub fn new(svc: KvService, decoding_bytes_max: usize, reading: &Arc<AnswerBudget>) -> KvGrpc {
        assert!(
            reading.max() >= 2 * (PREFIX_BYTES + decoding_bytes_max),
            "room for two requests at the limit"
        );
        KvGrpc {
            generated: KvServer::new(svc.clone())
                .max_decoding_message_size(decoding_bytes_max)
                .max_encoding_message_size(usize::MAX),
            svc,
            decoding_bytes_max,
            reading: reading.clone(),
        }
    }
}

impl tonic::server::NamedService for KvGrpc {
    const NAME: &'static str = "etcdserverpb.KV";
}

/// The unary RPCs served by hand.
#[derive(Clone, Copy)]
enum Rpc {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
}

impl Rpc {
    fn of(path: &str) -> Option<Rpc> {
        Some(match path.strip_prefix("/etcdserverpb.KV/")? {
            "Range" => Rpc::Range,
            "Put" => Rpc::Put,
            "DeleteRange" => Rpc::DeleteRange,
            "Txn" => Rpc::Txn,
            "Compact" => Rpc::Compact,
            _ => return None,
        })
    }
}

impl<B> tower::Service<http::Request<B>> for KvGrpc
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = BoxFuture<Result<Answer, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        let rpc = Rpc::of(req.uri().path()).filter(|_| plain(req.headers()));
        Box::pin(async move {
            let Some(rpc) = rpc else {
                return this.generated.clone().call(req.map(Replay::body)).await;
            };
            Ok(
                match read_one(req, this.decoding_bytes_max, &this.reading).await {
                    Read::One(parts, message) => this.answer(rpc, parts, message).await,
                    Read::Other(req) => this.generated.clone().call(req).await?,
                    Read::Failed(status) => status.into_http(),
                },
            )
        })
    }
}

impl KvGrpc {
    /// Decodes `message` as `rpc`'s request and answers it. A message that
    /// does not decode is tonic's `Internal`, with prost's reason, as the
    /// generated server answers it.
    async fn answer(&self, rpc: Rpc, parts: http::request::Parts, message: Bytes) -> Answer {
        let svc = &self.svc;
        match rpc {
            Rpc::Range => served(parts, message, |r| svc.range(r)).await,
            Rpc::Put => served(parts, message, |r| svc.put(r)).await,
            Rpc::DeleteRange => served(parts, message, |r| svc.delete_range(r)).await,
            Rpc::Txn => served(parts, message, |r| svc.txn(r)).await,
            Rpc::Compact => served(parts, message, |r| svc.compact(r)).await,
        }
    }
}

/// The compressed flag and length of the message `read` starts with, once
/// its prefix has arrived.
fn prefix(read: &[u8]) -> Option<(u8, usize)> {
    let p: [u8; PREFIX_BYTES] = read.get(..PREFIX_BYTES)?.try_into().ok()?;
    Some((p[0], u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize))
}

/// A request without `grpc-encoding` (or with `identity`): its message is
/// not compressed. The generated server decides the rest.
fn plain(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() == b"identity")
}

enum Read<B> {
    /// The body was one uncompressed message within the limit: its bytes,
    /// without the prefix.
    One(http::request::Parts, Bytes),
    /// Anything else, for the generated server, with the body as read.
    Other(http::Request<Replay<B>>),
    /// The body failed to arrive (the client reset the stream), or the
    /// member holds its most request bytes already (`reading_budget`).
    Failed(Status),
}

/// Reads the body of `req` until it ends, unless its first message's
/// prefix says the message is compressed or over `decoding_bytes_max`:
/// then it stops there and hands the request on, with what was read put
/// back in front of the rest.
async fn read_one<B>(
    req: http::Request<B>,
    decoding_bytes_max: usize,
    reading: &Arc<AnswerBudget>,
) -> Read<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, mut body) = req.into_parts();
    let mut read = BytesMut::new();
    let mut trailers = None;
    let mut ended = false;
    // Given back when this request is read (or refused).
    let held = reading.charge();
    while !ended {
        if let Some((flag, len)) = prefix(&read) {
            // Compressed, over the limit, or more than one message: the
            // generated server's case, and nothing more is buffered.
            if flag != 0 || len > decoding_bytes_max || read.len() > PREFIX_BYTES + len {
                break;
            }
        }
        match body.frame().await {
            None => ended = true,
            Some(Err(e)) => return Read::Failed(Status::from_error(e.into())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Err(now) = held.try_add(data.len()) {
                        return Read::Failed(Status::resource_exhausted(format!(
                            "the member is reading {} bytes of requests, at most {}: try again",
                            now + data.len(),
                            reading.max()
                        )));
                    }
                    read.put(data)
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    ended = true;
                }
            },
        }
    }
    let read = read.freeze();
    let whole = ended
        && prefix(&read).is_some_and(|(flag, len)| {
            flag == 0 && len <= decoding_bytes_max && len == read.len() - PREFIX_BYTES
        });
    if !whole {
        let mut replay = Replay::body(body);
        replay.read = Some(read);
        replay.trailers = trailers;
        return Read::Other(http::Request::from_parts(parts, replay));
    }
    if let Some(t) = trailers {
        // tonic merges a request's trailers into its metadata.
        parts.headers.extend(t);
    }
    Read::One(parts, read.slice(PREFIX_BYTES..))
}

/// Decodes `message`, calls the service and writes its answer as the
/// generated server writes it: `content-type: application/grpc`, the
/// answer's metadata (less gRPC's reserved names) and extensions, one
/// frame, `grpc-status: 0`; an error is a trailers-only answer.
async fn served<M, R, F, Fut>(parts: http::request::Parts, message: Bytes, call: F) -> Answer
where
    M: Message + Default,
    R: Message,
    F: FnOnce(Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let message = match M::decode(message) {
        Ok(m) => m,
        Err(e) => return Status::internal(e.to_string()).into_http(),
    };
    let resp = match call(Request::from_http(http::Request::from_parts(
        parts, message,
    )))
    .await
    {
        Ok(r) => r,
        Err(s) => return s.into_http(),
    };
    let (metadata, message, extensions) = resp.into_parts();
    // Measured once: a large read's length walks every key it holds.
    let len = message.encoded_len();
    let prefix_len = match framed_len(len) {
        Ok(l) => l,
        Err(s) => return s.into_http(),
    };
    let mut frame = BytesMut::with_capacity(PREFIX_BYTES + len);
    frame.put_u8(0);
    frame.put_u32(prefix_len);
    message.encode_raw(&mut frame);
    debug_assert_eq!(frame.len(), PREFIX_BYTES + len);
    let mut headers = metadata.into_headers();
    for reserved in RESERVED_HEADERS {
        headers.remove(reserved);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let mut answer = http::Response::new(tonic::body::Body::new(OneMessage {
        frame: Some(frame.freeze()),
        trailers_sent: false,
    }));
    *answer.version_mut() = http::Version::HTTP_2;
    *answer.headers_mut() = headers;
    *answer.extensions_mut() = extensions;
    answer
}

/// An answer's length as its prefix says it: gRPC's prefix has 32 bits,
/// and tonic refuses a longer answer with this status rather than cut the
/// length (which would leave the client's stream out of step).
fn framed_len(len: usize) -> Result<u32, Status> {
    u32::try_from(len).map_err(|_| {
        Status::resource_exhausted(format!(
            "Cannot return body with more than 4GB of data but got {len} bytes"
        ))
    })
}

/// The names tonic keeps out of an answer's metadata.
const RESERVED_HEADERS: [&str; 5] = [
    "te",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
];

/// An answer's body: its one frame, then `grpc-status: 0`.
struct OneMessage {
    frame: Option<Bytes>,
    trailers_sent: bool,
}

impl Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.frame.take() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        self.trailers_sent = true;
        let mut trailers = http::HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.frame.is_none() && self.trailers_sent
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Like tonic's encoder: the length is not promised, so hyper sends
        // no `content-length`.
        http_body::SizeHint::default()
    }
}

/// A request body with what was already read of it put back in front:
/// those bytes, then the rest of `inner`, then the trailers read.
pub struct Replay<B> {
    read: Option<Bytes>,
    inner: Option<B>,
    trailers: Option<http::HeaderMap>,
}

impl<B> Replay<B> {
    fn body(inner: B) -> Replay<B> {
        Replay {
            read: None,
            inner: Some(inner),
            trailers: None,
        }
    }
}

impl<B> Body for Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(read) = self.read.take().filter(|r| r.has_remaining()) {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        if let Some(inner) = self.inner.as_mut() {
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(None) => self.inner = None,
                other => return other,
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

#[cfg(test)]
mod tests;

//! etcd's Watch service on gRPC, by hand: tonic's generated server would
//! take a `WatchResponse` and encode its events again for every watcher,
//! while this one sends `WatchOut`s (`wire`), whose events the hub encoded
//! once.
//!
//! The service answers the one path `/etcdserverpb.Watch/Watch` with the
//! limits and codec the generated server had; anything else under the
//! service is gRPC's `Unimplemented`, as tonic answers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::wire::WatchOut;
use super::WatchService;
use crate::etcd::auth::Who;
use crate::pb::etcdserverpb::WatchRequest;

/// The gRPC service: `WatchService` behind tonic's streaming machinery.
#[derive(Clone)]
pub struct WatchGrpc {
    svc: Arc<WatchService>,
    decoding_bytes_max: usize,
}

impl WatchGrpc {
    pub fn new(svc: WatchService, decoding_bytes_max: usize) -> WatchGrpc {
        WatchGrpc {
            svc: Arc::new(svc),
            decoding_bytes_max,
        }
    }
}

impl tonic::server::NamedService for WatchGrpc {
    const NAME: &'static str = "etcdserverpb.Watch";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type OutStream = Pin<Box<dyn Stream<Item = Result<WatchOut, Status>> + Send>>;

/// One call of the Watch RPC.
struct WatchCall(Arc<WatchService>);

impl tonic::server::StreamingService<WatchRequest> for WatchCall {
    type Response = WatchOut;
    type ResponseStream = OutStream;
    type Future = BoxFuture<Result<Response<OutStream>, Status>>;

    fn call(&mut self, req: Request<Streaming<WatchRequest>>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let who = Who::of(&svc.node, &req).await?;
            Ok(Response::new(svc.serve(req.into_inner(), who)))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for WatchGrpc
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/etcdserverpb.Watch/Watch" {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let call = WatchCall(self.svc.clone());
        let decoding_bytes_max = self.decoding_bytes_max;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_max_message_size_config(Some(decoding_bytes_max), Some(usize::MAX));
            Ok(grpc.streaming(call, req).await)
        })
    }
}

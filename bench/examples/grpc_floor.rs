//! The floor under any etcd-API read on this machine: a KV server that
//! does no work (every Range gets an empty answer at once), so the CPU it
//! uses per request is what tonic, h2 and loopback TCP cost on their own.
//! Evidence for the benchmark note, not a test: drive it with
//! `secretd-bench get --consistency s --in-flight 256 --endpoints
//! 127.0.0.1:PORT` and read its CPU from /proc.
//!   cargo run --release -p bench --example grpc_floor -- PORT

use secretd_api::pb::etcdserverpb::{
    kv_server::{Kv, KvServer},
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

struct Null;

#[tonic::async_trait]
impl Kv for Null {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse::default()))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse::default()))
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented(
            "grpc_floor serves Range and Put only",
        ))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented(
            "grpc_floor serves Range and Put only",
        ))
    }
    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented(
            "grpc_floor serves Range and Put only",
        ))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => anyhow::bail!("usage: grpc_floor PORT (a free TCP port on 127.0.0.1)"),
    };
    eprintln!(
        "grpc_floor: serving on 127.0.0.1:{port}, pid {}",
        std::process::id()
    );
    tonic::transport::Server::builder()
        .add_service(KvServer::new(Null))
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}

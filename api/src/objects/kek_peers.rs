//! The keyring's peer fetches over the members' gRPC transport
//! (`Raft.FetchKek`, mutual TLS between members): each attempt bounded in
//! time, the answer's key material moved straight into a zeroizing holder.

use futures::future::BoxFuture;
use secretd_secrets::keys::{KekPeers, PeerKek};
use secretd_store::pb::etcdserverpb::Member;
use zeroize::Zeroize;

use crate::pb::raftpb::FetchKekRequest;

/// How long one peer gets to connect and answer a KEK fetch.
const FETCH_TIMEOUT_MS: u64 = 3000;

pub struct GrpcKekPeers {
    /// This member, as peers check the request against their membership.
    pub cluster_id: u64,
    pub me: u64,
}

impl KekPeers for GrpcKekPeers {
    fn fetch<'a>(
        &'a self,
        peer: &'a Member,
        generation: u32,
    ) -> BoxFuture<'a, anyhow::Result<PeerKek>> {
        Box::pin(async move {
            let url = peer
                .peer_ur_ls
                .first()
                .ok_or_else(|| anyhow::anyhow!("member {:x} has no peer URL", peer.id))?;
            let mut resp = crate::peer::raft_client(url, FETCH_TIMEOUT_MS, FETCH_TIMEOUT_MS)
                .await?
                .fetch_kek(FetchKekRequest {
                    cluster_id: self.cluster_id,
                    from: self.me,
                    generation,
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let out = PeerKek {
                key: std::mem::take(&mut resp.key),
                sealed: std::mem::take(&mut resp.sealed),
                unlock_epoch: resp.unlock_epoch,
            };
            resp.key.zeroize();
            Ok(out)
        })
    }
}

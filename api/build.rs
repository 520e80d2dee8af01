//! Generates the gRPC services. Message types of the etcd packages come from
//! `secretd_store::pb` (extern paths), so one Rust type exists per message.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "proto";
    let files = [
        "etcd/etcdserverpb/rpc.proto",
        "secretd/raft.proto",
        "secretstore/v1/secretstore.proto",
    ];
    println!("cargo:rerun-if-changed={root}");
    let fds = protox::compile(files, [root])?;
    tonic_prost_build::configure()
        .extern_path(".mvccpb", "::secretd_store::pb::mvccpb")
        .extern_path(".etcdserverpb", "::secretd_store::pb::etcdserverpb")
        // Raft messages decode as slices of the received buffer: entry
        // payloads reach the log without a copy (`RaftService::check`).
        .bytes(".secretd.raft.v1.RaftBatch.messages")
        .bytes(".secretd.raft.v1.SnapshotChunk.message")
        .compile_fds(fds)?;
    Ok(())
}

//! Generates the gRPC services. Message types of the etcd packages come from
//! `secretd_store::pb`, secretstore.v1's and the records' from
//! `secretd_secrets::pb` (extern paths), so one Rust type exists per message.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    let files = [
        "etcd/etcdserverpb/rpc.proto",
        "etcd/v3lockpb/v3lock.proto",
        "etcd/v3electionpb/v3election.proto",
        "secretd/raft.proto",
        "secretd/records.proto",
        "secretstore/v1/secretstore.proto",
    ];
    println!("cargo:rerun-if-changed={root}");
    let fds = protox::compile(files, [root])?;
    write_rpc_list(&fds)?;
    tonic_prost_build::configure()
        .extern_path(".mvccpb", "::secretd_store::pb::mvccpb")
        .extern_path(".authpb", "::secretd_store::pb::authpb")
        .extern_path(".etcdserverpb", "::secretd_store::pb::etcdserverpb")
        .extern_path(".v3lockpb", "::secretd_store::pb::v3lockpb")
        .extern_path(".v3electionpb", "::secretd_store::pb::v3electionpb")
        .extern_path(".secretd.records.v1", "::secretd_secrets::pb::records")
        .extern_path(".secretstore.v1", "::secretd_secrets::pb::secretstore")
        // Raft messages decode as slices of the received buffer: entry
        // payloads reach the log without a copy (`RaftService::check`).
        .bytes(".secretd.raft.v1.RaftBatch.messages")
        .bytes(".secretd.raft.v1.SnapshotChunk.message")
        .compile_fds(fds)?;
    Ok(())
}

/// Every RPC of every service, as gRPC paths (`/package.Service/Method`),
/// for the role matrix's completeness test (`authz.rs`).
fn write_rpc_list(fds: &prost_types::FileDescriptorSet) -> Result<(), Box<dyn std::error::Error>> {
    let mut paths = Vec::new();
    for f in &fds.file {
        for s in &f.service {
            for m in &s.method {
                paths.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
            }
        }
    }
    paths.sort();
    let body: String = paths.iter().map(|p| format!("    {p:?},\n")).collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("rpc_list.rs");
    std::fs::write(out, format!("pub const ALL_RPCS: &[&str] = &[\n{body}];\n"))?;
    Ok(())
}

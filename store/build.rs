//! Generates the etcd wire types (messages only) and secretd's raft-log entry
//! type from the protos in `proto/` (the workspace's one copy of the wire). The store applies etcd's own request
//! types, as etcd does; the gRPC services are generated in `api`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/authpb/auth.proto",
        "etcd/etcdserverpb/rpc.proto",
        "etcd/v3lockpb/v3lock.proto",
        "etcd/v3electionpb/v3election.proto",
        "secretd/internal.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root])?;
    // proto3 JSON (int64 as strings, bytes as base64, enums by name) with
    // the protos' own field names, as etcd's gRPC gateway writes them.
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new().compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}

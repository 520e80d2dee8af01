//! Generates the etcd wire types (messages only) and secretd's raft-log entry
//! type from the protos in `api/proto`. The store applies etcd's own request
//! types, as etcd does; the gRPC services are generated in `api`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../api/proto";
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/etcdserverpb/rpc.proto",
        "secretd/internal.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}

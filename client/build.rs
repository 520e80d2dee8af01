//! The client stubs every client of secretd uses (secretctl, the node
//! agent, the fault suite): etcd's API and secretstore.v1, generated from
//! the workspace's `proto/`, client side only (with etcd's Lock and
//! Election services).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    println!("cargo:rerun-if-changed={root}/etcd");
    println!("cargo:rerun-if-changed={root}/secretstore");
    let fds = protox::compile(
        [
            "etcd/etcdserverpb/rpc.proto",
            "etcd/v3lockpb/v3lock.proto",
            "etcd/v3electionpb/v3election.proto",
            "secretstore/v1/secretstore.proto",
        ],
        [root],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}

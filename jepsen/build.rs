//! The etcd v3 and secretstore.v1 clients the harness drives secretd with, generated from the
//! same .proto files secretd serves (client stubs only: the harness is an
//! etcd client like any other, and shares no Rust types with the server).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    println!("cargo:rerun-if-changed={root}/etcd");
    println!("cargo:rerun-if-changed={root}/secretstore");
    let fds = protox::compile(
        [
            "etcd/etcdserverpb/rpc.proto",
            "secretstore/v1/secretstore.proto",
        ],
        [root],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}

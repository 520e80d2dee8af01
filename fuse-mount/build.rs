//! The agent's client for `secretstore.v1`, generated from the workspace's
//! `proto/` (one definition of the wire, two generated sides).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    println!("cargo:rerun-if-changed={root}/secretstore");
    let fds = protox::compile(["secretstore/v1/secretstore.proto"], [root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}

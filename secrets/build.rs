//! Generates the messages (no services) of secretstore.v1 and of the
//! records secretd stores in the reserved range, from the workspace's
//! `proto/`. `api` generates the gRPC services over these same types.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    let files = ["secretd/records.proto", "secretstore/v1/secretstore.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let fds = protox::compile(files, [root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}

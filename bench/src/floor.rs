//! The gRPC floor in `bench compare`: `examples/grpc_floor` (a tonic KV
//! server that answers every request empty) started in the same run and
//! driven by the same client as the `get-ser` row, so secretd's CPU per
//! serializable read can be set against what tonic, h2 and loopback TCP
//! cost on their own (`floor_ratio`). A ratio near 1 says a read's cost is
//! the transport's, not the store's.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::compare::{ClusterProc, System};

/// The cargo command that builds the floor, for the user and for us.
pub const BUILD_ARGS: [&str; 6] = [
    "build",
    "--release",
    "-p",
    "bench",
    "--example",
    "grpc_floor",
];

/// The release `examples/grpc_floor` next to this binary
/// (`target/release/examples/grpc_floor`), built with `BUILD_ARGS` if
/// missing (as `ensure_secretd` builds secretd).
pub fn ensure() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("examples").join("grpc_floor");
    if p.exists() {
        return Ok(p);
    }
    eprintln!(
        "bench: building the gRPC floor (cargo {})",
        BUILD_ARGS.join(" ")
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo).args(BUILD_ARGS).status();
    if !matches!(st, Ok(s) if s.success()) || !p.exists() {
        bail!(
            "cannot find or build {}: run `cargo {}` first",
            p.display(),
            BUILD_ARGS.join(" ")
        );
    }
    Ok(p)
}

/// The floor serving on 127.0.0.1:`port`, as a one-member "cluster" so
/// `compare::load` drives it and reads its CPU like any other system's.
pub fn start(port: u16) -> Result<ClusterProc> {
    let bin = ensure()?;
    let dir = tempfile::tempdir()?;
    let log = std::fs::File::create(dir.path().join("floor.log"))?;
    let child = Command::new(&bin)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(ClusterProc {
        system: System::Floor,
        children: vec![child],
        endpoints: vec![format!("127.0.0.1:{port}")],
        members: Vec::new(),
        bin: bin.to_path_buf(),
        _dir: dir,
    })
}

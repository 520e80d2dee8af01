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

/// How many floor processes each floor line runs: one (the issue's
/// floor), and three, shaped like the clusters (the client spreads its
/// connections over three processes sharing the two cores, as it does over
/// three members).
pub const PROCESSES: [usize; 2] = [1, 3];

/// The floor serving on `processes` ports from 127.0.0.1:`first_port`, as
/// a "cluster" so `compare::load` drives it and reads its CPU (summed over
/// the processes) like any other system's.
pub fn start(first_port: u16, processes: usize) -> Result<ClusterProc> {
    let bin = ensure()?;
    let dir = tempfile::tempdir()?;
    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..processes {
        let port = first_port + i as u16;
        let log = std::fs::File::create(dir.path().join(format!("floor{i}.log")))?;
        let child = Command::new(&bin)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        children.push(child);
        endpoints.push(format!("127.0.0.1:{port}"));
    }
    Ok(ClusterProc {
        system: System::Floor,
        children,
        endpoints,
        members: Vec::new(),
        bin: bin.to_path_buf(),
        _dir: dir,
    })
}

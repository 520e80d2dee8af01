//! The secretd processes under test: one per node namespace, started through
//! `ip netns exec` (which execs, so the PID we hold is secretd's own), each
//! with its own data directory and log. Killed by PID (`kill -9`), paused
//! (SIGSTOP/SIGCONT), restarted from disk, removed from the cluster and
//! added back with a fresh data directory, given a full disk, or run with
//! the clock shim preloaded for clock faults (`jepsen/clockshim`: libfaketime
//! deadlocks against secretd's jemalloc).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, Context, Result};
use secretd_testkit::launch;

use super::net::{self, Net};

const CLIENT_PORT: u16 = 2379;
/// A re-added member gets the other peer port: its peer URL, and so its
/// member ID, differ from the removed one's (IDs derive from peer URLs).
const PEER_PORTS: [u16; 2] = [2380, 2390];
/// The clock shim, looked for beside this binary and beside secretd.
const CLOCK_SHIM: &str = "libsecretd_clockshim.so";
/// Size of the tmpfs that holds the disk-fault node's data directory.
const DISK_TMPFS_MIB: u64 = 512;

pub struct Node {
    pub name: String,
    ns: String,
    ip: String,
    peer_port_index: usize,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub paused: bool,
    /// `--initial-cluster-state existing` and this `--initial-cluster` on
    /// the next start (a member that was re-added).
    join: Option<String>,
    faketime_file: Option<PathBuf>,
    /// The node's data directory is on its own small tmpfs.
    disk: Option<PathBuf>,
}

pub struct Nodes {
    pub nodes: Vec<Node>,
    secretd: PathBuf,
    /// Preloaded into every member when the clock nemesis is on.
    clock_shim: Option<PathBuf>,
}

/// The clock shim beside this binary (a cargo build puts every workspace
/// artifact in one directory) or beside secretd.
fn find_clock_shim(secretd: &Path) -> Result<PathBuf> {
    let mut places = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        places.push(exe.with_file_name(CLOCK_SHIM));
    }
    places.push(secretd.with_file_name(CLOCK_SHIM));
    places.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "the clock nemesis needs {CLOCK_SHIM} beside jepsen or secretd: cargo build --release -p secretd-clockshim"
        )
    })
}

impl Node {
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, PEER_PORTS[self.peer_port_index])
    }
}

impl Nodes {
    /// Prepares `n` nodes under `dir`; `clock` runs them with the clock shim,
    /// `disk_node` gets its data directory on a small tmpfs.
    pub fn new(
        net: &Net,
        secretd: &Path,
        dir: &Path,
        n: usize,
        clock: bool,
        disk_node: Option<usize>,
    ) -> Result<Nodes> {
        if !secretd.is_file() {
            bail!(
                "no secretd binary at {} (build it with `cargo build --release -p secretd-api`, or pass --secretd)",
                secretd.display()
            );
        }
        let clock_shim = if clock {
            Some(find_clock_shim(secretd)?)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let mut data_dir = dir.join(format!("{name}.etcd"));
            let disk = if disk_node == Some(i) {
                let mnt = dir.join(format!("{name}.disk"));
                std::fs::create_dir_all(&mnt)?;
                net::run(&[
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={DISK_TMPFS_MIB}m"),
                    "tmpfs",
                    &mnt.display().to_string(),
                ])?;
                data_dir = mnt.join(format!("{name}.etcd"));
                Some(mnt)
            } else {
                None
            };
            let faketime_file = if clock {
                let f = dir.join(format!("{name}.faketime"));
                std::fs::write(&f, "+0\n")?;
                Some(f)
            } else {
                None
            };
            nodes.push(Node {
                name,
                ns: net.node_ns(i),
                ip: Net::node_ip(i),
                peer_port_index: 0,
                data_dir,
                log: dir.join(format!("n{}.log", i + 1)),
                child: None,
                paused: false,
                join: None,
                faketime_file,
                disk,
            });
        }
        Ok(Nodes {
            nodes,
            secretd: secretd.to_path_buf(),
            clock_shim,
        })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        let initial = self.initial_cluster();
        let n = &mut self.nodes[i];
        let member = launch::Member {
            name: n.name.clone(),
            data_dir: n.data_dir.clone(),
            client_url: n.client_url(),
            peer_url: n.peer_url(),
            cluster: match &n.join {
                Some(c) => launch::Cluster::Existing { initial: c.clone() },
                None => launch::Cluster::New {
                    initial,
                    token: None,
                },
            },
            tls: None,
            log: n.log.clone(),
            // The corrupt nemesis waits for the leader's check.
            extra: vec!["--experimental-corrupt-check-time".into(), "2s".into()],
        };
        let mut cmd = member
            .command(&self.secretd, &["ip", "netns", "exec", &n.ns])
            .context("cannot open the member's log")?;
        if let (Some(f), Some(shim)) = (&n.faketime_file, &self.clock_shim) {
            cmd.env("LD_PRELOAD", shim)
                .env("SECRETD_CLOCK_OFFSET_FILE", f);
        }
        n.child = Some(cmd.spawn().context("cannot start secretd")?);
        n.paused = false;
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Whether node `i`'s process is running (reaps it if it exited).
    pub fn alive(&mut self, i: usize) -> bool {
        let n = &mut self.nodes[i];
        match n.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                n.child = None;
                false
            }
            None => false,
        }
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: signalling a child we started and have not reaped.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    pub fn kill(&mut self, i: usize) {
        if self.nodes[i].paused {
            self.signal(i, libc::SIGCONT);
        }
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[i].paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Sets node `i`'s wall clock offset (the clock shim re-reads the file
    /// at most every 100 ms).
    pub fn set_clock_offset(&self, i: usize, offset_s: i64) -> Result<()> {
        if let Some(f) = &self.nodes[i].faketime_file {
            std::fs::write(f, format!("{offset_s:+}\n"))?;
        }
        Ok(())
    }

    pub fn disk_node(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.disk.is_some())
    }

    fn filler(&self, i: usize) -> Option<PathBuf> {
        self.nodes[i].disk.as_ref().map(|d| d.join("filler"))
    }

    /// Fills node `i`'s tmpfs to the last byte.
    pub fn fill_disk(&self, i: usize) -> Result<()> {
        use std::io::Write;
        let Some(path) = self.filler(i) else {
            bail!("node {i} has no disk of its own");
        };
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    break;
                }
                return Err(e.into());
            }
        }
        // Fill the last partial chunk too.
        let small = [0u8; 4096];
        while f.write_all(&small).is_ok() {}
        Ok(())
    }

    pub fn free_disk(&self, i: usize) {
        if let Some(p) = self.filler(i) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// After `MemberRemove`: kills the node and deletes its data.
    pub fn forget(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        let d = &self.nodes[i].data_dir;
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("cannot remove {}", d.display()))?;
        }
        Ok(())
    }

    /// Flips a bit in one record of stopped node `i`'s keyspace (`secretd
    /// debug damage-record`); what was damaged, as the tool says it.
    pub fn damage_record(&self, i: usize) -> Result<String> {
        let out = Command::new(&self.secretd)
            .args(["debug", "damage-record", "--data-dir"])
            .arg(&self.nodes[i].data_dir)
            .output()
            .context("cannot run secretd debug damage-record")?;
        if !out.status.success() {
            bail!(
                "secretd debug damage-record: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Gives node `i` its other peer URL and returns it; the node then
    /// joins the members `others` (name=peer URL list) when started.
    pub fn prepare_rejoin(&mut self, i: usize, others: &[usize]) -> String {
        self.nodes[i].peer_port_index ^= 1;
        let mut cluster: Vec<String> = others
            .iter()
            .map(|&o| format!("{}={}", self.nodes[o].name, self.nodes[o].peer_url()))
            .collect();
        cluster.push(format!(
            "{}={}",
            self.nodes[i].name,
            self.nodes[i].peer_url()
        ));
        self.nodes[i].join = Some(cluster.join(","));
        self.nodes[i].peer_url()
    }

    /// Deletes every member's data directory (after `shutdown`).
    pub fn remove_data(&self) {
        for n in &self.nodes {
            let _ = std::fs::remove_dir_all(&n.data_dir);
        }
    }

    /// Kills every process and unmounts the disk; the data stays for the
    /// report.
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for n in &self.nodes {
            if let Some(d) = &n.disk {
                let _ = net::run(&["umount", "-l", &d.display().to_string()]);
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.shutdown();
    }
}

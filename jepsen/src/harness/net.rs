//! The test network: one network namespace per node and one for the
//! clients, joined by a bridge that lives in a namespace of its own, so the
//! host's network is never touched. Partitions are iptables DROP rules in
//! the receiving node's namespace (a one-way partition is a rule on one
//! side only); healing flushes them.
//!
//! Names carry the harness's PID (`sdj<pid>-…`), so concurrent runs do not
//! collide, and a later run can tell a dead run's leftovers from a live
//! run's namespaces and delete them.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// 10.77.0.0/24: nodes are .1 to .N, clients are .200.
const SUBNET: &str = "10.77.0";
const CLIENT_HOST: u8 = 200;

pub struct Net {
    prefix: String,
    nodes: usize,
    created: Vec<String>,
}

pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces left by runs whose process is gone (`kill -9` of the
/// harness leaves them; everything else cleans up after itself).
pub fn remove_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("sdj") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

impl Net {
    /// Checks that this process can make namespaces (root, iproute2,
    /// iptables), with a message that says what is missing.
    pub fn preflight() -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the fault suite needs root: it creates network namespaces, iptables rules and mounts");
        }
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("--version").output().is_err() {
                bail!("the fault suite needs `{tool}` (Debian: apt-get install iproute2 iptables; scripts/deps.sh --test does it)");
            }
        }
        Ok(())
    }

    pub fn create(nodes: usize) -> Result<Net> {
        remove_stale();
        let mut net = Net {
            prefix: format!("sdj{}", std::process::id()),
            nodes,
            created: Vec::new(),
        };
        net.build().inspect_err(|_| net.destroy())?;
        Ok(net)
    }

    fn ns(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    pub fn node_ns(&self, i: usize) -> String {
        self.ns(&format!("n{}", i + 1))
    }

    pub fn client_ns(&self) -> String {
        self.ns("c")
    }

    pub fn node_ip(i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        run(&["ip", "netns", "add", name])?;
        self.created.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth from `ns` (as eth0, with `ip`) to the bridge.
    fn attach(&self, ns: &str, port: &str, ip: &str) -> Result<()> {
        let br = self.ns("br");
        run(&[
            "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
            &br,
        ])?;
        run(&["ip", "-n", &br, "link", "set", port, "master", "br0"])?;
        run(&["ip", "-n", &br, "link", "set", port, "up"])?;
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let br = self.ns("br");
        self.add_ns(&br)?;
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.node_ns(i);
            self.add_ns(&ns)?;
            self.attach(&ns, &format!("v{}", i + 1), &Self::node_ip(i))?;
        }
        let c = self.client_ns();
        self.add_ns(&c)?;
        self.attach(&c, "vc", &format!("{SUBNET}.{CLIENT_HOST}"))?;
        Ok(())
    }

    /// Drops packets from `from` arriving at `to` (one direction).
    pub fn drop_link(&self, from: usize, to: usize) -> Result<()> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.node_ns(to),
            "iptables",
            "-w",
            "-A",
            "INPUT",
            "-s",
            &Self::node_ip(from),
            "-j",
            "DROP",
        ])?;
        Ok(())
    }

    /// Cuts every link between the two groups, both ways.
    pub fn split(&self, a: &[usize], b: &[usize]) -> Result<()> {
        for &x in a {
            for &y in b {
                self.drop_link(x, y)?;
                self.drop_link(y, x)?;
            }
        }
        Ok(())
    }

    pub fn heal(&self) -> Result<()> {
        for i in 0..self.nodes {
            run(&[
                "ip",
                "netns",
                "exec",
                &self.node_ns(i),
                "iptables",
                "-w",
                "-F",
                "INPUT",
            ])?;
        }
        Ok(())
    }

    /// Moves the calling thread into the clients' namespace: threads it
    /// starts afterwards (a tokio runtime's workers) are there too.
    pub fn enter_client_ns(&self) -> Result<()> {
        let path = format!("/run/netns/{}", self.client_ns());
        let f = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn destroy(&mut self) {
        for ns in self.created.drain(..).rev() {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

//! The one way every harness starts a secretd member: the integration
//! tests (`api/tests/it/common.rs`), `bench compare` and the fault suite
//! (`jepsen/src/harness/nodes.rs`) each used to build the same command
//! line their own way, and drifted. Each still decides its own ports,
//! folders and extra flags; this builds the command from them, appends the
//! member's log, and runs it under a wrapper when asked (the fault suite
//! starts members inside a network namespace: `ip netns exec NS`).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the member finds its cluster.
#[derive(Clone, Debug)]
pub enum Cluster {
    /// A new cluster: `--initial-cluster` (name=peer URL, ...), with an
    /// optional `--initial-cluster-token`.
    New {
        initial: String,
        token: Option<String>,
    },
    /// Joining a running cluster: `--initial-cluster` as `member add`
    /// printed it, `--initial-cluster-state existing`.
    Existing { initial: String },
    /// The flags as the caller wrote them (a rejoin from a test's own
    /// `member add` output, `--force-new-cluster`, ...).
    Flags(Vec<String>),
}

/// The certificate files a TLS member uses, for clients and peers alike.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// One member's start: everything its command line says.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    pub cluster: Cluster,
    pub tls: Option<TlsFiles>,
    /// Appended to, never truncated: a restarted member's log follows its
    /// earlier life, which is what a failure's reader needs.
    pub log: PathBuf,
    /// Flags after the common ones (tests' `--auth-token`, the fault
    /// suite's corruption check period, ...).
    pub extra: Vec<String>,
}

impl Member {
    /// The member's flags, in the order secretd's documentation lists them.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        fn flag(a: &mut Vec<OsString>, k: &str, v: impl Into<OsString>) {
            a.push(k.into());
            a.push(v.into());
        }
        flag(&mut a, "--name", &self.name);
        flag(&mut a, "--listen-client-urls", &self.client_url);
        flag(&mut a, "--advertise-client-urls", &self.client_url);
        flag(&mut a, "--listen-peer-urls", &self.peer_url);
        flag(&mut a, "--initial-advertise-peer-urls", &self.peer_url);
        match &self.cluster {
            Cluster::New { initial, token } => {
                flag(&mut a, "--initial-cluster", initial);
                flag(&mut a, "--initial-cluster-state", "new");
                if let Some(t) = token {
                    flag(&mut a, "--initial-cluster-token", t);
                }
            }
            Cluster::Existing { initial } => {
                flag(&mut a, "--initial-cluster", initial);
                flag(&mut a, "--initial-cluster-state", "existing");
            }
            Cluster::Flags(f) => a.extend(f.iter().map(OsString::from)),
        }
        if let Some(t) = &self.tls {
            for (k, v) in [
                ("--cert-file", &t.cert),
                ("--key-file", &t.key),
                ("--trusted-ca-file", &t.ca),
                ("--peer-cert-file", &t.cert),
                ("--peer-key-file", &t.key),
                ("--peer-trusted-ca-file", &t.ca),
            ] {
                flag(&mut a, k, v);
            }
        }
        flag(&mut a, "--data-dir", &self.data_dir);
        a.extend(self.extra.iter().map(OsString::from));
        a
    }

    /// The command that starts the member: `secretd` itself, or under
    /// `wrapper` (its first word is the program run). stdin and stdout are
    /// closed; stderr, where secretd logs, is appended to `log`; the log
    /// level is `info` unless the caller sets `SECRETD_LOG` on the command.
    pub fn command(&self, secretd: &Path, wrapper: &[&str]) -> std::io::Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.log.display())))?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(secretd);
                c
            }
            None => Command::new(secretd),
        };
        cmd.args(self.args())
            .env("SECRETD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Ok(cmd)
    }
}

/// `name=url,...` for `--initial-cluster`.
pub fn initial_cluster<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    members
        .into_iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(cluster: Cluster, tls: bool) -> Member {
        Member {
            name: "m1".into(),
            data_dir: "/d/m1".into(),
            client_url: "http://127.0.0.1:1".into(),
            peer_url: "http://127.0.0.1:2".into(),
            cluster,
            tls: tls.then(|| TlsFiles {
                cert: "/c/m.pem".into(),
                key: "/c/m-key.pem".into(),
                ca: "/c/ca.pem".into(),
            }),
            log: "/d/m1.log".into(),
            extra: vec!["--auth-token".into(), "simple".into()],
        }
    }

    fn words(m: &Member) -> String {
        m.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_new_members_flags() {
        let m = member(
            Cluster::New {
                initial: initial_cluster([("m1", "http://127.0.0.1:2")]),
                token: Some("t".into()),
            },
            false,
        );
        assert_eq!(
            words(&m),
            "--name m1 --listen-client-urls http://127.0.0.1:1 --advertise-client-urls http://127.0.0.1:1 \
             --listen-peer-urls http://127.0.0.1:2 --initial-advertise-peer-urls http://127.0.0.1:2 \
             --initial-cluster m1=http://127.0.0.1:2 --initial-cluster-state new --initial-cluster-token t \
             --data-dir /d/m1 --auth-token simple"
        );
    }

    #[test]
    fn a_joining_tls_members_flags() {
        let m = member(
            Cluster::Existing {
                initial: "a=x,m1=y".into(),
            },
            true,
        );
        let w = words(&m);
        assert!(
            w.contains("--initial-cluster a=x,m1=y --initial-cluster-state existing"),
            "{w}"
        );
        assert!(
            w.contains("--cert-file /c/m.pem --key-file /c/m-key.pem --trusted-ca-file /c/ca.pem"),
            "{w}"
        );
        assert!(w.contains("--peer-cert-file /c/m.pem --peer-key-file /c/m-key.pem --peer-trusted-ca-file /c/ca.pem"), "{w}");
    }

    #[test]
    fn a_wrapper_runs_secretd_and_a_missing_log_folder_is_named() {
        let dir = std::env::temp_dir().join(format!("testkit-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = member(Cluster::Flags(vec!["--force-new-cluster".into()]), false);
        m.log = dir.join("m1.log");
        let cmd = m
            .command(Path::new("/bin/secretd"), &["ip", "netns", "exec", "ns1"])
            .unwrap();
        assert_eq!(cmd.get_program(), "ip");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            &args[..5],
            ["netns", "exec", "ns1", "/bin/secretd", "--name"]
        );
        assert!(args.contains(&"--force-new-cluster".to_string()));
        m.log = dir.join("missing/m1.log");
        let err = m.command(Path::new("/bin/secretd"), &[]).unwrap_err();
        assert!(err.to_string().contains("missing/m1.log"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `bench scale`'s key curve: one 3-member cluster per system, filled to
//! each size in turn (10k, 100k, 1M keys of 256 B by default) and measured
//! at each: puts and serializable gets over the whole key space, members'
//! RSS and disk, a member's restart to serving, a new member's catch-up by
//! snapshot, and compaction and defrag. Both systems get the same flags
//! that matter here: a backend quota large enough for 1M keys and
//! etcd's `--snapshot-count` set to secretd's 10,000, so that both catch a
//! new member up by snapshot at every size (etcd's default, 100,000, would
//! replay the log below 100k entries and measure something else).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use secretd_client::pb::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
    CompactionRequest, DefragmentRequest, MemberAddRequest, MemberRemoveRequest, PutRequest,
    RangeRequest, StatusRequest,
};
use secretd_testkit::launch;
use tonic::transport::Channel;

use crate::channel_within;

use crate::compare::{self, ClusterProc, Sample, System};
use crate::{key, LoadSpec, Workload};

/// Flags both systems run with in `bench scale` (see the module comment).
const FLAGS: [&str; 4] = [
    "--quota-backend-bytes",
    "8589934592",
    "--snapshot-count",
    "10000",
];
const VALUE_BYTES: usize = 256;
/// Puts in flight while filling, and the connections they share.
const FILL_IN_FLIGHT: usize = 256;
const FILL_CONNECTIONS: usize = 16;
/// Attempts per put while filling: a loaded etcd may answer "too many
/// requests" for a moment, which is not what the fill measures.
const FILL_ATTEMPTS_MAX: u32 = 5;
/// Each size's measured puts (overwrites inside the key space) and gets.
const PUTS: u64 = 20_000;
const GETS: u64 = 50_000;
/// How long a restarted or new member may take to serve before the run
/// gives up on it.
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Defragmenting 1M keys takes seconds; the call waits for it.
const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(600);

/// One size's numbers for one system.
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub keys: u64,
    /// Puts of 256 B @64 over the key space.
    pub put: Sample,
    /// Serializable gets @256 over the key space.
    pub get: Sample,
    /// Mean resident memory of a member, MiB.
    pub rss_mib: f64,
    /// Mean size of a member's data directory, MiB.
    pub disk_mib: f64,
    /// A stopped member's start to its first linearizable read, seconds.
    pub restart_s: f64,
    /// A new member's start to its first linearizable read, seconds.
    pub catchup_s: f64,
    /// Compact(physical) of every revision so far, seconds.
    pub compact_s: f64,
    /// Defragment, mean per member, seconds.
    pub defrag_s: f64,
}

/// One system's curve.
#[derive(Clone, Debug)]
pub struct Curve {
    pub system: System,
    /// A member's RSS with the cluster just started, MiB.
    pub idle_rss_mib: f64,
    pub points: Vec<Point>,
    /// 10,000 watchers at the largest size (events per second, delay, CPU
    /// per delivered event), and the members' mean RSS with them.
    pub watchers: Option<(Sample, f64)>,
}

/// Starts `system`'s cluster on ports from `base` and measures it at each
/// of `sizes` (ascending); 10k watchers at the end if `watchers`.
pub async fn curve(system: System, base: u16, sizes: &[u64], watchers: bool) -> Result<Curve> {
    let flags: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
    let mut c = compare::start_with(system, base, 3, &flags)?;
    compare::ready(&c).await?;
    let mut out = Curve {
        system,
        idle_rss_mib: c.rss_mib() / 3.0,
        points: Vec::new(),
        watchers: None,
    };
    let mut filled = 0;
    for (joined, &size) in sizes.iter().enumerate() {
        let t = Instant::now();
        fill(&c, filled, size).await?;
        filled = size;
        eprintln!(
            "bench scale: {} filled to {size} keys in {:.1}s",
            system.name(),
            t.elapsed().as_secs_f64()
        );
        let p = point(&mut c, base, size, joined as u16).await?;
        eprintln!("bench scale: {} at {size}: {p:?}", system.name());
        out.points.push(p);
    }
    if watchers {
        let s = compare::watchers(&c, 10_000, 100).await?;
        out.watchers = Some((s, c.rss_mib() / 3.0));
    }
    Ok(out)
}

/// Everything measured at one size, in an order where each step leaves
/// the cluster as the next expects (three members, all keys present).
async fn point(c: &mut ClusterProc, base: u16, keys: u64, joined: u16) -> Result<Point> {
    let spec = |workload, in_flight: usize, total| LoadSpec {
        endpoints: c.endpoints.clone(),
        connections: in_flight.min(16),
        in_flight,
        total_ops: total,
        time_limit: Duration::from_secs(60),
        key_space: keys,
        value_bytes: VALUE_BYTES,
        workload,
        preloaded: true,
    };
    let put = compare::measure(c, &spec(Workload::Put, 64, PUTS)).await?;
    let get = compare::measure(c, &spec(Workload::GetSerializable, 256, GETS)).await?;
    let rss_mib = c.rss_mib() / 3.0;
    let disk_mib = (0..3)
        .map(|i| dir_bytes(&c.members[i].data_dir))
        .sum::<u64>() as f64
        / 3.0
        / (1 << 20) as f64;
    let restart_s = restart(c, follower(c).await?).await?;
    let catchup_s = catch_up(c, base, joined).await?;
    let (compact_s, defrag_s) = compact_and_defrag(c).await?;
    Ok(Point {
        keys,
        put,
        get,
        rss_mib,
        disk_mib,
        restart_s,
        catchup_s,
        compact_s,
        defrag_s,
    })
}

fn kv(endpoint: &str, timeout: Duration) -> Result<KvClient<Channel>> {
    Ok(KvClient::new(channel_within(endpoint, timeout)?))
}

/// Puts keys `from..to` in order, `FILL_IN_FLIGHT` at once.
async fn fill(c: &ClusterProc, from: u64, to: u64) -> Result<()> {
    let next = Arc::new(AtomicU64::new(from));
    let clients: Vec<KvClient<Channel>> = (0..FILL_CONNECTIONS)
        .map(|i| kv(&c.endpoints[i % c.endpoints.len()], Duration::from_secs(30)))
        .collect::<Result<_>>()?;
    let tasks: Vec<_> = (0..FILL_IN_FLIGHT)
        .map(|w| {
            let mut kv = clients[w % clients.len()].clone();
            let next = next.clone();
            tokio::spawn(async move {
                let value = vec![b'v'; VALUE_BYTES];
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= to {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let mut attempt = 0;
                    while let Err(e) = kv
                        .put(PutRequest {
                            key: key(k),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await
                    {
                        attempt += 1;
                        if attempt >= FILL_ATTEMPTS_MAX {
                            bail!("filling key {k}: {}", e.message());
                        }
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The current revision, from member 0.
async fn revision(c: &ClusterProc) -> Result<i64> {
    let r = kv(&c.endpoints[0], Duration::from_secs(10))?
        .range(RangeRequest {
            key: key(0),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().header.map_or(0, |h| h.revision))
}

/// Polls `endpoint` with linearizable reads until one succeeds with at
/// least `revision`; the time since `from`.
async fn serving(endpoint: &str, revision: i64, from: Instant) -> Result<f64> {
    loop {
        let r = kv(endpoint, Duration::from_secs(2))?
            .range(RangeRequest {
                key: key(0),
                ..Default::default()
            })
            .await;
        if let Ok(r) = r {
            if r.into_inner().header.map_or(0, |h| h.revision) >= revision {
                return Ok(from.elapsed().as_secs_f64());
            }
        }
        if from.elapsed() > SERVE_TIMEOUT {
            bail!("{endpoint} did not serve within {SERVE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A member that is not the leader: restarting the leader would add an
/// election to what is measured, and which member leads is chance.
async fn follower(c: &ClusterProc) -> Result<usize> {
    for (i, ep) in c.endpoints.iter().enumerate().rev() {
        let ch = channel_within(ep, Duration::from_secs(10))?;
        let s = MaintenanceClient::new(ch)
            .status(StatusRequest {})
            .await
            .with_context(|| format!("status of {ep}"))?
            .into_inner();
        if s.header.is_some_and(|h| h.member_id != s.leader) && s.leader != 0 {
            return Ok(i);
        }
    }
    bail!("no member says it follows a leader")
}

/// Stops member `i` (SIGTERM, as an operator's restart), starts it again
/// with its data, and times it to its first linearizable read.
async fn restart(c: &mut ClusterProc, i: usize) -> Result<f64> {
    let rev = revision(c).await?;
    let child = &mut c.children[i];
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    let started = Instant::now();
    c.children[i] = compare::spawn(&c.bin, &c.members[i])?;
    serving(&c.endpoints[i], rev, started).await
}

/// Adds a fourth member with an empty data directory (a new name and
/// ports per size: a removed member's ID is never reused), times it to its
/// first linearizable read, then removes it again.
async fn catch_up(c: &mut ClusterProc, base: u16, joined: u16) -> Result<f64> {
    let rev = revision(c).await?;
    let name = format!("j{}", joined + 1);
    let client_url = format!("http://127.0.0.1:{}", base + 4 + joined);
    let peer_url = format!("http://127.0.0.1:{}", base + 14 + joined);
    let ch = channel_within(&c.endpoints[0], Duration::from_secs(30))?;
    // etcd refuses a member add until every member has been up for 5 s
    // ("unhealthy cluster"), as after `restart`; that wait is not the
    // catch-up measured here.
    let deadline = Instant::now() + Duration::from_secs(60);
    let added = loop {
        let r = ClusterClient::new(ch.clone())
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![peer_url.clone()],
                is_learner: false,
            })
            .await;
        match r {
            Ok(r) => break r.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e).context("member add"),
        }
    };
    let id = added
        .member
        .map(|m| m.id)
        .context("member add: no member")?;
    let initial = c
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .chain([format!("{name}={peer_url}")])
        .collect::<Vec<_>>()
        .join(",");
    let dir = c.members[0]
        .data_dir
        .parent()
        .context("member data dir")?
        .to_path_buf();
    let member = launch::Member {
        name: name.clone(),
        data_dir: dir.join(&name),
        client_url: client_url.clone(),
        peer_url,
        cluster: launch::Cluster::Existing { initial },
        tls: None,
        log: dir.join(format!("{name}.log")),
        extra: c.members[0].extra.clone(),
    };
    let started = Instant::now();
    let mut child = compare::spawn(&c.bin, &member)?;
    let took = serving(client_url.trim_start_matches("http://"), rev, started).await;
    let removed = ClusterClient::new(ch)
        .member_remove(MemberRemoveRequest { id })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&member.data_dir);
    removed.context("member remove")?;
    took
}

/// Compacts every revision so far (physical: the call returns when the
/// serving member has done it), then defragments each member in turn.
async fn compact_and_defrag(c: &ClusterProc) -> Result<(f64, f64)> {
    let rev = revision(c).await?;
    let t = Instant::now();
    kv(&c.endpoints[0], MAINTENANCE_TIMEOUT)?
        .compact(CompactionRequest {
            revision: rev,
            physical: true,
        })
        .await
        .context("compact")?;
    let compact_s = t.elapsed().as_secs_f64();
    let mut defrag_s = 0.0;
    for ep in &c.endpoints {
        let ch = channel_within(ep, MAINTENANCE_TIMEOUT)?;
        let t = Instant::now();
        MaintenanceClient::new(ch)
            .defragment(DefragmentRequest {})
            .await
            .with_context(|| format!("defragment {ep}"))?;
        defrag_s += t.elapsed().as_secs_f64();
    }
    Ok((compact_s, defrag_s / c.endpoints.len() as f64))
}

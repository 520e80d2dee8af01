//! The fault plan: every fault of a run, when it starts and ends, drawn
//! up front from the seed's fault stream. Faults overlap freely (a crash
//! during a partition, a clock jump on a lossy network); the shrinker
//! replays a failing seed with some of them left out.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// One fault.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The members in `side` are cut from the rest, both ways.
    Partition { side: Vec<usize> },
    /// Messages from `from` to everyone else are lost; the other way works.
    OneWay { from: usize },
    /// Every link drops, duplicates and delays (and so reorders) messages.
    Lossy {
        drop_permille: u32,
        duplicate_permille: u32,
        jitter_ms: u64,
    },
    /// The member's power goes out; it restarts at the fault's end with
    /// its synced writes and `keep_permille` of the unsynced batches after
    /// them (a prefix: a torn batch is dropped whole).
    Crash { member: usize, keep_permille: u32 },
    /// The member's clock jumps by `by_ms` (and back at the end).
    ClockJump { member: usize, by_ms: i64 },
    /// The member is removed from the cluster; at the end it joins again
    /// as a new member with an empty disk.
    Membership { member: usize },
    /// The member (`None`: whichever leads when the fault starts) is
    /// removed for good: the operator shrinks the cluster. What survives
    /// must keep every acknowledged write and elect a leader among what is
    /// left.
    Shrink { member: Option<usize> },
    /// `member` rotates the cluster's KEK (the secrets workload goes on).
    RotateKek { member: usize },
    /// `member` switches autolock on and `victim` restarts (so it comes
    /// back locked); at the end every locked member is unlocked with the
    /// key and autolock is switched off.
    Autolock { member: usize, victim: usize },
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub at_ms: u64,
    pub until_ms: u64,
    pub fault: Fault,
}

impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{} ms ", self.at_ms, self.until_ms)?;
        match &self.fault {
            Fault::Partition { side } => write!(f, "partition {side:?} | rest"),
            Fault::OneWay { from } => write!(f, "one-way: m{from} -> others lost"),
            Fault::Lossy {
                drop_permille,
                duplicate_permille,
                jitter_ms,
            } => write!(
                f,
                "lossy: drop {drop_permille}‰ duplicate {duplicate_permille}‰ jitter {jitter_ms} ms"
            ),
            Fault::Crash {
                member,
                keep_permille,
            } => write!(f, "crash m{member} (keeps {keep_permille}‰ of unsynced)"),
            Fault::ClockJump { member, by_ms } => write!(f, "clock m{member} {by_ms:+} ms"),
            Fault::Membership { member } => write!(f, "remove m{member}, then add it back"),
            Fault::Shrink { member: Some(m) } => write!(f, "remove m{m} for good"),
            Fault::Shrink { member: None } => write!(f, "remove the leader for good"),
            Fault::RotateKek { member } => write!(f, "rotate the KEK through m{member}"),
            Fault::Autolock { member, victim } => write!(
                f,
                "autolock on through m{member}, m{victim} restarts locked; unlock, autolock off"
            ),
        }
    }
}

/// Faults one every 400 to 2,000 ms, each lasting 200 to 2,500 ms, all
/// over before `until_ms` (the run then heals and converges). Then, from a
/// stream of their own (so the plans drawn before they existed are kept),
/// the cluster is shrunk for good in one run of six: once, or as far as
/// one member in one run of thirty.
pub fn plan(
    rng: &mut StdRng,
    shrink_rng: &mut StdRng,
    nodes: usize,
    until_ms: u64,
) -> Vec<Planned> {
    let mut out = random_faults(rng, nodes, until_ms);
    let shrinks = match shrink_rng.gen_range(0..30) {
        0 => nodes - 1,
        1..=4 => 1,
        _ => 0,
    };
    let mut members: Vec<usize> = (0..nodes).collect();
    members.shuffle(shrink_rng);
    for member in members.into_iter().take(shrinks) {
        let at_ms = shrink_rng.gen_range(1_000..until_ms.max(1_001));
        // Half of them the leader: its own removal is the harder case.
        let member = (!shrink_rng.gen_bool(0.5)).then_some(member);
        out.push(Planned {
            at_ms,
            until_ms: (at_ms + 2_000).min(until_ms.max(at_ms)),
            fault: Fault::Shrink { member },
        });
    }
    out
}

fn random_faults(rng: &mut StdRng, nodes: usize, until_ms: u64) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut at_ms = 1_000 + rng.gen_range(0..1_000);
    while at_ms < until_ms {
        let len_ms = rng.gen_range(200..2_500);
        out.push(Planned {
            at_ms,
            until_ms: (at_ms + len_ms).min(until_ms),
            fault: draw(rng, nodes),
        });
        at_ms += rng.gen_range(400..2_000);
    }
    out
}

fn draw(rng: &mut StdRng, nodes: usize) -> Fault {
    let member = rng.gen_range(0..nodes);
    match rng.gen_range(0..100) {
        0..=24 => {
            let mut all: Vec<usize> = (0..nodes).collect();
            all.shuffle(rng);
            let size = rng.gen_range(1..=nodes / 2);
            let mut side = all[..size].to_vec();
            side.sort_unstable();
            Fault::Partition { side }
        }
        25..=39 => Fault::OneWay { from: member },
        40..=59 => Fault::Lossy {
            drop_permille: rng.gen_range(0..300),
            duplicate_permille: rng.gen_range(0..100),
            jitter_ms: rng.gen_range(5..200),
        },
        60..=67 => Fault::Membership { member },
        68..=73 => Fault::RotateKek { member },
        74..=78 => Fault::Autolock {
            member,
            victim: (member + rng.gen_range(1..nodes)) % nodes,
        },
        79..=90 => Fault::Crash {
            member,
            // Half the crashes lose every unsynced write.
            keep_permille: if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(0..=1000)
            },
        },
        _ => Fault::ClockJump {
            member,
            by_ms: if rng.gen_bool(0.5) {
                rng.gen_range(500..4_000)
            } else {
                -rng.gen_range(500..4_000)
            },
        },
    }
}

//! Bugs planted on purpose, to prove the deterministic simulation finds
//! the kind of bug the real-binary fault suite cannot easily reach. They
//! exist only with the `planted-bugs` feature, which CI and releases never
//! enable: without it [`on`] is the constant `false` and every planted
//! branch is dead code the compiler drops.

/// The bugs there are to plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Entries and hard state are written without fsync before raft is
    /// told they are persisted: a crash loses acknowledged appends and votes.
    AckBeforeFsync = 1,
    /// A follower applies entries as soon as it appends them, before they
    /// are committed (and skips them when they are).
    FollowerAppliesUncommitted = 2,
    /// Followers expire leases by their own timers and propose the revokes.
    FollowerExpiresLeases = 3,
}

impl Bug {
    pub const ALL: [Bug; 3] = [
        Bug::AckBeforeFsync,
        Bug::FollowerAppliesUncommitted,
        Bug::FollowerExpiresLeases,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::FollowerAppliesUncommitted => "follower-applies-uncommitted",
            Bug::FollowerExpiresLeases => "follower-expires-leases",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(feature = "planted-bugs")]
static PLANTED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Plants `bug` for the whole process (or none). Refused in a build
/// without the feature.
pub fn plant(bug: Option<Bug>) -> Result<(), String> {
    #[cfg(feature = "planted-bugs")]
    {
        PLANTED.store(
            bug.map_or(0, |b| b as u8),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
    #[cfg(not(feature = "planted-bugs"))]
    match bug {
        None => Ok(()),
        Some(b) => Err(format!(
            "cannot plant {}: built without the planted-bugs feature \
             (cargo build -p secretd-sim --features planted-bugs)",
            b.name()
        )),
    }
}

/// Whether `bug` is planted.
#[inline]
pub fn on(bug: Bug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        PLANTED.load(std::sync::atomic::Ordering::Relaxed) == bug as u8
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

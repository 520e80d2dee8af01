//! The limit-probing client (`crate::probes`): every few hundred
//! milliseconds a request at or just past an admission limit goes to a
//! random member through the same `Node` calls the API makes, and what
//! admission says is checked against what it must say.

use rand::Rng;
use secretd_store::StoreError;

use super::*;
use crate::probes::{self, ProbeRequest};

/// Between two probes, at most (the first comes after the first election).
const PROBE_EVERY_MS_MAX: u64 = 600;

impl World {
    pub(super) fn probe_turn(&mut self) {
        if self.settling {
            return;
        }
        let next = self.now_ms + self.probe_rng.gen_range(100..PROBE_EVERY_MS_MAX);
        self.at(next, Ev::Probe);
        let ups = self.up_members();
        if ups.is_empty() {
            return;
        }
        let slot = ups[self.probe_rng.gen_range(0..ups.len())];
        self.probes_sent += 1;
        let probe = probes::draw(&mut self.probe_rng, self.probes_sent);
        let node = self.members[slot].up.as_ref().expect("up").node.clone();
        let (what, refused_with) = (probe.what, probe.refused_with);
        let what_late = what.clone();
        self.spawn_on(
            vec![slot],
            async move {
                let got = match probe.request {
                    ProbeRequest::Txn(t) => node.txn(t, None).await.map(drop),
                    ProbeRequest::Put(p) => node.put(p, None).await.map(drop),
                    ProbeRequest::DeleteRange(d) => node.delete_range(d, None).await.map(drop),
                    ProbeRequest::LeaseGrant { id, ttl } => {
                        node.lease_grant(ttl, id, None).await.map(drop)
                    }
                };
                Done::Probe {
                    slot,
                    what,
                    refused_with,
                    got: Some(got),
                }
            },
            Done::Probe {
                slot,
                what: what_late,
                refused_with: None,
                got: None,
            },
        );
        self.schedule_run(slot);
    }

    /// What admission said against what it must say (`got: None`: no
    /// answer in time, which a limit's refusal never is: it is local).
    pub(super) fn probe_done(
        &mut self,
        slot: usize,
        what: String,
        refused_with: Option<StoreError>,
        got: Option<Result<(), StoreError>>,
    ) {
        let limit_error = |e: &StoreError| {
            matches!(
                e,
                StoreError::TxnTooDeep
                    | StoreError::TooManyOps
                    | StoreError::RequestTooLarge
                    | StoreError::LeaseTtlTooLarge
            )
        };
        let wrong = match (&refused_with, &got) {
            (Some(want), Some(Err(e))) if e == want => None,
            (Some(want), got) => Some(format!("must be refused with \"{want}\", got {got:?}")),
            (None, Some(Err(e))) if limit_error(e) => Some(format!("at the limit, refused: {e}")),
            (None, _) => None,
        };
        self.trace
            .note(self.now_ms, format!("probe m{slot}: {what}: {got:?}"));
        if let Some(wrong) = wrong {
            self.invariants.violations.push(format!(
                "{} ms: admission on m{slot}: {what}: {wrong}",
                self.now_ms
            ));
        }
    }
}

//! Synthetic histories for measuring the checker: `clients` processes run
//! against a linearizable in-memory register or key-value store, each
//! operation taking effect at a random moment between its invocation and
//! its completion, so the history is linearizable by construction. Some
//! operations time out (`:info`): they take effect or not, at random, and
//! their process is replaced by a fresh one, as Jepsen does.
//!
//! `bad` plants one anomaly, in the second half of the history: a read
//! returns a value that a completed write had already replaced before the
//! read was invoked. Values are unique, so
//! the state never returns to the stale one and the history is then not
//! linearizable by construction.
//!
//! The output is text in the formats `parse` reads (Jepsen's register log,
//! EDN maps for key-value), so generated files go through `jepsen check`
//! like recorded ones.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub seed: u64,
    pub clients: usize,
    /// Operations invoked in total.
    pub ops: usize,
    /// Keys of the key-value history (ignored for the register).
    pub keys: usize,
    /// Plant one stale read.
    pub bad: bool,
    /// Operations that time out (`:info`), in percent.
    pub timeout_percent: u32,
}

/// Per-tick chance that an idle client invokes, in percent.
const INVOKE_PERCENT: u32 = 30;
/// Ticks from invocation to effect, and from effect to completion, at most.
const PHASE_TICKS_MAX: u64 = 12;

#[derive(Clone, Debug)]
enum Input {
    Read,
    Write(String),
    /// Register: compare-and-set; key-value: append.
    Change(String, String),
}

#[derive(Clone, Debug)]
enum Result {
    Read(Option<String>),
    Done,
    Cas(bool),
}

struct Pending {
    process: u64,
    key: usize,
    input: Input,
    effect_at: u64,
    complete_at: u64,
    timeout: bool,
    /// Filled in when the operation takes effect.
    result: Option<Result>,
}

/// The event lines, in order.
struct Writer {
    kv: bool,
    lines: Vec<String>,
}

impl Writer {
    fn event(&mut self, process: u64, kind: &str, key: usize, input: &Input, out: Option<&Result>) {
        if self.kv {
            let (f, value) = match (input, out) {
                (Input::Read, Some(Result::Read(v))) => {
                    (":get", format!("{:?}", v.clone().unwrap_or_default()))
                }
                (Input::Read, _) => (":get", "nil".to_string()),
                (Input::Write(v), _) => (":put", format!("{v:?}")),
                (Input::Change(_, v), _) => (":append", format!("{v:?}")),
            };
            self.lines.push(format!(
                "{{:process {process}, :type {kind}, :f {f}, :key \"{key}\", :value {value}}}"
            ));
        } else {
            let (f, value) = match (input, out) {
                (Input::Read, Some(Result::Read(v))) => {
                    (":read", v.clone().unwrap_or_else(|| "nil".into()))
                }
                (Input::Read, _) => (":read", "nil".into()),
                (Input::Write(v), _) => (":write", v.clone()),
                (Input::Change(a, b), _) => (":cas", format!("[{a} {b}]")),
            };
            let kind = match (kind, out) {
                (":ok", Some(Result::Cas(false))) => ":fail",
                (k, _) => k,
            };
            self.lines.push(format!(
                "INFO  jepsen.util - {process}\t{kind}\t{f}\t{value}"
            ));
        }
    }
}

/// A register history (Jepsen's log format): reads, writes and CAS on one
/// register.
pub fn register(spec: Spec) -> String {
    generate(spec, false)
}

/// A key-value history (EDN maps): gets, puts and appends on `keys` keys.
pub fn kv(spec: Spec) -> String {
    generate(spec, true)
}

fn generate(spec: Spec, kv: bool) -> String {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let keys = if kv { spec.keys.max(1) } else { 1 };
    let mut state: Vec<Option<String>> = vec![if kv { Some(String::new()) } else { None }; keys];
    // Each key's states so far, with the tick each was replaced by an
    // operation that completed (for the planted stale read).
    let mut replaced: Vec<Vec<(String, u64)>> = vec![Vec::new(); keys];
    let mut out = Writer {
        kv,
        lines: Vec::new(),
    };
    let mut slots: Vec<Option<Pending>> = (0..spec.clients).map(|_| None).collect();
    let mut process: Vec<u64> = (0..spec.clients as u64).collect();
    let (mut invoked, mut counter, mut planted) = (0usize, 0u64, !spec.bad);
    // The stale read goes in the second half, where the search is deepest.
    let plant_after = rng.gen_range(spec.ops / 2..spec.ops.max(1));
    let mut tick = 0u64;
    while invoked < spec.ops || slots.iter().any(Option::is_some) {
        tick += 1;
        for (c, slot) in slots.iter_mut().enumerate() {
            let Some(p) = slot else {
                if invoked < spec.ops && rng.gen_ratio(INVOKE_PERCENT, 100) {
                    invoked += 1;
                    counter += 1;
                    let key = rng.gen_range(0..keys);
                    let input = pick_input(&mut rng, kv, &state[key], process[c], counter);
                    out.event(process[c], ":invoke", key, &input, None);
                    let effect_at = tick + rng.gen_range(0..=PHASE_TICKS_MAX);
                    *slot = Some(Pending {
                        process: process[c],
                        key,
                        input,
                        effect_at,
                        complete_at: effect_at + rng.gen_range(1..=PHASE_TICKS_MAX),
                        timeout: rng.gen_ratio(spec.timeout_percent.min(100), 100),
                        result: None,
                    });
                }
                continue;
            };
            if p.result.is_none() && tick >= p.effect_at {
                // A timed-out operation takes effect or not, at random.
                let applies = !p.timeout || rng.gen_bool(0.5);
                let before = state[p.key].clone();
                p.result = Some(apply(&mut state[p.key], &p.input, applies));
                // A timed-out change may be linearized anywhere after its
                // invocation, so only a completed one makes a value stale.
                if state[p.key] != before && !p.timeout {
                    replaced[p.key].push((before.unwrap_or_default(), tick));
                }
            }
            if tick < p.complete_at {
                continue;
            }
            let p = slot.take().expect("pending");
            if p.timeout {
                // Reads that time out constrain nothing; writes stay open.
                let kind = if matches!(p.input, Input::Read) && !kv {
                    ":fail"
                } else {
                    ":info"
                };
                out.event(p.process, kind, p.key, &p.input, None);
                process[c] += spec.clients as u64;
                continue;
            }
            let mut result = p.result.expect("took effect");
            if !planted && invoked > plant_after && matches!(p.input, Input::Read) {
                // The stale value: one replaced before this read began.
                let invoked_at = p.effect_at.saturating_sub(PHASE_TICKS_MAX);
                if let Some((old, _)) = replaced[p.key]
                    .iter()
                    .rev()
                    .find(|(_, at)| *at + PHASE_TICKS_MAX * 2 < invoked_at)
                {
                    result = Result::Read(Some(old.clone()).filter(|s| kv || !s.is_empty()));
                    planted = true;
                }
            }
            out.event(p.process, ":ok", p.key, &p.input, Some(&result));
        }
    }
    let mut text = out.lines.join("\n");
    text.push('\n');
    text
}

fn pick_input(
    rng: &mut StdRng,
    kv: bool,
    state: &Option<String>,
    process: u64,
    counter: u64,
) -> Input {
    let fresh = if kv {
        format!("x {process} {counter} y")
    } else {
        counter.to_string()
    };
    match rng.gen_range(0..100) {
        0..=49 => Input::Read,
        50..=59 => Input::Write(fresh),
        _ if kv => Input::Change(String::new(), fresh),
        // A CAS that succeeds when it meets the current value.
        _ => Input::Change(state.clone().unwrap_or_else(|| "0".into()), fresh),
    }
}

fn apply(state: &mut Option<String>, input: &Input, applies: bool) -> Result {
    match input {
        Input::Read => Result::Read(state.clone()),
        Input::Write(v) => {
            if applies {
                *state = Some(v.clone());
            }
            Result::Done
        }
        Input::Change(from, v) if from.is_empty() => {
            if applies {
                state.get_or_insert_with(String::new).push_str(v);
            }
            Result::Done
        }
        Input::Change(from, to) => {
            let ok = state.as_deref() == Some(from.as_str());
            if ok && applies {
                *state = Some(to.clone());
            }
            Result::Cas(ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{self, model, parse, Verdict};
    use std::time::Duration;

    fn spec(bad: bool) -> Spec {
        Spec {
            seed: 7,
            clients: 10,
            ops: 400,
            keys: 4,
            bad,
            timeout_percent: 1,
        }
    }

    #[test]
    fn generated_histories_get_their_verdicts() {
        let budget = Duration::from_secs(30);
        for bad in [false, true] {
            let ops = parse::register_log(&register(spec(bad))).unwrap();
            let v = check::check_partitioned::<model::Register>(vec![ops], budget);
            assert_eq!(
                v.word(),
                if bad {
                    "not-linearizable"
                } else {
                    "linearizable"
                }
            );
            let parts = parse::kv_edn(&kv(spec(bad))).unwrap();
            let v =
                check::check_partitioned::<model::KvString>(parts.into_values().collect(), budget);
            assert!(
                matches!(
                    (bad, &v),
                    (false, Verdict::Linearizable) | (true, Verdict::NotLinearizable { .. })
                ),
                "bad={bad}: {}",
                v.word()
            );
        }
    }

    #[test]
    fn same_seed_same_history() {
        assert_eq!(kv(spec(true)), kv(spec(true)));
        assert_ne!(
            kv(spec(false)),
            kv(Spec {
                seed: 8,
                ..spec(false)
            })
        );
    }
}

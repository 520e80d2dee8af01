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
    let mut run = Run::new(spec, kv);
    let mut slots: Vec<Option<Pending>> = (0..spec.clients).map(|_| None).collect();
    while run.invoked < spec.ops || slots.iter().any(Option::is_some) {
        run.tick += 1;
        for (c, slot) in slots.iter_mut().enumerate() {
            let Some(p) = slot else {
                *slot = run.maybe_invoke(c);
                continue;
            };
            run.maybe_take_effect(p);
            if run.tick < p.complete_at {
                continue;
            }
            let p = slot.take().expect("pending");
            run.complete(c, p);
        }
    }
    let mut text = run.out.lines.join("\n");
    text.push('\n');
    text
}

/// A synthetic history being made: the store's state, the clients'
/// process numbers and the events written so far.
struct Run {
    spec: Spec,
    kv: bool,
    keys: usize,
    rng: StdRng,
    state: Vec<Option<String>>,
    /// Each key's states so far, with the tick each was replaced by an
    /// operation that completed (for the planted stale read).
    replaced: Vec<Vec<(String, u64)>>,
    out: Writer,
    process: Vec<u64>,
    invoked: usize,
    counter: u64,
    planted: bool,
    plant_after: usize,
    tick: u64,
}

impl Run {
    fn new(spec: Spec, kv: bool) -> Run {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let keys = if kv { spec.keys.max(1) } else { 1 };
        // The stale read goes in the second half, where the search is deepest.
        let plant_after = rng.gen_range(spec.ops / 2..spec.ops.max(1));
        Run {
            spec,
            kv,
            keys,
            rng,
            state: vec![if kv { Some(String::new()) } else { None }; keys],
            replaced: vec![Vec::new(); keys],
            out: Writer {
                kv,
                lines: Vec::new(),
            },
            process: (0..spec.clients as u64).collect(),
            invoked: 0,
            counter: 0,
            planted: !spec.bad,
            plant_after,
            tick: 0,
        }
    }

    /// An idle client `c` may invoke its next operation.
    fn maybe_invoke(&mut self, c: usize) -> Option<Pending> {
        if self.invoked >= self.spec.ops || !self.rng.gen_ratio(INVOKE_PERCENT, 100) {
            return None;
        }
        self.invoked += 1;
        self.counter += 1;
        let key = self.rng.gen_range(0..self.keys);
        let input = pick_input(
            &mut self.rng,
            self.kv,
            &self.state[key],
            self.process[c],
            self.counter,
        );
        self.out
            .event(self.process[c], ":invoke", key, &input, None);
        let effect_at = self.tick + self.rng.gen_range(0..=PHASE_TICKS_MAX);
        Some(Pending {
            process: self.process[c],
            key,
            input,
            effect_at,
            complete_at: effect_at + self.rng.gen_range(1..=PHASE_TICKS_MAX),
            timeout: self.rng.gen_ratio(self.spec.timeout_percent.min(100), 100),
            result: None,
        })
    }

    /// `p` takes effect on the store, once, when its moment has come.
    fn maybe_take_effect(&mut self, p: &mut Pending) {
        if p.result.is_some() || self.tick < p.effect_at {
            return;
        }
        // A timed-out operation takes effect or not, at random.
        let applies = !p.timeout || self.rng.gen_bool(0.5);
        let before = self.state[p.key].clone();
        p.result = Some(apply(&mut self.state[p.key], &p.input, applies));
        // A timed-out change may be linearized anywhere after its
        // invocation, so only a completed one makes a value stale.
        if self.state[p.key] != before && !p.timeout {
            self.replaced[p.key].push((before.unwrap_or_default(), self.tick));
        }
    }

    /// Client `c`'s operation `p` completes: timed out, or its result
    /// (the planted stale read, when its turn has come).
    fn complete(&mut self, c: usize, p: Pending) {
        if p.timeout {
            // Reads that time out constrain nothing; writes stay open.
            let kind = if matches!(p.input, Input::Read) && !self.kv {
                ":fail"
            } else {
                ":info"
            };
            self.out.event(p.process, kind, p.key, &p.input, None);
            self.process[c] += self.spec.clients as u64;
            return;
        }
        let mut result = p.result.expect("took effect");
        if !self.planted && self.invoked > self.plant_after && matches!(p.input, Input::Read) {
            // The stale value: one replaced before this read began.
            let invoked_at = p.effect_at.saturating_sub(PHASE_TICKS_MAX);
            if let Some((old, _)) = self.replaced[p.key]
                .iter()
                .rev()
                .find(|(_, at)| *at + PHASE_TICKS_MAX * 2 < invoked_at)
            {
                result = Result::Read(Some(old.clone()).filter(|s| self.kv || !s.is_empty()));
                self.planted = true;
            }
        }
        self.out
            .event(p.process, ":ok", p.key, &p.input, Some(&result));
    }
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

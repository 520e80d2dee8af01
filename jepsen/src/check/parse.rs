//! Readers for Jepsen history formats.
//!
//! Both pair each completion with its process's open invocation. `:info`
//! (and an invocation still open at the end) is an unknown outcome, kept
//! open to the end of the history. `:fail` means the operation did not take
//! effect: it is dropped, except a failed CAS, which observed a value other
//! than the expected one.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use super::history::{Op, Outcome};
use super::model::{KvOp, RegisterOp, RegisterOut};

#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

fn kind(s: &str, line: usize) -> Result<Kind, ParseError> {
    match s {
        ":invoke" => Ok(Kind::Invoke),
        ":ok" => Ok(Kind::Ok),
        ":fail" => Ok(Kind::Fail),
        ":info" => Ok(Kind::Info),
        other => err(line, format!("unknown event type {other:?}")),
    }
}

/// Pairs invocations with completions for one process-keyed stream.
struct Pairing<I, O> {
    open: HashMap<u64, (u64, I, usize)>,
    ops: Vec<Op<I, O>>,
}

impl<I: Clone, O> Pairing<I, O> {
    fn new() -> Self {
        Pairing {
            open: HashMap::new(),
            ops: Vec::new(),
        }
    }

    fn invoke(&mut self, process: u64, at: u64, input: I, line: usize) {
        if let Some((inv, inp, l)) = self.open.insert(process, (at, input, line)) {
            // A process that invokes again without completing: the earlier
            // operation's fate is unknown.
            self.ops.push(Op {
                process,
                input: inp,
                outcome: Outcome::Unknown,
                invoke: inv,
                complete: u64::MAX,
                line: l,
            });
        }
    }

    /// Completes the open operation; `None` output drops it (it failed).
    fn complete(
        &mut self,
        process: u64,
        at: u64,
        outcome: Option<Outcome<O>>,
        line: usize,
    ) -> Result<(), ParseError> {
        let Some((inv, input, l)) = self.open.remove(&process) else {
            return err(
                line,
                format!("completion for process {process}, which has no open invocation"),
            );
        };
        if let Some(outcome) = outcome {
            self.ops.push(Op {
                process,
                input,
                outcome,
                invoke: inv,
                complete: at,
                line: l,
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Op<I, O>> {
        let mut rest: Vec<_> = self.open.drain().collect();
        rest.sort_by_key(|(_, (inv, _, _))| *inv);
        for (process, (inv, input, l)) in rest {
            self.ops.push(Op {
                process,
                input,
                outcome: Outcome::Unknown,
                invoke: inv,
                complete: u64::MAX,
                line: l,
            });
        }
        self.ops.sort_by_key(|o| o.invoke);
        self.ops
    }
}

fn int(s: &str, line: usize) -> Result<i64, ParseError> {
    s.parse()
        .or_else(|_| err(line, format!("expected an integer, found {s:?}")))
}

/// Jepsen's single-register log (`INFO  jepsen.util - P :type :f value`).
pub fn register_log(text: &str) -> Result<Vec<Op<RegisterOp, RegisterOut>>, ParseError> {
    let mut p = Pairing::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let Some(rest) = raw.split_once("jepsen.util - ").map(|(_, r)| r) else {
            continue;
        };
        let toks: Vec<&str> = rest.split_whitespace().collect();
        let Some(process) = toks.first().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        }; // nemesis etc.
        if toks.len() < 3 {
            return err(line, "truncated event");
        }
        let k = kind(toks[1], line)?;
        let value = toks[3..].join(" ");
        let at = line as u64;
        match (k, toks[2]) {
            (Kind::Invoke, ":read") => p.invoke(process, at, RegisterOp::Read, line),
            (Kind::Invoke, ":write") => {
                p.invoke(process, at, RegisterOp::Write(int(&value, line)?), line)
            }
            (Kind::Invoke, ":cas") => {
                let (a, b) = cas_pair(&value, line)?;
                p.invoke(process, at, RegisterOp::Cas(a, b), line)
            }
            (Kind::Ok, ":read") => {
                let v = if value == "nil" {
                    None
                } else {
                    Some(int(&value, line)?)
                };
                p.complete(process, at, Some(Outcome::Ok(RegisterOut::Value(v))), line)?
            }
            (Kind::Ok, ":write") => {
                p.complete(process, at, Some(Outcome::Ok(RegisterOut::Done)), line)?
            }
            (Kind::Ok, ":cas") => {
                p.complete(process, at, Some(Outcome::Ok(RegisterOut::Cas(true))), line)?
            }
            (Kind::Fail, ":cas") => p.complete(
                process,
                at,
                Some(Outcome::Ok(RegisterOut::Cas(false))),
                line,
            )?,
            (Kind::Fail, ":read" | ":write") => p.complete(process, at, None, line)?,
            (Kind::Info, ":read") => p.complete(process, at, None, line)?, // constrains nothing
            (Kind::Info, ":write" | ":cas") => {
                p.complete(process, at, Some(Outcome::Unknown), line)?
            }
            (_, f) => return err(line, format!("unknown operation {f:?}")),
        }
    }
    Ok(p.finish())
}

fn cas_pair(v: &str, line: usize) -> Result<(i64, i64), ParseError> {
    let inner = v.trim().strip_prefix('[').and_then(|s| s.strip_suffix(']'));
    let parts: Vec<&str> = inner
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    match parts.as_slice() {
        [a, b] => Ok((int(a, line)?, int(b, line)?)),
        _ => err(line, format!("expected [from to], found {v:?}")),
    }
}

/// One EDN map per line, `{:process 0, :type :ok, :f :get, :key "k", :value "v"}`.
/// Returns the operations of each key, keys in order.
pub type KvHistory = BTreeMap<String, Vec<Op<KvOp, Option<String>>>>;

pub fn kv_edn(text: &str) -> Result<KvHistory, ParseError> {
    let mut p: Pairing<(String, KvOp), Option<String>> = Pairing::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let m = edn_map(raw, line)?;
        let get = |k: &str| {
            m.get(k).ok_or_else(|| ParseError {
                line,
                msg: format!("missing {k}"),
            })
        };
        let process: u64 = match get(":process")? {
            Edn::Int(i) if *i >= 0 => *i as u64,
            _ => continue, // the nemesis (:process :nemesis) completes nothing
        };
        let (Edn::Keyword(t), Edn::Keyword(f), Edn::Str(key)) =
            (get(":type")?, get(":f")?, get(":key")?)
        else {
            return err(line, ":type and :f must be keywords and :key a string");
        };
        let value = match get(":value")? {
            Edn::Str(s) => Some(s.clone()),
            Edn::Nil => None,
            _ => return err(line, ":value must be a string or nil"),
        };
        let at = line as u64;
        match (kind(t, line)?, f.as_str()) {
            (Kind::Invoke, ":get") => p.invoke(process, at, (key.clone(), KvOp::Get), line),
            (Kind::Invoke, ":put" | ":append") => {
                let v = value.ok_or_else(|| ParseError {
                    line,
                    msg: format!("{f} without a value"),
                })?;
                let op = if f == ":put" {
                    KvOp::Put(v)
                } else {
                    KvOp::Append(v)
                };
                p.invoke(process, at, (key.clone(), op), line)
            }
            (Kind::Ok, ":get") => p.complete(
                process,
                at,
                Some(Outcome::Ok(Some(value.unwrap_or_default()))),
                line,
            )?,
            (Kind::Ok, ":put" | ":append") => {
                p.complete(process, at, Some(Outcome::Ok(None)), line)?
            }
            (Kind::Fail, _) => p.complete(process, at, None, line)?,
            (Kind::Info, ":get") => p.complete(process, at, None, line)?,
            (Kind::Info, _) => p.complete(process, at, Some(Outcome::Unknown), line)?,
            (_, f) => return err(line, format!("unknown operation {f:?}")),
        }
    }
    Ok(by_key(p.finish()))
}

/// Operations on (key, op) regrouped as each key's history, keys in order.
fn by_key(ops: Vec<Op<(String, KvOp), Option<String>>>) -> KvHistory {
    let mut by_key: KvHistory = BTreeMap::new();
    for op in ops {
        let (key, input) = op.input;
        by_key.entry(key).or_default().push(Op {
            process: op.process,
            input,
            outcome: op.outcome,
            invoke: op.invoke,
            complete: op.complete,
            line: op.line,
        });
    }
    by_key
}

#[derive(Debug, PartialEq)]
enum Edn {
    Nil,
    Int(i64),
    Str(String),
    Keyword(String),
}

/// A flat EDN map of scalars: all the corpus and our own histories use.
fn edn_map(s: &str, line: usize) -> Result<HashMap<String, Edn>, ParseError> {
    let body = s.trim().strip_prefix('{').and_then(|b| b.strip_suffix('}'));
    let Some(body) = body else {
        return err(line, "expected an EDN map {...}");
    };
    let mut chars = body.chars().peekable();
    let mut out = HashMap::new();
    let mut expect_key: Option<String> = None;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let tok = if c == '"' {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(e) => v.push(e),
                        None => return err(line, "unterminated string"),
                    },
                    Some(ch) => v.push(ch),
                    None => return err(line, "unterminated string"),
                }
            }
            Edn::Str(v)
        } else {
            let mut t = String::new();
            while chars
                .peek()
                .is_some_and(|c| !c.is_whitespace() && *c != ',')
            {
                t.push(chars.next().unwrap_or(' '));
            }
            if t == "nil" {
                Edn::Nil
            } else if t.starts_with(':') {
                Edn::Keyword(t)
            } else if let Ok(i) = t.parse() {
                Edn::Int(i)
            } else {
                return err(line, format!("unsupported EDN token {t:?}"));
            }
        };
        match expect_key.take() {
            None => match tok {
                Edn::Keyword(k) => expect_key = Some(k),
                other => return err(line, format!("map key must be a keyword, found {other:?}")),
            },
            Some(k) => {
                out.insert(k, tok);
            }
        }
    }
    if let Some(k) = expect_key {
        return err(line, format!("key {k} has no value"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lines_and_unknowns() {
        let h = "INFO  jepsen.util - 0\t:invoke\t:write\t3\n\
                 INFO  jepsen.util - 1\t:invoke\t:cas\t[3 4]\n\
                 INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n\
                 INFO  jepsen.util - 0\t:info\t:write\t:timed-out\n\
                 INFO  jepsen.util - 1\t:fail\t:cas\t[3 4]\n\
                 INFO  jepsen.util - 2   :invoke :read   nil\n\
                 INFO  jepsen.util - 2   :fail :read   :timed-out\n";
        let ops = register_log(h).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].outcome, Outcome::Unknown);
        assert_eq!(ops[1].outcome, Outcome::Ok(RegisterOut::Cas(false)));
        assert!(register_log("INFO  jepsen.util - 0\t:invoke\t:write\tx\n").is_err());
        assert!(register_log("INFO  jepsen.util - 0\t:ok\t:write\t1\n").is_err());
    }

    #[test]
    fn edn_maps() {
        let h = "{:process 0, :type :invoke, :f :append, :key \"k\", :value \"a\"}\n\
                 {:process 1, :type :invoke, :f :get, :key \"k\", :value nil}\n\
                 {:process 0, :type :ok, :f :append, :key \"k\", :value \"a\"}\n\
                 {:process 1, :type :ok, :f :get, :key \"k\", :value \"a\"}\n";
        let by_key = kv_edn(h).unwrap();
        assert_eq!(by_key["k"].len(), 2);
        assert_eq!(by_key["k"][1].outcome, Outcome::Ok(Some("a".into())));
        assert!(kv_edn("{:process 0 :type}").is_err());
        assert!(kv_edn("not a map").is_err());
    }
}

//! The run's history: every client invocation and completion, and every
//! nemesis action, with nanoseconds since the start of the run. Written to
//! `history.jsonl` as it happens (one JSON object per line) and kept in
//! memory for the checkers and the report.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// How an event ends an operation, in Jepsen's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Invoke,
    /// Completed, with this result.
    Ok,
    /// Definitely did not happen.
    Fail,
    /// Unknown: timed out or the connection broke; it may have happened.
    Info,
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub index: u64,
    pub time_ns: u64,
    /// A client process number, or -1 for the nemesis.
    pub process: i64,
    #[serde(rename = "type")]
    pub kind: Type,
    pub f: String,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Inner {
    events: Vec<Event>,
    out: std::io::BufWriter<std::fs::File>,
}

#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl Recorder {
    pub fn create(path: &std::path::Path) -> anyhow::Result<Recorder> {
        let f = std::fs::File::create(path)?;
        Ok(Recorder {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                out: std::io::BufWriter::new(f),
            })),
        })
    }

    pub fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends an event; returns its index (the history's total order).
    pub fn record(
        &self,
        process: i64,
        kind: Type,
        f: &str,
        value: Value,
        error: Option<String>,
    ) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = g.events.len() as u64;
        let e = Event {
            index,
            time_ns: self.elapsed_ns(),
            process,
            kind,
            f: f.to_string(),
            value,
            error,
        };
        if let Ok(line) = serde_json::to_string(&e) {
            let _ = writeln!(g.out, "{line}");
        }
        g.events.push(e);
        index
    }

    pub fn nemesis(&self, f: &str, value: Value) {
        self.record(-1, Type::Info, f, value, None);
    }

    pub fn flush(&self) {
        let _ = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .out
            .flush();
    }

    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .clone()
    }

    /// (ok, fail, info) completions so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = (0, 0, 0);
        for e in g.events.iter().filter(|e| e.process >= 0) {
            match e.kind {
                Type::Ok => c.0 += 1,
                Type::Fail => c.1 += 1,
                Type::Info => c.2 += 1,
                Type::Invoke => {}
            }
        }
        c
    }
}

/// How an invocation ended.
pub enum End<'a> {
    Ok(&'a Event),
    Fail(&'a Event),
    /// Recorded unknown (`Some`), or never completed before the run ended.
    Unknown(Option<&'a Event>),
}

/// Pairs every client invocation with its completion, by process (a
/// process has at most one operation open), in invocation order.
pub fn pair(events: &[Event]) -> Vec<(&Event, End<'_>)> {
    let mut open: std::collections::BTreeMap<i64, usize> = Default::default();
    let mut out: Vec<(&Event, End<'_>)> = Vec::new();
    for e in events.iter().filter(|e| e.process >= 0) {
        if e.kind == Type::Invoke {
            open.insert(e.process, out.len());
            out.push((e, End::Unknown(None)));
        } else if let Some(i) = open.remove(&e.process) {
            out[i].1 = match e.kind {
                Type::Ok => End::Ok(e),
                Type::Fail => End::Fail(e),
                _ => End::Unknown(Some(e)),
            };
        }
    }
    out
}

/// A read after the final heal, recorded in the history: tried `attempts`
/// times, 300 ms apart, attempt `a` going to whichever node `op(a)` picks,
/// until one answers. Returns the answer.
pub async fn read_until_ok<F, Fut>(
    rec: &Recorder,
    process: i64,
    f: &str,
    invoke: Value,
    attempts: usize,
    mut op: F,
) -> Option<Value>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    for attempt in 0..attempts {
        rec.record(process, Type::Invoke, f, invoke.clone(), None);
        match op(attempt).await {
            Ok(v) => {
                rec.record(process, Type::Ok, f, v.clone(), None);
                return Some(v);
            }
            Err(e) => {
                rec.record(process, Type::Fail, f, invoke.clone(), Some(e));
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        }
    }
    None
}

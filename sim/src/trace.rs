//! What happened in a run. Every event is folded into a 64-bit hash (the
//! same seed must give the same hash, bit for bit); notable events (faults,
//! crashes, elections, timeouts) are kept as lines for the report; with
//! `--trace` every event is kept, and so are details only `--trace` prints.
//! Recording never changes the hash: a failure's hash must match the one
//! its `--trace` reproduction prints.

/// FNV-1a over the events' fields.
pub struct Trace {
    hash: u64,
    notes: Vec<String>,
    all: Option<Vec<String>>,
}

/// Notable lines kept at most (the last ones matter for a violation).
const NOTES_MAX: usize = 4_096;

impl Trace {
    pub fn new(record_all: bool) -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            notes: Vec::new(),
            all: record_all.then(Vec::new),
        }
    }

    fn mix(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.hash ^= b as u64;
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// An event of `kind` with two numbers that identify it.
    pub fn event(&mut self, now_ms: u64, kind: u64, a: u64, b: u64) {
        self.mix(now_ms);
        self.mix(kind);
        self.mix(a);
        self.mix(b);
        if let Some(all) = &mut self.all {
            all.push(format!("{now_ms:>7} ms  {} {a:#x} {b:#x}", kind_name(kind)));
        }
    }

    pub fn note(&mut self, now_ms: u64, what: String) {
        self.mix(now_ms);
        for b in what.bytes() {
            self.mix(b as u64);
        }
        let line = format!("{now_ms:>7} ms  {what}");
        if let Some(all) = &mut self.all {
            all.push(line.clone());
        }
        if self.notes.len() == NOTES_MAX {
            self.notes.remove(0);
        }
        self.notes.push(line);
    }

    /// A line only `--trace` shows. Not hashed and not a note: it exists
    /// only when recording, so hashing it would make a recorded run's hash
    /// differ from the same seed's unrecorded one.
    pub fn detail(&mut self, now_ms: u64, what: String) {
        if let Some(all) = &mut self.all {
            all.push(format!("{now_ms:>7} ms  {what}"));
        }
    }

    /// Whether every event is kept (`--trace`): worth formatting details.
    pub fn recording(&self) -> bool {
        self.all.is_some()
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn all(&self) -> Option<&[String]> {
        self.all.as_deref()
    }
}

fn kind_name(kind: u64) -> &'static str {
    match kind {
        1 => "tick",
        2 => "run",
        3 => "stepped commit,applied^term",
        4 => "deliver from<<8|to type<<48^term<<32^index",
        5 => "client done",
        _ => "?",
    }
}

//! Operations of a concurrent history, as a checker sees them.

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// Completed with this result: `complete` is where it returned.
    Ok(O),
    /// Never known to complete (timed out, crashed, still open at the end):
    /// it may have taken effect at any point after its invocation, or never.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<I, O> {
    pub process: u64,
    pub input: I,
    pub outcome: Outcome<O>,
    /// Position of the invocation in the history (any increasing clock).
    pub invoke: u64,
    /// Position of the completion; ignored for unknown outcomes, which stay
    /// open to the end of the history.
    pub complete: u64,
    /// The source line, for explanations.
    pub line: usize,
}

//! Where rendered text goes: one buffer allocated once at its limit,
//! zeroized when dropped, and the errors a caller's function returns.

use zeroize::Zeroize;

/// Rendered text, in one buffer allocated once at its limit: the write that
/// would pass the limit fails and writes nothing, so a template spends no
/// more memory than that, and the buffer never reallocates (which would
/// leave a copy of what it held in freed memory). Zeroized when dropped: it
/// may hold secrets, after a failed render too.
pub struct Output {
    pub(super) buf: String,
    pub(super) bytes_max: usize,
}

/// The write that would take an `Output` past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFull;

impl Output {
    pub(super) fn bounded(bytes_max: usize) -> Output {
        Output {
            buf: String::with_capacity(bytes_max),
            bytes_max,
        }
    }

    /// For `--format`, whose output holds no secret and has no limit.
    pub(super) fn unbounded() -> Output {
        Output {
            buf: String::new(),
            bytes_max: usize::MAX,
        }
    }

    /// Appends `s` whole, or, if that would pass the limit, nothing.
    pub fn push_str(&mut self, s: &str) -> Result<(), OutputFull> {
        if s.len() > self.bytes_max - self.buf.len() {
            return Err(OutputFull);
        }
        self.buf.push_str(s);
        Ok(())
    }

    pub(super) fn push_char(&mut self, c: char) -> Result<(), OutputFull> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    /// The text, in its buffer (a bounded one keeps its full capacity).
    pub(super) fn take(mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Why a caller's function failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Its output would pass the limit (`Output::push_str`'s error, passed
    /// on with `?`).
    Full,
    /// Its own reason, shown as is in both wordings: it must quote neither
    /// the template nor any secret.
    Failed(String),
}

impl From<OutputFull> for CallError {
    fn from(_: OutputFull) -> CallError {
        CallError::Full
    }
}

/// Writes a function's result into the output (so a secret's bytes are
/// copied once, into the bounded buffer).
pub type Call<'a> = &'a dyn Fn(&str, &str, &mut Output) -> Result<(), CallError>;

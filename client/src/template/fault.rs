//! Where a template went wrong (`Pos`, found by `Lines` in one scan) and
//! what (`Fault`), worded two ways: Go's, quoting the template, and
//! redacted, which never repeats a word of it.

use super::{Errors, TEMPLATE_BYTES_MAX, TEMPLATE_WORDS_MAX};

/// Where a part of the template starts: its byte offset (Go's column, for
/// Go's messages, which always say line 1), and its 1-based line and byte
/// column (for redacted ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pos {
    pub(super) offset: usize,
    pub(super) line: usize,
    pub(super) column: usize,
}

/// Lines and columns of offsets met in increasing order, each byte of the
/// template scanned once.
pub(super) struct Lines<'t> {
    body: &'t [u8],
    scanned: usize,
    line: usize,
    line_start: usize,
}

impl<'t> Lines<'t> {
    pub(super) fn new(body: &'t str) -> Self {
        Lines {
            body: body.as_bytes(),
            scanned: 0,
            line: 1,
            line_start: 0,
        }
    }

    pub(super) fn pos(&mut self, offset: usize) -> Pos {
        for (i, b) in self.body[self.scanned..offset].iter().enumerate() {
            if *b == b'\n' {
                self.line += 1;
                self.line_start = self.scanned + i + 1;
            }
        }
        self.scanned = offset;
        Pos {
            offset,
            line: self.line,
            column: offset - self.line_start + 1,
        }
    }
}

/// What went wrong, borrowing the words Go's messages quote, so a redacted
/// message is made without ever copying them.
#[derive(Debug)]
pub(super) enum Fault<'a> {
    TooLarge {
        bytes: usize,
    },
    TooManyWords(Pos),
    Unclosed(Pos),
    Unterminated(Pos),
    Unsupported {
        at: Pos,
        action: &'a str,
    },
    MissingKey {
        at: Pos,
        go_column: usize,
        path: &'a [String],
        field: &'a str,
    },
    CallFailed {
        at: Pos,
        function: &'a str,
        arg: &'a str,
        why: String,
    },
    OutputFull {
        at: Pos,
        bytes_max: usize,
    },
}

impl Fault<'_> {
    /// The message in the caller's wording; `functions` (the caller's) are
    /// named in the redacted list of what is supported.
    pub(super) fn message(&self, errors: Errors, functions: &[&str]) -> String {
        match errors {
            Errors::Go => self.go(),
            Errors::Redacted => self.redacted(functions),
        }
    }

    pub(super) fn go(&self) -> String {
        match self {
            Fault::TooLarge { bytes } => too_large(*bytes),
            Fault::TooManyWords(_) => self.redacted(&[]),
            Fault::Unclosed(_) => "template: :1: unclosed action".into(),
            Fault::Unterminated(_) => "template: :1: unterminated quoted string".into(),
            Fault::Unsupported { action, .. } => unsupported(action),
            Fault::MissingKey {
                go_column,
                path,
                field,
                ..
            } => format!(
                "template: :1:{go_column}: executing \"\" at <.{}>: map has no entry for key \"{field}\"",
                path.join(".")
            ),
            Fault::CallFailed {
                at,
                function,
                arg,
                why,
            } => format!(
                "template: :1:{}: executing \"\" at <{function} {arg:?}>: error calling {function}: {why}",
                at.offset
            ),
            Fault::OutputFull { bytes_max, .. } => output_full(*bytes_max),
        }
    }

    pub(super) fn redacted(&self, functions: &[&str]) -> String {
        let (at, what) = match self {
            Fault::TooLarge { bytes } => return too_large(*bytes),
            Fault::TooManyWords(at) => (
                at,
                format!(
                    "more than {TEMPLATE_WORDS_MAX} words in actions (a field path counts one per field), the limit for a template"
                ),
            ),
            Fault::Unclosed(at) => (at, "unclosed action (a {{ without its }})".to_string()),
            Fault::Unterminated(at) => (at, "unterminated quoted string".to_string()),
            Fault::Unsupported { at, .. } => {
                let mut what =
                    "unsupported action: supported are fields (.A.B), json, index and printf"
                        .to_string();
                if !functions.is_empty() {
                    what.push_str(&format!(", and calls of {}", functions.join(", ")));
                }
                (at, what)
            }
            Fault::MissingKey { at, .. } => {
                (at, "a field the action reads does not exist".to_string())
            }
            Fault::CallFailed {
                at, function, why, ..
            } => (at, format!("error calling {function}: {why}")),
            Fault::OutputFull { at, bytes_max } => (at, output_full(*bytes_max)),
        };
        format!("template: line {}, column {}: {what}", at.line, at.column)
    }
}

pub(super) fn too_large(bytes: usize) -> String {
    format!("template: the template is {bytes} bytes, more than the {TEMPLATE_BYTES_MAX} allowed")
}

pub(super) fn output_full(bytes_max: usize) -> String {
    format!("the rendered text is larger than {bytes_max} bytes, the limit for this file")
}

pub(super) fn unsupported(action: &str) -> String {
    format!(
        "template: unsupported action {{{{{action}}}}}: supported are {{{{.Field}}}}, {{{{json .Field}}}} and {{{{index .Field \"key\"}}}}"
    )
}

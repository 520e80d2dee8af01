//! The part of Go's text/template that `docker ... --format` users write:
//! `{{.Field}}`, `{{.A.B}}`, `{{json .Field}}`, `{{index .Field "key"}}`,
//! `{{printf "%s" .F}}` (and `{{.Label "key"}}` in listings), with `table `
//! for a header row and `\t`/`\n` escapes. Swarm's templated configs and
//! secrets (`parse_text`) add one-argument functions the caller provides
//! (`{{env "X"}}`, `{{secret "target"}}`). Anything else is a clear error,
//! never output that silently differs from Docker's.
//!
//! The agent renders templates any admin stored, so a template is bounded
//! like any input: its text is at most `TEMPLATE_BYTES_MAX` with at most
//! `TEMPLATE_WORDS_MAX` words in its actions (what a parse spends), and its
//! output
//! goes into an `Output` that refuses the write that would pass its limit
//! (a template repeating a large secret fails there, having spent no more
//! than the limit). The subset has no loops, no nested templates and no
//! nested actions (`range`, `define`, `template`, pipelines and
//! parentheses are refused at parse, and the parser never recurses), so
//! rendering is one pass over the parsed actions and needs no other bound.
//!
//! Errors come in two wordings (`Errors`): Go's, as Docker prints them,
//! which quote the template; and redacted ones, which say where and what
//! kind of mistake and never repeat a word of the template or its output,
//! for templates that are secret data.

mod fault;
mod go_fmt;
mod output;
mod parse;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use serde_json::Value;

use fault::{Fault, Pos};
pub use go_fmt::{go_bytes, go_nil, go_stringer, go_struct};
use go_fmt::{go_time, lookup, plain, sprintf};
pub use output::{Call, CallError, Output, OutputFull};
use parse::{parse_parts, Expr, Operand, Part};

/// Largest template text parsed, in bytes: Docker's limit on a config's
/// data (a templated file is one), and what bounds a parse's work and
/// memory.
pub const TEMPLATE_BYTES_MAX: usize = 1000 * 1024;

/// Most words in one template's actions, a field path counting one per
/// field (`{{printf "%s" .A.B}}` is four), so also most actions: each word
/// and action parsed costs up to ~100 bytes beside its text. Measured
/// without it, a 1000 KiB template took up to 64 MiB to parse (one
/// `printf` of 330,000 `.a` arguments; 60 MiB for `a{{.}}` repeated); with
/// it, at most 8 MiB. A config file rarely has more than a few hundred.
pub const TEMPLATE_WORDS_MAX: usize = 20_000;

/// How a template's errors are worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errors {
    /// Go's messages, as Docker prints them: they quote the template (right
    /// for `--format`, whose template is the operator's own command line).
    Go,
    /// The line, the byte column and the kind of mistake; never a word of
    /// the template or of what it rendered (for templates that are secret
    /// data, whose errors reach logs and `/health`).
    Redacted,
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// `table ...`: print a header row and align columns.
    pub table: bool,
    /// How render errors are worded (parse errors were, too).
    errors: Errors,
}

impl Template {
    /// A `--format` template (Go's error messages).
    pub fn parse(format: &str) -> Result<Template, String> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim()),
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let parts = parse_parts(&body, &[]).map_err(|f| f.go())?;
        Ok(Template {
            parts,
            table,
            errors: Errors::Go,
        })
    }

    /// A template file's text as it is (no `table`, no escapes), with the
    /// one-argument functions `functions` (Swarm's templated configs), its
    /// errors worded as `errors` says.
    pub fn parse_text(body: &str, functions: &[&str], errors: Errors) -> Result<Template, String> {
        let parts = parse_parts(body, functions).map_err(|f| f.message(errors, functions))?;
        Ok(Template {
            parts,
            table: false,
            errors,
        })
    }

    /// Renders a templated config or secret: a field `v` lacks is Go's
    /// error, and calls go to `call`, which writes into the output. The
    /// output is one buffer of `bytes_max` bytes that fails the write that
    /// would pass it (so nothing reallocates, and a template costs at most
    /// that much); the text comes back in that buffer, for the caller to
    /// zeroize.
    pub fn render_text(&self, v: &Value, call: Call, bytes_max: usize) -> Result<String, String> {
        let fail = |f: Fault| f.message(self.errors, &[]);
        self.check_keys(v).map_err(fail)?;
        let mut out = Output::bounded(bytes_max);
        self.render_into((v, v), None, Some(call), &mut out)
            .map_err(fail)?;
        Ok(out.take())
    }

    /// Renders one value.
    pub fn render(&self, v: &Value) -> String {
        self.render_with(v, None)
    }

    /// Renders one row of a listing, whose `{{.Label "k"}}` reads `labels`
    /// (kept out of the row, so `{{json .}}` shows Docker's fields only).
    pub fn render_with(&self, v: &Value, labels: Option<&Value>) -> String {
        let mut out = Output::unbounded();
        // Without a `call` or a limit, rendering cannot fail: a template
        // has Call actions only when its parser allowed functions, and then
        // it is rendered by `render_text`.
        let _ = self.render_into((v, v), labels, None, &mut out);
        out.take()
    }

    /// Renders with `v`; `json` prints from `raw`, the JSON `v` was built
    /// from (Go's json of a struct is the JSON Docker shows).
    fn render_into<'a>(
        &'a self,
        (v, raw): (&Value, &Value),
        labels: Option<&Value>,
        call: Option<Call>,
        out: &mut Output,
    ) -> Result<(), Fault<'a>> {
        let bytes_max = out.bytes_max;
        let full = |at: &Pos| Fault::OutputFull { at: *at, bytes_max };
        for p in &self.parts {
            match p {
                Part::Text(t, at) => out.push_str(t).map_err(|_| full(at))?,
                Part::Action(Expr::Path(p), at) => {
                    out.push_str(&field_text(v, p)).map_err(|_| full(at))?
                }
                Part::Action(Expr::Json(p), at) => out
                    .push_str(
                        &lookup(raw, p)
                            .map(|x| x.to_string())
                            .unwrap_or_else(|| "null".into()),
                    )
                    .map_err(|_| full(at))?,
                Part::Action(Expr::Index(p, k), at) => out
                    .push_str(&plain(lookup(v, p).and_then(|m| m.get(k))))
                    .map_err(|_| full(at))?,
                Part::Action(Expr::Label(k), at) => out
                    .push_str(
                        labels
                            .and_then(|l| l.get(k))
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                    )
                    .map_err(|_| full(at))?,
                Part::Action(Expr::Printf(f, args), at) => {
                    printf(v, f, args, out).map_err(|_| full(at))?
                }
                Part::Action(Expr::Call(f, arg), at) => {
                    let call = call.ok_or(Fault::Unsupported { at: *at, action: f })?;
                    call(f, arg, out).map_err(|e| match e {
                        CallError::Full => full(at),
                        CallError::Failed(why) => Fault::CallFailed {
                            at: *at,
                            function: f,
                            arg,
                            why,
                        },
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Renders one object for `inspect -f`, where Docker's template runs on
    /// the object's JSON as a map: a key it lacks is Go's error ("map has
    /// no entry for key"), never `<no value>`.
    pub fn render_inspect(&self, v: &Value) -> Result<String, String> {
        self.check_keys(v)
            .map_err(|f| f.message(self.errors, &[]))?;
        Ok(self.render(v))
    }

    /// Renders one object for `inspect -f` as Docker does: on its Go
    /// struct first (`typed`: the JSON with the Go values JSON cannot say,
    /// `go_bytes`, `go_nil`, `go_struct`), and on the JSON map `raw` when
    /// the struct lacks a field the template names (docker/cli's
    /// `tryRawInspectFallback`).
    pub fn render_inspect_typed(&self, typed: &Value, raw: &Value) -> Result<String, String> {
        if self.check_keys(typed).is_err() {
            return self.render_inspect(raw);
        }
        let mut out = Output::unbounded();
        let _ = self.render_into((typed, raw), None, None, &mut out);
        Ok(out.take())
    }

    /// Go's error for the first field path that names a key `v` lacks,
    /// pointing at the missing field itself, as Go does.
    fn check_keys(&self, v: &Value) -> Result<(), Fault<'_>> {
        for p in &self.parts {
            let Part::Action(e, at) = p else { continue };
            for path in e.paths() {
                let (mut cur, mut go_column) = (v, at.offset);
                for f in path {
                    let Value::Object(m) = cur else { break };
                    let Some(next) = m.get(f) else {
                        return Err(Fault::MissingKey {
                            at: *at,
                            go_column,
                            path,
                            field: f,
                        });
                    };
                    cur = next;
                    go_column += f.len() + 1;
                }
            }
        }
        Ok(())
    }

    /// A listing's fields are a Go struct's methods: a name it lacks is
    /// Go's template error (and exit status 1), never `<no value>`.
    pub fn check_fields(&self, fields: &[&str], go_type: &str) -> Result<(), String> {
        for p in &self.parts {
            let Part::Action(e, at) = p else {
                continue;
            };
            for path in e.paths() {
                if let Some(f) = path.first().filter(|f| !fields.contains(&f.as_str())) {
                    return Err(format!(
                        "template: :1:{}: executing \"\" at <.{f}>: can't evaluate field {f} in type {go_type}",
                        at.offset
                    ));
                }
            }
        }
        Ok(())
    }

    /// The header row of a `table` template: each action's last field,
    /// in Docker's words (CreatedAt is CREATED, ...).
    pub fn header(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t, _) => out.push_str(t),
                Part::Action(e, _) => {
                    let p = match e {
                        Expr::Path(p) | Expr::Json(p) | Expr::Index(p, _) => p,
                        Expr::Label(_) => {
                            out.push_str("LABEL");
                            continue;
                        }
                        Expr::Printf(..) | Expr::Call(..) => {
                            out.push_str("PRINTF");
                            continue;
                        }
                    };
                    let name = match p.last().map(String::as_str) {
                        Some("CreatedAt") => "CREATED".into(),
                        Some("UpdatedAt") => "UPDATED".into(),
                        Some(f) => f.to_uppercase(),
                        None => String::new(),
                    };
                    out.push_str(&name);
                }
            }
        }
        out
    }
}

/// A field's text as Go prints it. `inspect -f` runs Go's template on
/// Docker's structs, where the times are `time.Time`s and print as such.
fn field_text(v: &Value, p: &[String]) -> String {
    let x = lookup(v, p);
    let is_time = matches!(
        p.last().map(String::as_str),
        Some("CreatedAt" | "UpdatedAt")
    );
    match x
        .and_then(Value::as_str)
        .and_then(go_time)
        .filter(|_| is_time)
    {
        Some(t) => t,
        None => plain(x),
    }
}

/// `printf` with its operands read from `v`: borrowed, not cloned, since
/// a template may name the whole context in every one of many arguments.
fn printf(v: &Value, format: &str, args: &[Operand], out: &mut Output) -> Result<(), OutputFull> {
    let values: Vec<Option<Cow<Value>>> = args
        .iter()
        .map(|a| match a {
            Operand::Path(p) => lookup(v, p).map(Cow::Borrowed),
            Operand::Text(t) => Some(Cow::Owned(Value::String(t.clone()))),
            Operand::Int(n) => Some(Cow::Owned(Value::from(*n))),
        })
        .collect();
    let refs: Vec<Option<&Value>> = values.iter().map(Option::as_deref).collect();
    sprintf(format, &refs, out)
}

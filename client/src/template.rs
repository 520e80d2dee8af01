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

use std::borrow::Cow;

use serde_json::Value;
use zeroize::Zeroize;

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

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A field path; empty means the whole value (`.`).
    Path(Vec<String>),
    Json(Vec<String>),
    Index(Vec<String>, String),
    /// A listing's `{{.Label "key"}}`: the label's value, "" if unset.
    Label(String),
    /// `{{printf "%s-%d" .Name 7}}`: Go's fmt verbs %s %v %d %q %%.
    Printf(String, Vec<Operand>),
    /// `{{env "HOME"}}`: a function the caller allowed, with its argument.
    Call(String, String),
}

impl Expr {
    /// The field paths the action reads.
    fn paths(&self) -> Vec<&Vec<String>> {
        match self {
            Expr::Path(p) | Expr::Json(p) | Expr::Index(p, _) => vec![p],
            Expr::Printf(_, args) => args
                .iter()
                .filter_map(|a| match a {
                    Operand::Path(p) => Some(p),
                    _ => None,
                })
                .collect(),
            Expr::Label(_) | Expr::Call(..) => Vec::new(),
        }
    }
}

/// Rendered text, in one buffer allocated once at its limit: the write that
/// would pass the limit fails and writes nothing, so a template spends no
/// more memory than that, and the buffer never reallocates (which would
/// leave a copy of what it held in freed memory). Zeroized when dropped: it
/// may hold secrets, after a failed render too.
pub struct Output {
    buf: String,
    bytes_max: usize,
}

/// The write that would take an `Output` past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFull;

impl Output {
    fn bounded(bytes_max: usize) -> Output {
        Output {
            buf: String::with_capacity(bytes_max),
            bytes_max,
        }
    }

    /// For `--format`, whose output holds no secret and has no limit.
    fn unbounded() -> Output {
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

    fn push_char(&mut self, c: char) -> Result<(), OutputFull> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    /// The text, in its buffer (a bounded one keeps its full capacity).
    fn take(mut self) -> String {
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

/// An argument of `printf`.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<String>),
    Text(String),
    Int(i64),
}

/// Where a part of the template starts: its byte offset (Go's column, for
/// Go's messages, which always say line 1), and its 1-based line and byte
/// column (for redacted ones).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pos {
    offset: usize,
    line: usize,
    column: usize,
}

/// Lines and columns of offsets met in increasing order, each byte of the
/// template scanned once.
struct Lines<'t> {
    body: &'t [u8],
    scanned: usize,
    line: usize,
    line_start: usize,
}

impl<'t> Lines<'t> {
    fn new(body: &'t str) -> Self {
        Lines {
            body: body.as_bytes(),
            scanned: 0,
            line: 1,
            line_start: 0,
        }
    }

    fn pos(&mut self, offset: usize) -> Pos {
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
enum Fault<'a> {
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
    fn message(&self, errors: Errors, functions: &[&str]) -> String {
        match errors {
            Errors::Go => self.go(),
            Errors::Redacted => self.redacted(functions),
        }
    }

    fn go(&self) -> String {
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

    fn redacted(&self, functions: &[&str]) -> String {
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

fn too_large(bytes: usize) -> String {
    format!("template: the template is {bytes} bytes, more than the {TEMPLATE_BYTES_MAX} allowed")
}

fn output_full(bytes_max: usize) -> String {
    format!("the rendered text is larger than {bytes_max} bytes, the limit for this file")
}

/// An action's words, with Go's double-quoted strings (and their `\"`,
/// `\\`, `\n`, `\t` escapes) kept whole: `printf "%s %s" .A` is three
/// words. Each is taken from `words_left`, the template's budget, as it is
/// made (a path `.A.B` takes one per field).
fn words<'a>(a: &'a str, at: Pos, words_left: &mut usize) -> Result<Vec<String>, Fault<'a>> {
    let mut out = Vec::new();
    let mut chars = a.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' {
            w.push(chars.next().expect("peeked"));
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => w.push('\n'),
                        Some('t') => w.push('\t'),
                        Some(e @ ('"' | '\\')) => w.push(e),
                        _ => return Err(Fault::Unsupported { at, action: a }),
                    },
                    Some(c) => w.push(c),
                    None => return Err(Fault::Unterminated(at)),
                }
            }
            w.push('"');
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
        }
        let cost = if w.starts_with('"') {
            1
        } else {
            w.matches('.').count().max(1)
        };
        *words_left = words_left
            .checked_sub(cost)
            .ok_or(Fault::TooManyWords(at))?;
        out.push(w);
    }
    Ok(out)
}

fn operand(w: &str) -> Option<Operand> {
    if w.starts_with('"') {
        return quoted(w).map(Operand::Text);
    }
    if let Ok(n) = w.parse::<i64>() {
        return Some(Operand::Int(n));
    }
    path(w).map(Operand::Path)
}

/// Go's fmt.Sprintf for the verbs templates use, written into `out`; a verb
/// without an operand prints `%!v(MISSING)` and an operand left over
/// `%!(EXTRA ...)`, as Go does.
fn sprintf(format: &str, args: &[Option<&Value>], out: &mut Output) -> Result<(), OutputFull> {
    let mut next = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_char(c)?;
            continue;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)")?;
            break;
        };
        if verb == '%' {
            out.push_char('%')?;
            continue;
        }
        let Some(arg) = next.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"))?;
            continue;
        };
        let v = go_value(*arg);
        match (verb, arg) {
            ('s' | 'v', _) => out.push_str(&v)?,
            ('d', Some(Value::Number(n))) if n.is_i64() || n.is_u64() => out.push_str(&v)?,
            ('q', Some(Value::String(s))) => out.push_str(&format!("{s:?}"))?,
            _ => out.push_str(&format!("%!{verb}({v})"))?,
        }
    }
    let mut extra = false;
    for a in next {
        out.push_str(if extra { ", " } else { "%!(EXTRA " })?;
        out.push_str(&go_value(*a))?;
        extra = true;
    }
    if extra {
        out.push_char(')')?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String, Pos),
    /// The expression, and where its text starts (after `{{` and spaces).
    Action(Expr, Pos),
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// `table ...`: print a header row and align columns.
    pub table: bool,
    /// How render errors are worded (parse errors were, too).
    errors: Errors,
}

fn unsupported(action: &str) -> String {
    format!(
        "template: unsupported action {{{{{action}}}}}: supported are {{{{.Field}}}}, {{{{json .Field}}}} and {{{{index .Field \"key\"}}}}"
    )
}

fn path(s: &str) -> Option<Vec<String>> {
    if s == "." {
        return Some(Vec::new());
    }
    let fields: Vec<String> = s
        .strip_prefix('.')?
        .split('.')
        .map(str::to_string)
        .collect();
    fields
        .iter()
        .all(|f| !f.is_empty() && f.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .then_some(fields)
}

fn quoted(s: &str) -> Option<String> {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(str::to_string)
}

fn parse_action<'a>(
    a: &'a str,
    functions: &[&str],
    at: Pos,
    words_left: &mut usize,
) -> Result<Expr, Fault<'a>> {
    let owned = words(a, at, words_left)?;
    let expr = || -> Option<Expr> {
        if let [f, arg] = owned.as_slice() {
            if functions.contains(&f.as_str()) {
                return Some(Expr::Call(f.clone(), quoted(arg)?));
            }
        }
        if owned.first().map(String::as_str) == Some("printf") {
            let format = quoted(owned.get(1)?)?;
            let args = owned[2..]
                .iter()
                .map(|w| operand(w))
                .collect::<Option<_>>()?;
            return Some(Expr::Printf(format, args));
        }
        let words: Vec<&str> = owned.iter().map(String::as_str).collect();
        match words.as_slice() {
            [p] => Some(Expr::Path(path(p)?)),
            ["json", p] => Some(Expr::Json(path(p)?)),
            ["index", p, k] => Some(Expr::Index(path(p)?, quoted(k)?)),
            // Docker's listing contexts: {{.Label "key"}}.
            [".Label", k] => Some(Expr::Label(quoted(k)?)),
            _ => None,
        }
    };
    expr().ok_or(Fault::Unsupported { at, action: a })
}

/// The one parser, for both uses: text and actions, each with where it
/// starts.
fn parse_parts<'a>(body: &'a str, functions: &[&str]) -> Result<Vec<Part>, Fault<'a>> {
    if body.len() > TEMPLATE_BYTES_MAX {
        return Err(Fault::TooLarge { bytes: body.len() });
    }
    let mut parts = Vec::new();
    let mut lines = Lines::new(body);
    let mut rest = body;
    let mut words_left = TEMPLATE_WORDS_MAX;
    while let Some(start) = rest.find("{{") {
        let open = body.len() - rest.len() + start;
        if start > 0 {
            let at = lines.pos(open - start);
            parts.push(Part::Text(rest[..start].to_string(), at));
        }
        let Some(end) = rest[start..].find("}}") else {
            return Err(Fault::Unclosed(lines.pos(open)));
        };
        let raw = &rest[start + 2..start + end];
        let action = raw.trim();
        let at = lines.pos(open + 2 + (raw.len() - raw.trim_start().len()));
        let expr = parse_action(action, functions, at, &mut words_left)?;
        parts.push(Part::Action(expr, at));
        rest = &rest[start + end + 2..];
    }
    if !rest.is_empty() {
        let at = lines.pos(body.len() - rest.len());
        parts.push(Part::Text(rest.to_string(), at));
    }
    Ok(parts)
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
        self.render_into(v, None, Some(call), &mut out)
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
        let _ = self.render_into(v, labels, None, &mut out);
        out.take()
    }

    fn render_into<'a>(
        &'a self,
        v: &Value,
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
                    let x = lookup(v, p);
                    // `inspect -f` runs Go's template on Docker's structs,
                    // where the times are `time.Time`s and print as such.
                    let is_time = matches!(
                        p.last().map(String::as_str),
                        Some("CreatedAt" | "UpdatedAt")
                    );
                    let text = match x
                        .and_then(Value::as_str)
                        .and_then(go_time)
                        .filter(|_| is_time)
                    {
                        Some(t) => t,
                        None => plain(x),
                    };
                    out.push_str(&text).map_err(|_| full(at))?;
                }
                Part::Action(Expr::Json(p), at) => out
                    .push_str(
                        &lookup(v, p)
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
                    // Borrowed, not cloned: a template may name the whole
                    // context in every one of many arguments.
                    let values: Vec<Option<Cow<Value>>> = args
                        .iter()
                        .map(|a| match a {
                            Operand::Path(p) => lookup(v, p).map(Cow::Borrowed),
                            Operand::Text(t) => Some(Cow::Owned(Value::String(t.clone()))),
                            Operand::Int(n) => Some(Cow::Owned(Value::from(*n))),
                        })
                        .collect();
                    let refs: Vec<Option<&Value>> = values.iter().map(Option::as_deref).collect();
                    sprintf(f, &refs, out).map_err(|_| full(at))?;
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

/// An RFC 3339 UTC time (`2026-11-30T18:33:40.270352427Z`) as Go's
/// `Time.String()` prints it (`2026-11-30 18:33:40.270352427 +0000 UTC`);
/// `None` for anything else (a listing's "2 hours ago").
fn go_time(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z');
    shaped.then(|| format!("{} {} +0000 UTC", &s[..10], &s[11..s.len() - 1]))
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, f| v.get(f))
}

/// Go's default printing: strings bare, missing values `<no value>`,
/// maps as `map[k:v k2:v2]` (keys sorted, as Go's fmt sorts them), lists
/// as `[a b]`.
fn plain(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<no value>".into(),
        Some(v) => go_value(Some(v)),
    }
}

fn go_value(v: Option<&Value>) -> String {
    match v {
        None => "<nil>".into(),
        Some(Value::Null) => "<nil>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => {
            let mut kv: Vec<(&String, &Value)> = m.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let items: Vec<String> = kv
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_value(Some(v))))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        Some(Value::Array(a)) => {
            let items: Vec<String> = a.iter().map(|v| go_value(Some(v))).collect();
            format!("[{}]", items.join(" "))
        }
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_json_and_index() {
        let v = json!({"ID": "abc", "Spec": {"Name": "db", "Labels": {"env": "dev"}}});
        let t = Template::parse(
            "{{.ID}} {{.Spec.Name}} {{json .Spec.Labels}} {{index .Spec.Labels \"env\"}}",
        )
        .unwrap();
        assert_eq!(t.render(&v), "abc db {\"env\":\"dev\"} dev");
        assert_eq!(
            Template::parse("{{.Nope}}").unwrap().render(&v),
            "<no value>"
        );
        assert_eq!(
            Template::parse("{{json .}}")
                .unwrap()
                .render(&json!({"a":1})),
            "{\"a\":1}"
        );
    }

    #[test]
    fn tables_have_docker_headers() {
        let t = Template::parse("table {{.ID}}\\t{{.Name}}\\t{{.CreatedAt}}").unwrap();
        assert!(t.table);
        assert_eq!(t.header(), "ID\tNAME\tCREATED");
    }

    #[test]
    fn listing_fields_labels_and_go_errors() {
        let row = json!({"ID": "abc", "Name": "db"});
        let labels = json!({"env": "dev"});
        let t =
            Template::parse("{{.Name}} {{.Label \"env\"}} {{.Label \"none\"}}|{{json .}}").unwrap();
        assert_eq!(
            t.render_with(&row, Some(&labels)),
            "db dev |{\"ID\":\"abc\",\"Name\":\"db\"}"
        );
        let fields = ["ID", "Name"];
        assert!(t.check_fields(&fields, "*secret.secretContext").is_ok());
        assert_eq!(
            Template::parse("{{.Nope}}")
                .unwrap()
                .check_fields(&fields, "*secret.secretContext")
                .unwrap_err(),
            "template: :1:2: executing \"\" at <.Nope>: can't evaluate field Nope in type *secret.secretContext"
        );
    }

    #[test]
    fn times_print_as_go_prints_them() {
        let v = json!({"CreatedAt": "2026-11-30T18:33:40.270352427Z", "UpdatedAt": "3 hours ago"});
        let t = Template::parse("{{.CreatedAt}}|{{json .CreatedAt}}|{{.UpdatedAt}}").unwrap();
        assert_eq!(
            t.render(&v),
            "2026-11-30 18:33:40.270352427 +0000 UTC|\"2026-11-30T18:33:40.270352427Z\"|3 hours ago"
        );
        assert_eq!(
            go_time("2026-11-30T18:33:40Z").unwrap(),
            "2026-11-30 18:33:40 +0000 UTC"
        );
    }

    #[test]
    fn templated_files_call_their_functions() {
        let v = json!({"Task": {"Name": "web.1"}});
        let t = Template::parse_text(
            "name={{.Task.Name}}\\t{{env \"HOME\"}} pw={{secret \"password\"}}\n",
            &["env", "secret"],
            Errors::Go,
        )
        .unwrap();
        let call = |f: &str, a: &str, out: &mut Output| -> Result<(), CallError> {
            match (f, a) {
                ("env", "HOME") => out.push_str("/root")?,
                ("secret", "password") => out.push_str("hunter2")?,
                _ => return Err(CallError::Failed(format!("no {a}"))),
            }
            Ok(())
        };
        assert_eq!(
            t.render_text(&v, &call, 64).unwrap(),
            "name=web.1\\t/root pw=hunter2\n"
        );
        assert!(t
            .render_text(&v, &call, 8)
            .unwrap_err()
            .contains("larger than 8"));
        let bad = Template::parse_text("{{secret \"nope\"}}", &["secret"], Errors::Go).unwrap();
        assert_eq!(
            bad.render_text(&v, &call, 64).unwrap_err(),
            "template: :1:2: executing \"\" at <secret \"nope\">: error calling secret: no nope"
        );
        let missing = Template::parse_text("{{.Task.Nope}}", &[], Errors::Go).unwrap();
        assert!(missing
            .render_text(&v, &call, 64)
            .unwrap_err()
            .contains("map has no entry for key \"Nope\""));
        // Functions exist only where the caller allows them.
        assert!(Template::parse("{{env \"HOME\"}}").is_err());
    }

    #[test]
    fn unsupported_actions_are_errors() {
        for bad in ["{{range .}}", "{{.ID", "{{printf .ID}}", "{{.a..b}}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    /// The test's functions: `secret "big"` is `big` bytes of 'B', counted
    /// in `calls`.
    fn secrets(
        big: usize,
        calls: &std::cell::Cell<usize>,
    ) -> impl Fn(&str, &str, &mut Output) -> Result<(), CallError> + '_ {
        move |f, a, out| {
            calls.set(calls.get() + 1);
            match (f, a) {
                ("secret", "big") => out.push_str(&"B".repeat(big))?,
                ("secret", "pw") => out.push_str("hunter2-TOPSECRET")?,
                _ => return Err(CallError::Failed("no such file".into())),
            }
            Ok(())
        }
    }

    #[test]
    fn output_stops_at_the_write_that_passes_its_limit() {
        let v = json!({});
        let calls = std::cell::Cell::new(0);
        let call = secrets(1000, &calls);
        let bomb = Template::parse_text(
            &"{{secret \"big\"}}".repeat(1000),
            &["secret"],
            Errors::Redacted,
        )
        .unwrap();
        // Exactly at the limit renders, in the buffer it was given.
        let fits = Template::parse_text(
            &"{{secret \"big\"}}".repeat(3),
            &["secret"],
            Errors::Redacted,
        )
        .unwrap();
        let out = fits.render_text(&v, &call, 3000).unwrap();
        assert_eq!((out.len(), out.capacity()), (3000, 3000));
        // One byte less, and the third write fails; a bomb of a thousand
        // stops at the fourth of them, having written three.
        calls.set(0);
        let e = fits.render_text(&v, &call, 2999).unwrap_err();
        assert_eq!(
            e,
            "template: line 1, column 35: the rendered text is larger than 2999 bytes, the limit for this file"
        );
        calls.set(0);
        assert!(bomb
            .render_text(&v, &call, 3999)
            .unwrap_err()
            .contains("larger than 3999 bytes"));
        assert_eq!(calls.get(), 4);
        // Text, fields and printf are bounded alike.
        let v = json!({"Node": {"ID": "n1", "Hostname": "box"}});
        for (t, bytes_max) in [
            ("x".repeat(11), 10),
            ("{{.Node}}".repeat(100), 1000),
            (
                format!(
                    "{{{{printf \"{}\" {}}}}}",
                    "%v".repeat(100),
                    ".Node ".repeat(100)
                ),
                1000,
            ),
            (
                format!("{{{{printf \"\" {}}}}}", ".Node ".repeat(100)),
                1000,
            ),
            (format!("{{{{printf \"{}\"}}}}", "%v".repeat(100)), 1000),
        ] {
            let t = Template::parse_text(&t, &[], Errors::Redacted).unwrap();
            let e = t.render_text(&v, &call, bytes_max).unwrap_err();
            assert!(e.contains(&format!("larger than {bytes_max} bytes")), "{e}");
        }
    }

    #[test]
    fn a_template_is_at_most_its_size_and_word_limits() {
        let at_max = "x".repeat(TEMPLATE_BYTES_MAX);
        assert!(Template::parse_text(&at_max, &[], Errors::Redacted).is_ok());
        let past = "x".repeat(TEMPLATE_BYTES_MAX + 1);
        assert_eq!(
            Template::parse_text(&past, &[], Errors::Redacted).unwrap_err(),
            format!(
                "template: the template is {} bytes, more than the {TEMPLATE_BYTES_MAX} allowed",
                TEMPLATE_BYTES_MAX + 1
            )
        );
        assert!(Template::parse(&past).is_err());

        // Words: `.A.B` is two, `printf "%v" .` three; the one past the
        // limit fails where it is, in one action or across many.
        let at_max = "{{.A.B}}".repeat(TEMPLATE_WORDS_MAX / 2);
        assert!(Template::parse_text(&at_max, &[], Errors::Redacted).is_ok());
        let past = format!("{at_max}\n{{{{.}}}}");
        let want = format!(
            "template: line 2, column 3: more than {TEMPLATE_WORDS_MAX} words in actions (a field path counts one per field), the limit for a template"
        );
        assert_eq!(
            Template::parse_text(&past, &[], Errors::Redacted).unwrap_err(),
            want
        );
        let args = format!(
            "{{{{printf \"%v\"{}}}}}",
            " .".repeat(TEMPLATE_WORDS_MAX - 2)
        );
        assert!(Template::parse_text(&args, &[], Errors::Redacted).is_ok());
        let past = format!(
            "{{{{printf \"%v\"{}}}}}",
            " .".repeat(TEMPLATE_WORDS_MAX - 1)
        );
        assert!(Template::parse_text(&past, &[], Errors::Redacted)
            .unwrap_err()
            .contains("words in actions"));
        let path = format!("{{{{{}}}}}", ".A".repeat(TEMPLATE_WORDS_MAX + 1));
        assert!(Template::parse(&path)
            .unwrap_err()
            .contains("words in actions"));
    }

    /// Nothing iterates or nests, so nothing needs an iteration or depth
    /// limit: every such construct is refused at parse.
    #[test]
    fn loops_nested_templates_and_pipelines_are_refused() {
        for bad in [
            "{{range .}}x{{end}}",
            "{{with .Task}}{{.Name}}{{end}}",
            "{{if .Task}}x{{else}}y{{end}}",
            "{{define \"t\"}}{{template \"t\"}}{{end}}",
            "{{template \"t\" .}}",
            "{{block \"t\" .}}x{{end}}",
            "{{.Task.Name | printf \"%s\"}}",
            "{{(secret \"big\")}}",
            "{{secret (secret \"big\")}}",
            "{{$x := .}}",
        ] {
            let e = Template::parse_text(bad, &["secret"], Errors::Redacted).unwrap_err();
            assert!(e.contains("unsupported action"), "{bad}: {e}");
        }
    }

    #[test]
    fn redacted_errors_say_where_and_never_what() {
        let v = json!({"Task": {"Name": "web.1"}});
        let calls = std::cell::Cell::new(0);
        let call = secrets(10, &calls);
        let f = &["env", "secret"];
        // Parse errors, with where each is.
        for (bad, want) in [
            (
                "a\nb {{if hunter2-TOPSECRET}}",
                "template: line 2, column 5: unsupported action: supported are fields (.A.B), json, index and printf, and calls of env, secret",
            ),
            ("{{\"hunter2-TOPSECRET", "template: line 1, column 1: unclosed action (a {{ without its }})"),
            ("x\n\n  {{ printf \"hunter2-TOPSECRET }}", "template: line 3, column 6: unterminated quoted string"),
            ("{{printf \"hunter2-TOPSECRET\\q\"}}", "template: line 1, column 3: unsupported action: supported are fields (.A.B), json, index and printf, and calls of env, secret"),
        ] {
            assert_eq!(Template::parse_text(bad, f, Errors::Redacted).unwrap_err(), want, "{bad}");
            // Go's wording quotes the template (where Go's does).
            let go = Template::parse_text(bad, f, Errors::Go).unwrap_err();
            assert!(!go.contains("line "), "{go}");
        }
        // Render errors: neither the template nor the output.
        for (bad, want) in [
            ("pw={{secret \"pw\"}} {{.Task.TOPSECRET}}", "template: line 1, column 22: a field the action reads does not exist"),
            ("pw={{secret \"pw\"}} {{secret \"TOPSECRET\"}}", "template: line 1, column 22: error calling secret: no such file"),
            ("pw={{secret \"pw\"}} {{secret \"pw\"}}", "template: line 1, column 22: the rendered text is larger than 30 bytes, the limit for this file"),
        ] {
            let t = Template::parse_text(bad, f, Errors::Redacted).unwrap();
            assert_eq!(t.render_text(&v, &call, 30).unwrap_err(), want, "{bad}");
            let go = Template::parse_text(bad, f, Errors::Go).unwrap();
            assert!(!go.render_text(&v, &call, 30).unwrap_err().contains("line "));
        }
    }

    /// Any prefix of a template parses or fails with a message, in both
    /// wordings (positions never go past the text).
    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        let t = "a {{.Task.Name}}\n{{printf \"%s\\\"\" .X 7}} é{{secret \"x\"}}\n{{ json . }}}}{{";
        for (i, _) in t.char_indices() {
            for errors in [Errors::Go, Errors::Redacted] {
                let _ = Template::parse_text(&t[..i], &["secret"], errors);
            }
        }
    }
}

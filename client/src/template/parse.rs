//! The one parser, for `--format` and for templated files: text and
//! actions, each with where it starts, every word paid for from the
//! template's budget as it is made. It never recurses.

use super::fault::{Fault, Lines, Pos};
use super::{TEMPLATE_BYTES_MAX, TEMPLATE_WORDS_MAX};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
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
    pub(super) fn paths(&self) -> Vec<&Vec<String>> {
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

/// An argument of `printf`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    Path(Vec<String>),
    Text(String),
    Int(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    Text(String, Pos),
    /// The expression, and where its text starts (after `{{` and spaces).
    Action(Expr, Pos),
}

/// An action's words, with Go's double-quoted strings (and their `\"`,
/// `\\`, `\n`, `\t` escapes) kept whole: `printf "%s %s" .A` is three
/// words. Each is taken from `words_left`, the template's budget, as it is
/// made (a path `.A.B` takes one per field).
pub(super) fn words<'a>(
    a: &'a str,
    at: Pos,
    words_left: &mut usize,
) -> Result<Vec<String>, Fault<'a>> {
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

pub(super) fn operand(w: &str) -> Option<Operand> {
    if w.starts_with('"') {
        return quoted(w).map(Operand::Text);
    }
    if let Ok(n) = w.parse::<i64>() {
        return Some(Operand::Int(n));
    }
    path(w).map(Operand::Path)
}

pub(super) fn path(s: &str) -> Option<Vec<String>> {
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

pub(super) fn quoted(s: &str) -> Option<String> {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(str::to_string)
}

pub(super) fn parse_action<'a>(
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
pub(super) fn parse_parts<'a>(body: &'a str, functions: &[&str]) -> Result<Vec<Part>, Fault<'a>> {
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

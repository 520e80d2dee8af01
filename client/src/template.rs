//! The part of Go's text/template that `docker ... --format` users write:
//! `{{.Field}}`, `{{.A.B}}`, `{{json .Field}}`, `{{index .Field "key"}}`,
//! `{{printf "%s" .F}}` (and `{{.Label "key"}}` in listings), with `table `
//! for a header row and `\t`/`\n` escapes. Swarm's templated configs and
//! secrets (`parse_text`) add one-argument functions the caller provides
//! (`{{env "X"}}`, `{{secret "target"}}`). Anything else is a clear error,
//! never output that silently differs from Docker's.

use serde_json::Value;

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

/// Writes a function's result into the output (so a secret's bytes are
/// copied once, into a buffer the caller sized and will zeroize).
pub type Call<'a> = &'a dyn Fn(&str, &str, &mut String) -> Result<(), String>;

/// An argument of `printf`.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<String>),
    Text(String),
    Int(i64),
}

/// An action's words, with Go's double-quoted strings (and their `\"`,
/// `\\`, `\n`, `\t` escapes) kept whole: `printf "%s %s" .A` is three
/// words.
fn words(a: &str) -> Result<Vec<String>, String> {
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
                        _ => return Err(unsupported(a)),
                    },
                    Some(c) => w.push(c),
                    None => return Err("template: :1: unterminated quoted string".to_string()),
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
        out.push(w);
    }
    Ok(out)
}

fn operand(w: &str, action: &str) -> Result<Operand, String> {
    if w.starts_with('"') {
        return Ok(Operand::Text(quoted(w, action)?));
    }
    if let Ok(n) = w.parse::<i64>() {
        return Ok(Operand::Int(n));
    }
    Ok(Operand::Path(path(w, action)?))
}

/// Go's fmt.Sprintf for the verbs templates use; a verb without an
/// operand prints `%!v(MISSING)` and an operand left over `%!(EXTRA ...)`,
/// as Go does.
fn sprintf(format: &str, args: &[Option<&Value>]) -> String {
    let mut out = String::new();
    let mut next = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = next.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let v = go_value(*arg);
        match (verb, arg) {
            ('s' | 'v', _) => out.push_str(&v),
            ('d', Some(Value::Number(n))) if n.is_i64() || n.is_u64() => out.push_str(&v),
            ('q', Some(Value::String(s))) => out.push_str(&format!("{s:?}")),
            _ => out.push_str(&format!("%!{verb}({v})")),
        }
    }
    let extra: Vec<String> = next.map(|a| go_value(*a)).collect();
    if !extra.is_empty() {
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// The expression, and the byte offset of its text in the template
    /// (for Go's error positions).
    Action(Expr, usize),
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// `table ...`: print a header row and align columns.
    pub table: bool,
}

fn unsupported(action: &str) -> String {
    format!(
        "template: unsupported action {{{{{action}}}}}: supported are {{{{.Field}}}}, {{{{json .Field}}}} and {{{{index .Field \"key\"}}}}"
    )
}

fn path(s: &str, action: &str) -> Result<Vec<String>, String> {
    if s == "." {
        return Ok(Vec::new());
    }
    let rest = s.strip_prefix('.').ok_or_else(|| unsupported(action))?;
    let fields: Vec<String> = rest.split('.').map(str::to_string).collect();
    if fields
        .iter()
        .any(|f| f.is_empty() || !f.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return Err(unsupported(action));
    }
    Ok(fields)
}

fn quoted(s: &str, action: &str) -> Result<String, String> {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| unsupported(action))
}

fn parse_action(a: &str, functions: &[&str]) -> Result<Expr, String> {
    let owned = words(a)?;
    if let [f, arg] = owned.as_slice() {
        if functions.contains(&f.as_str()) {
            return Ok(Expr::Call(f.clone(), quoted(arg, a)?));
        }
    }
    if owned.first().map(String::as_str) == Some("printf") {
        let format = owned.get(1).ok_or_else(|| unsupported(a))?;
        let format = quoted(format, a)?;
        let args = owned[2..]
            .iter()
            .map(|w| operand(w, a))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Expr::Printf(format, args));
    }
    let words: Vec<&str> = owned.iter().map(String::as_str).collect();
    match words.as_slice() {
        [p] => Ok(Expr::Path(path(p, a)?)),
        ["json", p] => Ok(Expr::Json(path(p, a)?)),
        ["index", p, k] => Ok(Expr::Index(path(p, a)?, quoted(k, a)?)),
        // Docker's listing contexts: {{.Label "key"}}.
        [".Label", k] => Ok(Expr::Label(quoted(k, a)?)),
        _ => Err(unsupported(a)),
    }
}

impl Template {
    pub fn parse(format: &str) -> Result<Template, String> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim()),
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut t = Self::parse_text(&body, &[])?;
        t.table = table;
        Ok(t)
    }

    /// A template file's text as it is (no `table`, no escapes), with the
    /// one-argument functions `functions` (Swarm's templated configs).
    pub fn parse_text(body: &str, functions: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| "template: :1: unclosed action".to_string())?;
            let raw = &rest[start + 2..start + end];
            let action = raw.trim();
            let offset = body.len() - rest.len() + start + 2 + (raw.len() - raw.trim_start().len());
            parts.push(Part::Action(parse_action(action, functions)?, offset));
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            parts,
            table: false,
        })
    }

    /// Renders a templated config or secret: a field `v` lacks is Go's
    /// error, and calls go to `call`, which writes into the output. The
    /// output is made with `capacity` bytes and must not outgrow it, so no
    /// reallocation leaves a copy of secret bytes behind in freed memory.
    pub fn render_text(&self, v: &Value, call: Call, capacity: usize) -> Result<String, String> {
        self.check_keys(v)?;
        let mut out = String::with_capacity(capacity);
        self.render_into(v, None, Some(call), &mut out)?;
        if out.len() > capacity {
            return Err(format!(
                "the rendered text is larger than {capacity} bytes, the limit for this file"
            ));
        }
        Ok(out)
    }

    /// Renders one value.
    pub fn render(&self, v: &Value) -> String {
        self.render_with(v, None)
    }

    /// Renders one row of a listing, whose `{{.Label "k"}}` reads `labels`
    /// (kept out of the row, so `{{json .}}` shows Docker's fields only).
    pub fn render_with(&self, v: &Value, labels: Option<&Value>) -> String {
        let mut out = String::new();
        // Without a `call`, a template has no Call actions (parse refused
        // them), so rendering cannot fail.
        let _ = self.render_into(v, labels, None, &mut out);
        out
    }

    fn render_into(
        &self,
        v: &Value,
        labels: Option<&Value>,
        call: Option<Call>,
        out: &mut String,
    ) -> Result<(), String> {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(Expr::Path(p), _) => {
                    let x = lookup(v, p);
                    // `inspect -f` runs Go's template on Docker's structs,
                    // where the times are `time.Time`s and print as such.
                    let is_time = matches!(
                        p.last().map(String::as_str),
                        Some("CreatedAt" | "UpdatedAt")
                    );
                    match x
                        .and_then(Value::as_str)
                        .and_then(go_time)
                        .filter(|_| is_time)
                    {
                        Some(t) => out.push_str(&t),
                        None => out.push_str(&plain(x)),
                    }
                }
                Part::Action(Expr::Json(p), _) => out.push_str(
                    &lookup(v, p)
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "null".into()),
                ),
                Part::Action(Expr::Index(p, k), _) => {
                    out.push_str(&plain(lookup(v, p).and_then(|m| m.get(k))))
                }
                Part::Action(Expr::Label(k), _) => out.push_str(
                    labels
                        .and_then(|l| l.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
                Part::Action(Expr::Printf(f, args), _) => {
                    let owned: Vec<Option<Value>> = args
                        .iter()
                        .map(|a| match a {
                            Operand::Path(p) => lookup(v, p).cloned(),
                            Operand::Text(t) => Some(Value::String(t.clone())),
                            Operand::Int(n) => Some(Value::from(*n)),
                        })
                        .collect();
                    let refs: Vec<Option<&Value>> = owned.iter().map(Option::as_ref).collect();
                    out.push_str(&sprintf(f, &refs));
                }
                Part::Action(Expr::Call(f, arg), at) => {
                    let call = call.ok_or_else(|| unsupported(f))?;
                    call(f, arg, out).map_err(|e| {
                        format!("template: :1:{at}: executing \"\" at <{f} {arg:?}>: error calling {f}: {e}")
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
        self.check_keys(v)?;
        Ok(self.render(v))
    }

    /// Go's error for the first field path that names a key `v` lacks,
    /// pointing at the missing field itself, as Go does.
    fn check_keys(&self, v: &Value) -> Result<(), String> {
        for p in &self.parts {
            let Part::Action(e, at) = p else { continue };
            for path in e.paths() {
                let (mut cur, mut col) = (v, *at);
                for f in path {
                    let Value::Object(m) = cur else { break };
                    let Some(next) = m.get(f) else {
                        return Err(format!(
                            "template: :1:{col}: executing \"\" at <.{}>: map has no entry for key \"{f}\"",
                            path.join(".")
                        ));
                    };
                    cur = next;
                    col += f.len() + 1;
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
                        "template: :1:{at}: executing \"\" at <.{f}>: can't evaluate field {f} in type {go_type}"
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
                Part::Text(t) => out.push_str(t),
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
        )
        .unwrap();
        let call = |f: &str, a: &str, out: &mut String| -> Result<(), String> {
            match (f, a) {
                ("env", "HOME") => out.push_str("/root"),
                ("secret", "password") => out.push_str("hunter2"),
                _ => return Err(format!("no {a}")),
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
        let bad = Template::parse_text("{{secret \"nope\"}}", &["secret"]).unwrap();
        assert_eq!(
            bad.render_text(&v, &call, 64).unwrap_err(),
            "template: :1:2: executing \"\" at <secret \"nope\">: error calling secret: no nope"
        );
        let missing = Template::parse_text("{{.Task.Nope}}", &[]).unwrap();
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
}

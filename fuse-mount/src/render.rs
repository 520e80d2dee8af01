//! Swarm's templated configs and secrets (`--template-driver golang`),
//! rendered by the agent for each task that uses them, as Docker's worker
//! does: the object's data is a Go template over the task's context
//! (`.Task.Name`, `.Node.Hostname`, `.Service.Name`, ...) with
//! `{{env "X"}}` (the task's environment), `{{secret "target"}}` and
//! `{{config "target"}}` (the plaintext of another file of the same task,
//! by its target, as stored, never rendered). A template that does not
//! parse or render fails its task alone, with the reason: where in the
//! template and what kind of mistake, never its text (a templated secret's
//! text is the secret) nor any of its output (`Errors::Redacted`).
//!
//! Rendered bytes are plaintext like any secret: they are written into one
//! buffer of the file's limit (no reallocation leaves a copy behind, and a
//! template repeating a large secret fails at the limit, having spent no
//! more), copied once to their exact size, and the buffer is zeroized.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use secretd_client::template::{CallError, Errors, Output, Template};
use secretd_crypto::SecretBytes;
use serde_json::json;

use crate::image::{FileEntry, Source};

/// Docker's limits on an object's data, which a rendered one keeps too: the
/// write that would pass one fails the render.
const SECRET_RENDERED_BYTES_MAX: usize = 500 * 1024;
const CONFIG_RENDERED_BYTES_MAX: usize = 1000 * 1024;

/// The functions a templated file may call.
const FUNCTIONS: &[&str] = &["env", "secret", "config"];

/// Who a task's templates are rendered for.
pub struct TaskContext<'a> {
    pub task: &'a str,
    pub node: &'a str,
    pub hostname: &'a str,
    pub env: Option<&'a HashMap<String, String>>,
}

/// This machine's host name, for `.Node.Hostname`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Swarm names a task `SERVICE.SLOT`: `web.1` is slot 1 of service `web`.
fn service_and_slot(task: &str) -> (&str, u64) {
    match task.rsplit_once('.') {
        Some((service, slot)) if !service.is_empty() => match slot.parse() {
            Ok(n) => (service, n),
            Err(_) => (task, 0),
        },
        _ => (task, 0),
    }
}

/// One templated file of a task: its path, whether it is a secret, and
/// its object's source (for the synthetic source of the rendered bytes).
pub struct Templated<'a> {
    pub path: &'a str,
    pub secret: bool,
    pub source: &'a Source,
}

/// Renders one templated file from the task's raw files (`files`: path ->
/// file, as fetched). Answers the rendered bytes and a source naming them:
/// the object's, with a digest of the output, so a re-render that changes
/// nothing rewrites nothing and one that changes something is a new
/// version to the backends.
pub fn render(
    ctx: &TaskContext,
    files: &BTreeMap<String, FileEntry>,
    t: &Templated,
) -> Result<(Arc<SecretBytes>, Source), String> {
    let raw = files
        .get(t.path)
        .ok_or_else(|| format!("{} is not among the task's files", t.path))?;
    let text = std::str::from_utf8(raw.data.expose())
        .map_err(|_| "a template must be UTF-8 text".to_string())?;
    let template = Template::parse_text(text, FUNCTIONS, Errors::Redacted)?;
    let (service, slot) = service_and_slot(ctx.task);
    let context = json!({
        "Service": {"ID": service, "Name": service, "Labels": {}},
        "Node": {
            "ID": ctx.node,
            "Hostname": ctx.hostname,
            "Platform": {"OS": std::env::consts::OS, "Architecture": std::env::consts::ARCH},
        },
        "Task": {"ID": ctx.task, "Name": ctx.task, "Slot": slot},
    });
    // Its reasons are shown as they are, so they name neither the target
    // (template text) nor anything read.
    let call = |f: &str, arg: &str, out: &mut Output| -> Result<(), CallError> {
        match f {
            "env" => {
                // Swarm's env: an unset variable is empty.
                if let Some(v) = ctx.env.and_then(|e| e.get(arg)) {
                    out.push_str(v)?;
                }
                Ok(())
            }
            "secret" | "config" => {
                let want_secret = f == "secret";
                let path = arg.trim_start_matches('/');
                let file = files
                    .get(path)
                    .filter(|file| file.source.0 == want_secret)
                    .ok_or_else(|| {
                        CallError::Failed(format!("the task has no {f} with that target"))
                    })?;
                let text = std::str::from_utf8(file.data.expose())
                    .map_err(|_| CallError::Failed(format!("that {f} is not UTF-8 text")))?;
                out.push_str(text)?;
                Ok(())
            }
            _ => Err(CallError::Failed("no such function".into())),
        }
    };
    let limit = if t.secret {
        SECRET_RENDERED_BYTES_MAX
    } else {
        CONFIG_RENDERED_BYTES_MAX
    };
    let out = template.render_text(&context, &call, limit)?;
    // `out` may hold secrets in spare capacity: keep an exact copy and
    // zeroize the whole buffer when `big` drops.
    let big = SecretBytes::new(out.into_bytes());
    let exact = SecretBytes::new(big.expose().to_vec());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    exact.expose().hash(&mut h);
    let (secret, id, version) = t.source;
    let source = (
        *secret,
        format!("{id}#rendered-{:016x}", h.finish()),
        *version,
    );
    Ok((Arc::new(exact), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, secret: bool) -> FileEntry {
        FileEntry {
            uid: 0,
            gid: 0,
            mode: 0o444,
            data: Arc::new(SecretBytes::new(data.as_bytes().to_vec())),
            source: (secret, "obj".into(), 1),
        }
    }

    #[test]
    fn renders_the_tasks_context_and_files() {
        let mut files = BTreeMap::new();
        files.insert("password".to_string(), file("hunter2", true));
        files.insert(
            "etc/app.conf".to_string(),
            file(
                "svc={{.Service.Name}} slot={{.Task.Slot}} task={{.Task.Name}} node={{.Node.ID}} host={{.Node.Hostname}} \
                 home={{env \"HOME\"}} unset=[{{env \"NOPE\"}}] pw={{secret \"password\"}}",
                false,
            ),
        );
        let env = HashMap::from([("HOME".to_string(), "/srv".to_string())]);
        let ctx = TaskContext {
            task: "web.3",
            node: "n1",
            hostname: "box",
            env: Some(&env),
        };
        let source = (false, "cfg".to_string(), 0);
        let t = Templated {
            path: "etc/app.conf",
            secret: false,
            source: &source,
        };
        let (data, src) = render(&ctx, &files, &t).unwrap();
        assert_eq!(
            std::str::from_utf8(data.expose()).unwrap(),
            "svc=web slot=3 task=web.3 node=n1 host=box home=/srv unset=[] pw=hunter2"
        );
        assert!(src.1.starts_with("cfg#rendered-"));
        // The same output is the same source; a different one is not.
        assert_eq!(render(&ctx, &files, &t).unwrap().1, src);
        files.insert("password".to_string(), file("s3cond", true));
        assert_ne!(render(&ctx, &files, &t).unwrap().1, src);

        // A secret is not a config, and a missing target is an error.
        files.insert(
            "etc/app.conf".to_string(),
            file("{{config \"password\"}}", false),
        );
        assert_eq!(
            render(&ctx, &files, &t).unwrap_err(),
            "template: line 1, column 3: error calling config: the task has no config with that target"
        );
    }

    fn ctx() -> TaskContext<'static> {
        TaskContext {
            task: "web.1",
            node: "n1",
            hostname: "box",
            env: None,
        }
    }

    /// D15: what a template's error says is where and what kind of mistake,
    /// never its text (a templated secret's text is secret) nor its output.
    #[test]
    fn errors_quote_neither_the_template_nor_its_output() {
        let mut files = BTreeMap::new();
        files.insert("pw".to_string(), file("hunter2-TOPSECRET", true));
        let source = (true, "tpl".to_string(), 0);
        let t = Templated {
            path: "app",
            secret: true,
            source: &source,
        };
        for (text, want) in [
            (
                "x\n{{if hunter2-TOPSECRET}}",
                "template: line 2, column 3: unsupported action",
            ),
            (
                "{{.Task.TOPSECRET}}",
                "template: line 1, column 3: a field the action reads",
            ),
            (
                "{{secret \"TOPSECRET\"}}",
                "template: line 1, column 3: error calling secret",
            ),
            (
                "{{secret \"pw\"}}\n{{\"TOPSECRET",
                "template: line 2, column 1: unclosed action",
            ),
        ] {
            files.insert("app".to_string(), file(text, true));
            let e = render(&ctx(), &files, &t).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
            assert!(!e.contains("TOPSECRET"), "{text}: {e}");
        }
    }

    /// D9: a template repeating a large secret fails at the file's limit,
    /// with the limit's message; one at the limit renders.
    #[test]
    fn output_is_bounded_by_the_files_limit() {
        let mut files = BTreeMap::new();
        let big = "B".repeat(100 * 1024);
        files.insert("big".to_string(), file(&big, true));
        let source = (false, "bomb".to_string(), 0);
        let t = Templated {
            path: "app",
            secret: false,
            source: &source,
        };
        files.insert(
            "app".to_string(),
            file(&"{{secret \"big\"}}".repeat(10), false),
        );
        let (data, _) = render(&ctx(), &files, &t).unwrap();
        assert_eq!(data.len(), CONFIG_RENDERED_BYTES_MAX);
        files.insert(
            "app".to_string(),
            file(&"{{secret \"big\"}}".repeat(1500), false),
        );
        assert_eq!(
            render(&ctx(), &files, &t).unwrap_err(),
            format!("template: line 1, column 163: the rendered text is larger than {CONFIG_RENDERED_BYTES_MAX} bytes, the limit for this file")
        );
        let secret = Templated { secret: true, ..t };
        assert!(render(&ctx(), &files, &secret)
            .unwrap_err()
            .contains(&format!("larger than {SECRET_RENDERED_BYTES_MAX} bytes")));
    }

    #[test]
    fn task_names_split_like_swarms() {
        assert_eq!(service_and_slot("web.1"), ("web", 1));
        assert_eq!(service_and_slot("a.b.12"), ("a.b", 12));
        assert_eq!(service_and_slot("solo"), ("solo", 0));
        assert_eq!(service_and_slot("web.x"), ("web.x", 0));
    }
}

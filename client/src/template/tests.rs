//! The template subset against Go's and Docker's recorded behaviour.

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
    let t = Template::parse("{{.Name}} {{.Label \"env\"}} {{.Label \"none\"}}|{{json .}}").unwrap();
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

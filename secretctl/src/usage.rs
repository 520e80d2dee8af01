//! Command-line mistakes as Docker reports them. clap parses; this module
//! turns clap's errors and help requests into Docker's (cobra's) words and
//! exit statuses, so a script written against `docker secret` sees the same
//! bytes from `secretctl secret`:
//!
//! - a wrong number of arguments: `secretctl: 'secretctl secret ls' accepts
//!   no arguments`, the usage line, exit 1;
//! - an unknown flag or a bad flag value: `unknown flag: --bogus`, the usage
//!   line, exit 125;
//! - `--help`: Docker's layout (usage, description, aliases, options).
//!
//! Every fact printed (usage line, argument counts, option list) is read
//! from clap's command tree, so help and errors cannot drift from what the
//! parser accepts.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Command};

/// Docker's exit status for a usage error (a flag it does not know or
/// cannot parse).
pub const USAGE_EXIT_STATUS: u8 = 125;

/// What to do instead of running a command.
#[derive(Debug, PartialEq, Eq)]
pub struct Exit {
    pub stdout: String,
    pub stderr: String,
    pub status: u8,
}

/// Help is laid out for this many columns, as Docker's is when its output
/// is not a terminal (docker/cli's `defaultTermWidth`); pflag wraps flag
/// descriptions one column short of it.
const HELP_WIDTH_CHARS: usize = 80;

/// The commands Docker's `secret` and `config` groups have; secretctl's
/// others are listed apart, under "secretd commands:".
const DOCKER_COMMANDS: &[&str] = &["create", "inspect", "ls", "rm"];

/// The commands found in `argv` (after the binary's name), outermost first.
/// Flags and their values are stepped over; `--` ends the search.
fn command_path<'a>(root: &'a Command, argv: &[String]) -> Vec<&'a Command> {
    let mut path = vec![root];
    let mut i = 0;
    while i < argv.len() {
        let tok = argv[i].as_str();
        i += 1;
        if tok == "--" {
            break;
        }
        let cur = *path.last().expect("root is always there");
        if let Some(flag) = tok.strip_prefix('-') {
            if !tok.contains('=') && takes_value(&path, flag) {
                i += 1;
            }
            continue;
        }
        match cur
            .get_subcommands()
            .find(|s| s.get_name() == tok || s.get_all_aliases().any(|a| a == tok))
        {
            Some(sub) => path.push(sub),
            None if cur.has_subcommands() => break,
            None => {}
        }
    }
    path
}

/// Whether `flag` (without its first dash) takes a value, in the command
/// or any command above it (global flags).
fn takes_value(path: &[&Command], flag: &str) -> bool {
    let matches = |a: &Arg| match flag.strip_prefix('-') {
        Some(long) => a.get_long() == Some(long),
        None => flag.len() == 1 && a.get_short() == flag.chars().next(),
    };
    path.iter()
        .flat_map(|c| c.get_arguments())
        .find(|a| matches(a))
        .is_some_and(|a| a.get_action().takes_values())
}

fn full_name(path: &[&Command]) -> String {
    path.iter()
        .map(|c| c.get_name())
        .collect::<Vec<_>>()
        .join(" ")
}

/// In index order (an edited argument is stored last, keeping its index).
fn positionals(cmd: &Command) -> impl Iterator<Item = &Arg> {
    let mut v: Vec<&Arg> = cmd.get_positionals().filter(|a| !a.is_hide_set()).collect();
    v.sort_by_key(|a| a.get_index());
    v.into_iter()
}

fn options(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
}

fn is_multiple(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
        || a.get_num_args().is_some_and(|n| n.max_values() > 1)
}

fn value_name(a: &Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first())
        .map(|s| s.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

/// Docker's usage line: `secretctl secret create [OPTIONS] SECRET [file|-]`.
fn usage_line(path: &[&Command]) -> String {
    let cmd = path.last().expect("a path is never empty");
    let mut line = full_name(path);
    if cmd.has_subcommands() {
        line.push_str(" COMMAND");
        return line;
    }
    if options(cmd).next().is_some() {
        line.push_str(" [OPTIONS]");
    }
    for a in positionals(cmd) {
        let v = value_name(a);
        let one = if a.is_required_set() {
            v.clone()
        } else {
            format!("[{v}]")
        };
        line.push(' ');
        line.push_str(&one);
        if is_multiple(a) {
            line.push_str(&format!(" [{v}...]"));
        }
    }
    line
}

/// How many arguments a command takes: (at least, at most).
fn arity(cmd: &Command) -> (usize, Option<usize>) {
    let mut min = 0;
    let mut max = Some(0);
    for a in positionals(cmd) {
        if a.is_required_set() {
            min += 1;
        }
        max = match (max, is_multiple(a)) {
            (Some(m), false) => Some(m + 1),
            _ => None,
        };
    }
    (min, max)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "argument"
    } else {
        "arguments"
    }
}

/// cobra's argument-count error (Docker 28's words), exit 1.
fn arity_error(path: &[&Command]) -> Exit {
    let name = full_name(path);
    let bin = path[0].get_name();
    let (min, max) = arity(path.last().expect("a path is never empty"));
    // Docker says "See" after a minimum-only count and "Run" elsewhere.
    let (what, verb) = match max {
        Some(0) => ("accepts no arguments".to_string(), "Run"),
        Some(m) if m == min => (format!("requires {m} {}", plural(m)), "Run"),
        Some(m) => (
            format!("requires at least {min} and at most {m} {}", plural(m)),
            "Run",
        ),
        None => (format!("requires at least {min} {}", plural(min)), "See"),
    };
    Exit {
        stdout: String::new(),
        stderr: format!(
            "{bin}: '{name}' {what}\n\nUsage:  {}\n\n{verb} '{name} --help' for more information\n",
            usage_line(path)
        ),
        status: 1,
    }
}

/// A flag mistake: the message, the usage line, exit 125.
fn flag_error(path: &[&Command], message: &str) -> Exit {
    Exit {
        stdout: String::new(),
        stderr: format!(
            "{message}\n\nUsage:  {}\n\nRun '{} --help' for more information\n",
            usage_line(path),
            full_name(path)
        ),
        status: USAGE_EXIT_STATUS,
    }
}

fn context(e: &clap::Error, kind: ContextKind) -> Option<String> {
    match e.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        _ => None,
    }
}

/// The flag as written in the error: `--format <string>` becomes `--format`.
fn flag_of(e: &clap::Error) -> String {
    context(e, ContextKind::InvalidArg)
        .map(|s| s.split([' ', '=']).next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Docker's help for a command: usage, description (cobra's Long if set,
/// else its Short), aliases, options or subcommands.
fn help(path: &[&Command]) -> String {
    let cmd = path.last().expect("a path is never empty");
    let mut out = format!("Usage:  {}\n\n", usage_line(path));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&format!("{about}\n\n"));
    }
    let aliases: Vec<_> = cmd.get_visible_aliases().collect();
    if !aliases.is_empty() {
        let parent = full_name(&path[..path.len() - 1]);
        let all: Vec<String> = std::iter::once(cmd.get_name())
            .chain(aliases)
            .map(|a| format!("{parent} {a}"))
            .collect();
        out.push_str(&format!("Aliases:\n  {}\n\n", all.join(", ")));
    }
    if cmd.has_subcommands() {
        out.push_str(&commands_section(cmd));
        out.push_str(&format!(
            "\nRun '{} COMMAND --help' for more information on a command.\n",
            full_name(path)
        ));
        return out;
    }
    let options = options_section(cmd);
    if options.is_empty() {
        // No Options section: Docker's help ends with the last section's
        // line, not a blank one (`docker secret rm --help`).
        out.pop();
    }
    out.push_str(&options);
    out
}

/// A group's commands, sorted by name as cobra lists them: Docker's under
/// "Commands:", secretd's own after them under "secretd commands:".
fn commands_section(cmd: &Command) -> String {
    let mut subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    subs.sort_by_key(|s| s.get_name());
    // cobra pads names to at least 11 characters, then one space.
    let width = subs
        .iter()
        .map(|s| s.get_name().len())
        .max()
        .unwrap_or(0)
        .max(11);
    let (docker, ours): (Vec<_>, Vec<_>) = subs
        .into_iter()
        .partition(|s| DOCKER_COMMANDS.contains(&s.get_name()));
    let list = |title: &str, subs: &[&Command]| {
        let mut out = format!("{title}\n");
        for s in subs {
            let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
            out.push_str(&format!("  {:width$} {about}\n", s.get_name()));
        }
        out
    };
    let mut out = list("Commands:", &docker);
    if !ours.is_empty() {
        out.push('\n');
        out.push_str(&list("secretd commands:", &ours));
    }
    out
}

/// The Options section: flags sorted by long name with pflag's type words,
/// descriptions wrapped in a column of their own.
fn options_section(cmd: &Command) -> String {
    let mut out = String::new();
    // Sorted by long name, as pflag lists them.
    let mut opts: Vec<&Arg> = options(cmd).collect();
    opts.sort_by_key(|a| a.get_long().unwrap_or_default());
    let rows: Vec<(String, String)> = opts
        .into_iter()
        .map(|a| {
            let short = a
                .get_short()
                .map(|c| format!("-{c}, "))
                .unwrap_or_else(|| "    ".into());
            let long = a.get_long().map(|l| format!("--{l}")).unwrap_or_default();
            let typ = if a.get_action().takes_values() {
                format!(" {}", value_name(a))
            } else {
                String::new()
            };
            let desc = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            (format!("  {short}{long}{typ}"), desc)
        })
        .collect();
    if !rows.is_empty() {
        out.push_str("Options:\n");
        // pflag: descriptions start three columns after the longest flag.
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (left, desc) in rows {
            let text = pflag_wrap(width + 3, HELP_WIDTH_CHARS - 1, &desc);
            out.push_str(format!("{left:width$}   {text}").trim_end());
            out.push('\n');
        }
    }
    out
}

/// pflag 1.0.6's `wrap(i, w, s)`, which Docker's help uses: `s` wrapped to
/// `cols` columns, continuation lines indented by `indent`, the first line
/// not (the caller has indented it). Runs of spaces inside a line are kept,
/// so Docker's aligned `'table':            Print ...` stays aligned.
fn pflag_wrap(indent: usize, cols: usize, s: &str) -> String {
    let mut indent = indent;
    let mut room = cols.saturating_sub(indent);
    let mut out = String::new();
    // Not enough room: the whole description goes below, at column 16.
    if room < 24 {
        indent = 16;
        room = cols.saturating_sub(indent);
        out = format!("\n{}", " ".repeat(indent));
    }
    if room < 24 {
        return s.replace('\n', &out);
    }
    // pflag lets the last line run 5 columns over rather than orphan a
    // short word.
    let slop = 5;
    let room = room - slop;
    let newline = format!("\n{}", " ".repeat(indent));
    let (first, mut rest) = pflag_wrap_n(room, slop, s);
    out.push_str(&first.replace('\n', &newline));
    while !rest.is_empty() {
        let (line, more) = pflag_wrap_n(room, slop, rest);
        out.push_str(&newline);
        out.push_str(&line.replace('\n', &newline));
        rest = more;
    }
    out
}

/// pflag's `wrapN`: `s` split at the last blank or newline within `i`
/// bytes, unless all of `s` fits in `i + slop`. Only ASCII bytes are split
/// at, so both halves are valid UTF-8.
fn pflag_wrap_n(i: usize, slop: usize, s: &str) -> (&str, &str) {
    if i + slop > s.len() {
        return (s, "");
    }
    let head = &s.as_bytes()[..i];
    let Some(w) = head
        .iter()
        .rposition(|b| matches!(b, b' ' | b'\t' | b'\n'))
        .filter(|&w| w > 0)
    else {
        return (s, "");
    };
    match head.iter().rposition(|&b| b == b'\n') {
        Some(nl) if nl > 0 && nl < w => (&s[..nl], &s[nl + 1..]),
        _ => (&s[..w], &s[w + 1..]),
    }
}

/// Whether Docker's layout applies: `secret` and `config` mirror Docker's
/// commands; the rest of secretctl keeps clap's own messages.
fn docker_shaped(path: &[&Command]) -> bool {
    path.get(1)
        .is_some_and(|c| matches!(c.get_name(), "secret" | "config"))
}

/// pflag's words for a flag's bad or missing value.
fn invalid_value(p: &[&Command], e: &clap::Error) -> Exit {
    let flag = flag_of(e);
    match context(e, ContextKind::InvalidValue) {
        Some(v) if !v.is_empty() => flag_error(
            p,
            &format!(
                "invalid argument {v:?} for {flag:?} flag: {}",
                std::error::Error::source(e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "invalid value".into())
            ),
        ),
        _ => flag_error(p, &format!("flag needs an argument: {flag}")),
    }
}

/// Maps a clap error for `argv` (without the binary's name) to what Docker
/// would print, or `None` where clap's own report stands.
pub fn docker_error(root: &Command, argv: &[String], e: &clap::Error) -> Option<Exit> {
    let path = command_path(root, argv);
    if !docker_shaped(&path) {
        return None;
    }
    let p = path.as_slice();
    Some(match e.kind() {
        // `docker secret` without a command prints the group's help on
        // stderr and exits 0. clap reports it two ways: with no argument
        // at all, and (MissingSubcommand) when a SECRETCTL_* variable
        // counts as an argument given.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
            if p.last().is_some_and(|c| c.has_subcommands()) =>
        {
            Exit {
                stdout: String::new(),
                stderr: help(p),
                status: 0,
            }
        }
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Exit {
            stdout: help(p),
            stderr: String::new(),
            status: 0,
        },
        // An unknown command asked for its help: Docker shows the
        // group's help, as `--help` on the group would.
        ErrorKind::InvalidSubcommand if argv.iter().any(|a| a == "--help" || a == "-h") => Exit {
            stdout: help(p),
            stderr: String::new(),
            status: 0,
        },
        ErrorKind::MissingRequiredArgument | ErrorKind::TooManyValues => arity_error(p),
        ErrorKind::UnknownArgument => {
            let arg = context(e, ContextKind::InvalidArg).unwrap_or_default();
            if arg.starts_with("--") {
                flag_error(p, &format!("unknown flag: {arg}"))
            } else if let Some(c) = arg.strip_prefix('-').and_then(|s| s.chars().next()) {
                flag_error(p, &format!("unknown shorthand flag: '{c}' in {arg}"))
            } else {
                // A word clap did not expect: one argument too many.
                arity_error(p)
            }
        }
        ErrorKind::InvalidSubcommand => {
            let name = full_name(p);
            let sub = context(e, ContextKind::InvalidSubcommand).unwrap_or_default();
            Exit {
                stdout: String::new(),
                stderr: format!(
                    "{}: unknown command: {name} {sub}\n\nUsage:  {name}\n\nRun '{name} --help' for more information\n",
                    p[0].get_name()
                ),
                status: 1,
            }
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => invalid_value(p, e),
        _ => return None,
    })
}

/// A flag value found wrong after parsing (a bad `--filter`), as Docker
/// reports it: the message, the usage line, exit 125.
pub fn flag_error_for(root: &Command, argv: &[String], message: &str) -> Exit {
    let path = command_path(root, argv);
    flag_error(&path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command::new("tool")
            .arg(
                // As secretctl's global flags, which SECRETCTL_* variables
                // set: given, clap counts them as the group's arguments.
                Arg::new("x")
                    .short('x')
                    .global(true)
                    .action(ArgAction::SetTrue),
            )
            .subcommand(
                Command::new("secret")
                    .about("Manage secrets")
                    .subcommand_required(true)
                    .arg_required_else_help(true)
                    .subcommand(
                        Command::new("create")
                            .about("Create a secret")
                            .arg(
                                Arg::new("label")
                                    .short('l')
                                    .long("label")
                                    .value_name("list")
                                    .action(ArgAction::Append)
                                    .help("Secret labels"),
                            )
                            .arg(Arg::new("name").value_name("SECRET").required(true))
                            .arg(Arg::new("file").value_name("file|-")),
                    )
                    .subcommand(
                        Command::new("ls")
                            .visible_alias("list")
                            .about("List secrets")
                            .arg(
                                Arg::new("quiet")
                                    .short('q')
                                    .long("quiet")
                                    .action(ArgAction::SetTrue)
                                    .help("Only display IDs"),
                            ),
                    )
                    .subcommand(
                        Command::new("rm").arg(
                            Arg::new("names")
                                .value_name("SECRET")
                                .required(true)
                                .num_args(1..),
                        ),
                    ),
            )
    }

    fn run(args: &[&str]) -> Exit {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let c = cmd();
        let e = c
            .clone()
            .try_get_matches_from(std::iter::once("tool".to_string()).chain(argv.clone()))
            .unwrap_err();
        docker_error(&c, &argv, &e).expect("docker-shaped")
    }

    #[test]
    fn usage_lines_come_from_the_command_tree() {
        let c = cmd();
        let create = command_path(&c, &["secret".into(), "create".into()]);
        assert_eq!(
            usage_line(&create),
            "tool secret create [OPTIONS] SECRET [file|-]"
        );
        assert_eq!(arity(create.last().unwrap()), (1, Some(2)));
        let rm = command_path(&c, &["-x".into(), "secret".into(), "rm".into()]);
        assert_eq!(usage_line(&rm), "tool secret rm SECRET [SECRET...]");
        assert_eq!(arity(rm.last().unwrap()), (1, None));
        let ls = command_path(&c, &["secret".into(), "list".into(), "a".into()]);
        assert_eq!(full_name(&ls), "tool secret ls");
    }

    #[test]
    fn mistakes_read_as_dockers() {
        let e = run(&["secret", "create", "a", "b", "c"]);
        assert_eq!(e.status, 1);
        assert_eq!(
            e.stderr,
            "tool: 'tool secret create' requires at least 1 and at most 2 arguments\n\n\
             Usage:  tool secret create [OPTIONS] SECRET [file|-]\n\n\
             Run 'tool secret create --help' for more information\n"
        );
        let e = run(&["secret", "rm"]);
        assert!(e
            .stderr
            .starts_with("tool: 'tool secret rm' requires at least 1 argument\n"));
        assert!(e
            .stderr
            .ends_with("See 'tool secret rm --help' for more information\n"));
        let e = run(&["secret", "ls", "x"]);
        assert!(e
            .stderr
            .starts_with("tool: 'tool secret ls' accepts no arguments\n"));
        let e = run(&["secret", "ls", "--bogus"]);
        assert_eq!(
            (e.status, e.stderr.lines().next()),
            (125, Some("unknown flag: --bogus"))
        );
        let e = run(&["secret", "ls", "-z"]);
        assert_eq!(
            e.stderr.lines().next(),
            Some("unknown shorthand flag: 'z' in -z")
        );
        // A group without a command: its help on stderr, exit 0, as
        // Docker; the same when clap counts an environment variable as an
        // argument (MissingSubcommand).
        let e = run(&["secret"]);
        assert_eq!((e.status, e.stdout.as_str()), (0, ""));
        assert!(
            e.stderr.starts_with("Usage:  tool secret COMMAND"),
            "{}",
            e.stderr
        );
        let e = run(&["-x", "secret"]);
        assert_eq!((e.status, e.stdout.as_str()), (0, ""));
        assert!(
            e.stderr.starts_with("Usage:  tool secret COMMAND"),
            "{}",
            e.stderr
        );
        // An unknown command with --help: the group's help, exit 0.
        let e = run(&["secret", "bogus", "--help"]);
        assert_eq!(e.status, 0);
        assert!(
            e.stdout.starts_with("Usage:  tool secret COMMAND"),
            "{}",
            e.stdout
        );
        let e = run(&["secret", "bogus"]);
        assert_eq!(e.status, 1);
        // A command without flags: its help ends without a blank line.
        let e = run(&["secret", "rm", "--help"]);
        assert!(
            e.stdout.ends_with("[SECRET...]\n") && !e.stdout.ends_with("\n\n"),
            "{:?}",
            e.stdout
        );
        let e = run(&["secret", "ls", "--help"]);
        assert_eq!(e.status, 0);
        assert_eq!(
            e.stdout,
            "Usage:  tool secret ls [OPTIONS]\n\nList secrets\n\n\
             Aliases:\n  tool secret ls, tool secret list\n\n\
             Options:\n  -q, --quiet   Only display IDs\n"
        );
    }

    #[test]
    fn pflag_wraps_as_docker() {
        // A description that fits is left alone, runs of spaces included.
        let fits = "'json':             Print in JSON format";
        assert_eq!(pflag_wrap(24, 79, fits), fits);
        // Lines break at the last blank within 50 columns (79 - 24 - 5).
        assert_eq!(
            pflag_wrap(
                24,
                79,
                "'table':            Print output in table format with column headers (default)"
            ),
            format!(
                "'table':            Print output in table format\n{}with column headers (default)",
                " ".repeat(24)
            )
        );
        // Too little room: the description starts on a line of its own,
        // at column 16.
        assert_eq!(
            pflag_wrap(60, 79, "short words"),
            format!("\n{}short words", " ".repeat(16))
        );
        // Text without blanks, multibyte text: kept whole, no panic.
        let long = "é".repeat(80);
        assert_eq!(pflag_wrap(24, 79, &long), long);
        assert_eq!(pflag_wrap_n(4, 0, "aé b"), ("aé", "b"));
    }
}

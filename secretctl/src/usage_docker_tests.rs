//! secretctl's help for `secret` and `config`, byte for byte against what
//! Docker 28.2.2's own `docker ... --help` prints (captured when its output
//! is not a terminal, with `docker` written `secretctl`): pflag's wrapping,
//! the aligned `--format` descriptions, the group's description and
//! commands.

/// The help `secretctl ARGS --help` prints (stdout, exit 0).
fn help(args: &str) -> String {
    let argv: Vec<String> = std::iter::once("secretctl")
        .chain(args.split(' '))
        .chain(std::iter::once("--help"))
        .map(str::to_string)
        .collect();
    let exit = crate::parse(argv).expect_err("--help prints help");
    assert_eq!((exit.status, exit.stderr.as_str()), (0, ""), "{args}");
    exit.stdout
}

/// Docker's text for `docker ARGS --help`, as secretctl words it.
fn docker(text: &str) -> String {
    text.replace("docker ", "secretctl ")
}

#[test]
fn secret_ls_help_is_dockers() {
    let expected = r#"Usage:  docker secret ls [OPTIONS]

List secrets

Aliases:
  docker secret ls, docker secret list

Options:
  -f, --filter filter   Filter output based on conditions provided
      --format string   Format output using a custom template:
                        'table':            Print output in table format
                        with column headers (default)
                        'table TEMPLATE':   Print output in table format
                        using the given Go template
                        'json':             Print in JSON format
                        'TEMPLATE':         Print output using the given
                        Go template.
                        Refer to https://docs.docker.com/go/formatting/
                        for more information about formatting output with
                        templates
  -q, --quiet           Only display IDs
"#;
    assert_eq!(help("secret ls"), docker(expected));
}

#[test]
fn secret_inspect_help_is_dockers() {
    let expected = r#"Usage:  docker secret inspect [OPTIONS] SECRET [SECRET...]

Display detailed information on one or more secrets

Options:
  -f, --format string   Format output using a custom template:
                        'json':             Print in JSON format
                        'TEMPLATE':         Print output using the given
                        Go template.
                        Refer to https://docs.docker.com/go/formatting/
                        for more information about formatting output with
                        templates
      --pretty          Print the information in a human friendly format
"#;
    assert_eq!(help("secret inspect"), docker(expected));
}

#[test]
fn config_ls_help_is_dockers() {
    let expected = r#"Usage:  docker config ls [OPTIONS]

List configs

Aliases:
  docker config ls, docker config list

Options:
  -f, --filter filter   Filter output based on conditions provided
      --format string   Format output using a custom template:
                        'table':            Print output in table format
                        with column headers (default)
                        'table TEMPLATE':   Print output in table format
                        using the given Go template
                        'json':             Print in JSON format
                        'TEMPLATE':         Print output using the given
                        Go template.
                        Refer to https://docs.docker.com/go/formatting/
                        for more information about formatting output with
                        templates
  -q, --quiet           Only display IDs
"#;
    assert_eq!(help("config ls"), docker(expected));
}

#[test]
fn config_inspect_help_is_dockers() {
    let expected = r#"Usage:  docker config inspect [OPTIONS] CONFIG [CONFIG...]

Display detailed information on one or more configs

Options:
  -f, --format string   Format output using a custom template:
                        'json':             Print in JSON format
                        'TEMPLATE':         Print output using the given
                        Go template.
                        Refer to https://docs.docker.com/go/formatting/
                        for more information about formatting output with
                        templates
      --pretty          Print the information in a human friendly format
"#;
    assert_eq!(help("config inspect"), docker(expected));
}

#[test]
fn secret_create_help_is_dockers() {
    let expected = r#"Usage:  docker secret create [OPTIONS] SECRET [file|-]

Create a secret from a file or STDIN as content

Options:
  -d, --driver string            Secret driver
  -l, --label list               Secret labels
      --template-driver string   Template driver
"#;
    assert_eq!(help("secret create"), docker(expected));
}

#[test]
fn config_create_help_is_dockers() {
    let expected = r#"Usage:  docker config create [OPTIONS] CONFIG file|-

Create a config from a file or STDIN

Options:
  -l, --label list               Config labels
      --template-driver string   Template driver
"#;
    assert_eq!(help("config create"), docker(expected));
}

#[test]
fn secret_rm_help_is_dockers() {
    let expected = r#"Usage:  docker secret rm SECRET [SECRET...]

Remove one or more secrets

Aliases:
  docker secret rm, docker secret remove
"#;
    assert_eq!(help("secret rm"), docker(expected));
}

#[test]
fn config_rm_help_is_dockers() {
    let expected = r#"Usage:  docker config rm CONFIG [CONFIG...]

Remove one or more configs

Aliases:
  docker config rm, docker config remove
"#;
    assert_eq!(help("config rm"), docker(expected));
}

#[test]
fn secret_group_help_is_dockers_then_secretds() {
    // Docker's description and commands exactly; secretd's own commands
    // come after them, in a section of their own.
    let expected = r#"Usage:  docker secret COMMAND

Manage Swarm secrets

Commands:
  create      Create a secret from a file or STDIN as content
  inspect     Display detailed information on one or more secrets
  ls          List secrets
  rm          Remove one or more secrets

secretd commands:
  rotate      Add a new version of a secret from a file or STDIN as content
  versions    Show a secret's current version and every version kept

Run 'docker secret COMMAND --help' for more information on a command.
"#;
    assert_eq!(help("secret"), docker(expected));
}

#[test]
fn config_group_help_is_dockers_then_secretds() {
    // Docker's description and commands exactly; secretd's own commands
    // come after them, in a section of their own.
    let expected = r#"Usage:  docker config COMMAND

Manage Swarm configs

Commands:
  create      Create a config from a file or STDIN
  inspect     Display detailed information on one or more configs
  ls          List configs
  rm          Remove one or more configs

Run 'docker config COMMAND --help' for more information on a command.
"#;
    assert_eq!(help("config"), docker(expected));
}

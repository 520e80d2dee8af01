//! The real `secretctl` against a real 3-member cluster: every `secret`,
//! `config` and `task` command and flag, the shapes Docker prints, and
//! Docker's error messages.

use crate::common::Cluster;
use serde_json::Value;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// The columns of a table row (runs of 3+ spaces separate them).
fn cells(line: &str) -> Vec<String> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// Data one byte under the limit is accepted; at the limit, Docker's error.
fn check_size_limit(c: &Cluster, kind: &str, limit: usize) {
    let (_, e) = c.sctl_err(&[kind, "create", "big", "-"], Some(&vec![b'x'; limit]));
    assert_eq!(
        e,
        format!("Error response from daemon: rpc error: code = InvalidArgument desc = {kind} data must be larger than 0 and less than {limit} bytes\n")
    );
    c.sctl(
        &[kind, "create", "biggest", "-"],
        Some(&vec![b'x'; limit - 1]),
    );
}

fn is_id(s: &str) -> bool {
    s.len() == 25
        && s.bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_like_docker() {
    let c = Cluster::start_with(3, &["--secret-history", "2"]);
    c.wait_leader(crate::common::secs(15)).await;

    // create: from stdin and from a file, with labels; prints the ID.
    let id = c.sctl(
        &["secret", "create", "db_pw", "-"],
        Some(b"hunter2-CANARYSTDIN"),
    );
    let id = id.trim().to_string();
    assert!(is_id(&id), "{id:?}");
    let file = c.dir.path().join("s2.txt");
    std::fs::write(&file, "s2 data").unwrap();
    let f = file.to_str().unwrap();
    let s2 = c.sctl(
        &[
            "secret", "create", "--label", "env=prod", "-l", "team", "s2", f,
        ],
        None,
    );
    let s2 = s2.trim().to_string();
    let s10 = c
        .sctl(&["secret", "create", "s10", f], None)
        .trim()
        .to_string();
    let s1 = c
        .sctl(&["secret", "create", "s1", f], None)
        .trim()
        .to_string();

    // ls: Docker's columns, natural name order, relative times.
    let out = c.sctl(&["secret", "ls"], None);
    let l = lines(&out);
    assert_eq!(
        cells(l[0]),
        ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"],
        "{out}"
    );
    assert!(
        l[0].starts_with("ID                          NAME"),
        "{out}"
    );
    let names: Vec<String> = l[1..].iter().map(|r| cells(r)[1].clone()).collect();
    assert_eq!(names, ["db_pw", "s1", "s2", "s10"]);
    for r in &l[1..] {
        let cl = cells(r);
        assert!(is_id(&cl[0]));
        assert!(cl[2].ends_with(" ago") && cl[3].ends_with(" ago"), "{r}");
    }
    assert_eq!(lines(&c.sctl(&["secret", "ls", "-q"], None)).len(), 4);
    // Docker's filters and flags: a case-insensitive name prefix, several
    // OR-ed; -q twice is -q; -q gives way to a format of one's own.
    assert_eq!(
        lines(&c.sctl(
            &["secret", "ls", "-q", "-q", "-f", "name=DB", "-f", "name=S2"],
            None
        )),
        [id.as_str(), s2.as_str()]
    );
    assert_eq!(
        c.sctl(
            &[
                "secret",
                "ls",
                "-q",
                "--format",
                "{{.Name}}",
                "-f",
                "name=db"
            ],
            None
        ),
        "db_pw\n"
    );
    let out = c.secretctl(&["secret", "ls", "--filter", "name"], None);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "invalid argument \"name\" for \"-f, --filter\" flag: bad format of filter (expected name=value)\n\n\
         Usage:  secretctl secret ls [OPTIONS]\n\nRun 'secretctl secret ls --help' for more information\n"
    );
    // An argument that is not UTF-8 is a usage error, not a panic.
    let out = std::process::Command::new(crate::common::secretctl_bin())
        .args([
            std::ffi::OsStr::new("task"),
            std::os::unix::ffi::OsStrExt::from_bytes(b"a\xffb"),
        ])
        .output()
        .expect("run secretctl");
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "secretctl: argument 2 is not valid UTF-8\n"
    );
    // A mistake made before any member is asked is not the daemon's answer.
    let https = format!("https://{}", c.endpoint(0));
    let out = c.secretctl_at(&https, &["secret", "ls"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{https} is https: give the cluster's CA with --cacert\n")
    );
    let (_, e) = c.sctl_err(&["secret", "ls", "-f", "bogus=1"], None);
    assert_eq!(e, "Error response from daemon: Invalid filter 'bogus'\n");
    let (_, e) = c.sctl_err(
        &["secret", "create", "--driver", "vault", "d1", "-"],
        Some(b"x"),
    );
    // Docker's words: data with a driver is refused by its CLI; a driver
    // alone is looked up as a plugin, and secretd has none (Docker 28.2.2
    // against a swarm-mode dockerd prints exactly these lines, exit 1).
    assert_eq!(e, "When using secret driver secret data must be empty\n");
    let (_, e) = c.sctl_err(&["secret", "create", "--driver", "vault", "d1"], None);
    assert_eq!(
        e,
        "Error response from daemon: rpc error: code = Unknown desc = plugin \"vault\" not found\n"
    );
    c.sctl(&["secret", "create", "--driver", "", "d1", "-"], Some(b"x"));
    c.sctl(&["secret", "rm", "d1"], None);
    assert_eq!(
        lines(&c.sctl(&["secret", "ls", "-q", "--filter", "name=s1"], None)),
        [s1.as_str(), s10.as_str()]
    );
    assert_eq!(
        c.sctl(&["secret", "ls", "-q", "-f", "label=env=prod"], None)
            .trim(),
        s2
    );
    assert_eq!(
        c.sctl(&["secret", "ls", "-q", "-f", "label=team"], None)
            .trim(),
        s2
    );
    assert_eq!(
        c.sctl(&["secret", "ls", "-q", "-f", "label=env=dev"], None),
        ""
    );
    assert_eq!(
        c.sctl(
            &["secret", "ls", "-q", "-f", &format!("id={}", &id[..6])],
            None
        )
        .trim(),
        id
    );
    let json_rows = c.sctl(&["secret", "ls", "--format", "json", "-f", "name=s2"], None);
    let row: Value = serde_json::from_str(json_rows.trim()).unwrap();
    assert_eq!(row["Name"], "s2");
    assert_eq!(row["Labels"], "env=prod,team=");
    assert!(row.get("LabelMap").is_none(), "Docker's fields only: {row}");
    let (out, e) = c.sctl_err(&["secret", "ls", "--format", "{{.Name}} {{.Nope}}"], None);
    assert_eq!(out, "");
    assert_eq!(e, "template parsing error: template: :1:12: executing \"\" at <.Nope>: can't evaluate field Nope in type *secret.secretContext\n");
    assert!(row["CreatedAt"].as_str().unwrap().ends_with(" ago"));
    assert_eq!(
        c.sctl(
            &[
                "secret",
                "ls",
                "--format",
                "{{.Name}}:{{.Label \"env\"}}",
                "-f",
                "name=s2"
            ],
            None
        ),
        "s2:prod\n"
    );
    let t = c.sctl(
        &["secret", "ls", "--format", "table {{.Name}}\\t{{.ID}}"],
        None,
    );
    assert_eq!(cells(lines(&t)[0]), ["NAME", "ID"]);

    // inspect: a JSON array indented by 4 spaces, Docker's keys in order,
    // by ID, name or unique ID prefix; never the data.
    let out = c.sctl(&["secret", "inspect", "db_pw", &s2[..8]], None);
    assert!(out.starts_with("[\n    {\n        \"ID\": "), "{out}");
    assert!(
        !out.contains("CANARYSTDIN") && !out.contains("\"Data\""),
        "{out}"
    );
    let pos: Vec<usize> = [
        "\"ID\"",
        "\"Version\"",
        "\"CreatedAt\"",
        "\"UpdatedAt\"",
        "\"Spec\"",
        "\"Name\"",
        "\"Labels\"",
    ]
    .iter()
    .map(|k| out.find(k).unwrap())
    .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "key order: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["ID"], id.as_str());
    assert!(v[0]["Version"]["Index"].as_u64().unwrap() > 0);
    assert!(v[0]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v[0]["Spec"]["Labels"], serde_json::json!({}));
    assert_eq!(v[1]["Spec"]["Name"], "s2");
    assert_eq!(v[1]["Spec"]["Labels"]["env"], "prod");
    assert!(v[0].get("CurrentVersion").is_none(), "Docker's shape only");
    assert_eq!(
        c.sctl(&["secret", "inspect", &id], None),
        c.sctl(&["secret", "inspect", "--format", "json", &id], None)
    );
    assert_eq!(
        c.sctl(
            &[
                "secret",
                "inspect",
                "-f",
                "{{.Spec.Name}} {{index .Spec.Labels \"env\"}}",
                "s2"
            ],
            None
        ),
        "s2 prod\n"
    );
    // Go's time.Time, as Docker's typed template sees it; JSON keeps RFC 3339.
    let t = c.sctl(
        &[
            "secret",
            "inspect",
            "-f",
            "{{.CreatedAt}}|{{json .CreatedAt}}",
            "s2",
        ],
        None,
    );
    let (go, js) = t.trim_end().split_once('|').unwrap();
    assert!(
        go.ends_with(" +0000 UTC") && go.as_bytes()[10] == b' ',
        "{t}"
    );
    assert_eq!(
        js.trim_matches('"')
            .replacen('T', " ", 1)
            .replace('Z', " +0000 UTC"),
        go
    );
    let pretty = c.sctl(&["secret", "inspect", "--pretty", "s2"], None);
    assert!(pretty.starts_with(&format!("ID:              {s2}\nName:              s2\nLabels:\n - env=prod\n - team\nDriver:            \nCreated at:        ")), "{pretty}");
    // Several secrets: no separator (configs: a blank line); --format is
    // ignored with --pretty, as Docker does.
    let two = c.sctl(
        &["secret", "inspect", "--pretty", "-f", "{{.ID}}", "s2", "s2"],
        None,
    );
    assert_eq!(two, format!("{pretty}{pretty}"));

    // rotate: a new version, history bounded by --secret-history 2.
    for i in 2..=5 {
        let out = c.sctl(
            &["secret", "rotate", "db_pw", "-"],
            Some(format!("v{i}").as_bytes()),
        );
        assert_eq!(out.trim(), id);
    }
    let v: Value = serde_json::from_str(&c.sctl(&["secret", "versions", "db_pw"], None)).unwrap();
    assert_eq!(v[0]["CurrentVersion"], 5);
    let kept: Vec<u64> = v[0]["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Version"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [3, 4, 5]);
    let v: Value = serde_json::from_str(&c.sctl(&["secret", "inspect", "db_pw"], None)).unwrap();
    assert_ne!(v[0]["UpdatedAt"], v[0]["CreatedAt"]);

    // Docker's errors: one line on stderr, exit status 1.
    let (_, e) = c.sctl_err(&["secret", "create", "empty", "-"], Some(b""));
    assert_eq!(e, "error reading from STDIN: data is empty\n");
    let empty = c.dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let (_, e) = c.sctl_err(
        &["secret", "create", "empty", empty.to_str().unwrap()],
        None,
    );
    assert_eq!(
        e,
        format!("error reading from {}: data is empty\n", empty.display())
    );
    // A folder, as Docker 28 words it.
    let (_, e) = c.sctl_err(
        &["secret", "create", "dir", c.dir.path().to_str().unwrap()],
        None,
    );
    let d = c.dir.path().display();
    assert_eq!(
        e,
        format!("error reading from {d}: read {d}: is a directory\n")
    );
    let long = "a".repeat(65);
    let (_, e) = c.sctl_err(&["secret", "create", &long, "-"], Some(b"x"));
    assert_eq!(e, "Error response from daemon: rpc error: code = InvalidArgument desc = invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]\n");
    c.sctl(&["secret", "create", &"a".repeat(64), "-"], Some(b"x"));
    let (_, e) = c.sctl_err(&["secret", "create", "db_pw", "-"], Some(b"x"));
    assert_eq!(
        e,
        "Error response from daemon: rpc error: code = AlreadyExists desc = secret db_pw already exists\n"
    );
    check_size_limit(&c, "secret", 500 * 1024);
    let (out, e) = c.sctl_err(&["secret", "inspect", "nosuch"], None);
    assert_eq!(
        (out.as_str(), e.as_str()),
        (
            "[]\n",
            "Error response from daemon: secret nosuch not found\n"
        )
    );
    let (out, e) = c.sctl_err(&["secret", "inspect", "db_pw", "nosuch"], None);
    assert_eq!(e, "Error response from daemon: secret nosuch not found\n");
    assert!(out.contains("\"db_pw\""));

    // An ambiguous ID prefix: 37 IDs must share a first character.
    let mut ids: Vec<String> = c
        .sctl(&["secret", "ls", "-q"], None)
        .lines()
        .map(str::to_string)
        .collect();
    let mut n = 0;
    let (prefix, count) = loop {
        let mut by_first = std::collections::BTreeMap::new();
        for i in &ids {
            *by_first.entry(i[..1].to_string()).or_insert(0) += 1;
        }
        if let Some((p, n)) = by_first.into_iter().find(|(_, n)| *n >= 2) {
            break (p, n);
        }
        ids.push(
            c.sctl(&["secret", "create", &format!("amb{n}"), "-"], Some(b"x"))
                .trim()
                .to_string(),
        );
        n += 1;
    };
    let (_, e) = c.sctl_err(&["secret", "inspect", &prefix], None);
    assert_eq!(
        e,
        format!(
            "Error response from daemon: secret {prefix} is ambiguous ({count} matches found)\n"
        )
    );

    // rm: prints each removed argument, keeps going, fails at the end.
    let (out, e) = c.sctl_err(&["secret", "rm", "s1", "nosuch", &s10[..10]], None);
    assert_eq!(out, format!("s1\n{}\n", &s10[..10]));
    assert_eq!(e, "Error response from daemon: secret nosuch not found\n");
    let (_, e) = c.sctl_err(&["secret", "rm", "s1"], None);
    assert_eq!(e, "Error response from daemon: secret s1 not found\n");

    // The etcd API neither shows nor touches the reserved range.
    assert_eq!(c.ok(&["get", "", "--prefix", "--keys-only"]), "");
    // etcdctl cannot pass raw 0xff bytes; write through gRPC instead.
    let mut kv = c.kv(0).await;
    let refused = kv
        .put(secretd_api::pb::etcdserverpb::PutRequest {
            key: b"\xff\xffsecretd/obj/s/x".to_vec(),
            value: b"forged".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.message().contains("reserved"), "{refused:?}");
    c.ok(&["put", "user", "key"]);
    c.ok(&["del", "", "--from-key"]);
    assert_eq!(
        lines(&c.sctl(&["secret", "ls", "-q", "-f", "name=s2"], None)),
        [s2.as_str()]
    );

    // Shell completions.
    assert!(c.sctl(&["completion", "bash"], None).contains("secretctl"));
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_and_tasks_like_docker() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "create", "db_pw", "-"], Some(b"pw"));
    let conf = c.sctl(
        &["config", "create", "-l", "app=web", "nginx_conf", "-"],
        Some(b"server {}\n"),
    );
    let conf = conf.trim().to_string();
    assert!(is_id(&conf));

    // Config inspect returns the data (base64), pretty shows it as text.
    let out = c.sctl(&["config", "inspect", "nginx_conf"], None);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Spec"]["Data"], "c2VydmVyIHt9Cg==");
    assert!(out.find("\"Labels\"").unwrap() < out.find("\"Data\"").unwrap());
    assert!(v[0].get("CurrentVersion").is_none());
    let pretty = c.sctl(&["config", "inspect", "--pretty", "nginx_conf"], None);
    assert!(
        pretty.contains("Name:\t\t\tnginx_conf\n") && pretty.ends_with("Data:\nserver {}\n\n"),
        "{pretty:?}"
    );
    let out = c.sctl(&["config", "ls"], None);
    assert_eq!(cells(lines(&out)[0]), ["ID", "NAME", "CREATED", "UPDATED"]);
    assert_eq!(cells(lines(&out)[1])[1], "nginx_conf");
    check_size_limit(&c, "config", 1000 * 1024);
    let (_, e) = c.sctl_err(&["config", "inspect", "nope"], None);
    assert_eq!(e, "Error response from daemon: config nope not found\n");

    // Tasks: create with defaults and explicit fields.
    let out = c.sctl(
        &[
            "task",
            "create",
            "web.1",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,target=password,uid=1000,gid=1000,mode=0400",
            "--config",
            "source=nginx_conf,target=/etc/nginx/nginx.conf",
        ],
        None,
    );
    assert_eq!(out, "web.1\n");
    c.sctl(
        &[
            "task", "create", "web.2", "--node", "n2", "--secret", "db_pw",
        ],
        None,
    );
    let v: Value =
        serde_json::from_str(&c.sctl(&["task", "inspect", "web.1", "web.2"], None)).unwrap();
    let s = &v[0]["Spec"]["Secrets"][0];
    assert_eq!(
        s["File"],
        serde_json::json!({"Name": "password", "UID": "1000", "GID": "1000", "Mode": 0o400})
    );
    assert_eq!(s["SecretName"], "db_pw");
    assert!(is_id(s["SecretID"].as_str().unwrap()));
    assert_eq!(v[0]["Spec"]["Configs"][0]["ConfigID"], conf.as_str());
    assert_eq!(v[0]["Spec"]["Node"], "n1");
    let d = &v[1]["Spec"]["Secrets"][0]["File"];
    assert_eq!(
        *d,
        serde_json::json!({"Name": "db_pw", "UID": "0", "GID": "0", "Mode": 0o444})
    );
    let out = c.sctl(&["task", "ls"], None);
    assert_eq!(
        cells(lines(&out)[0]),
        ["ID", "NODE", "SECRETS", "CONFIGS", "CREATED"]
    );
    assert_eq!(
        cells(lines(&out)[1])[..4],
        ["web.1", "n1", "db_pw", "nginx_conf"]
    );
    assert_eq!(
        c.sctl(&["task", "ls", "-q", "--node", "n2"], None),
        "web.2\n"
    );

    // Errors: duplicate task, unknown source, bad spec, in use.
    let (_, e) = c.sctl_err(&["task", "create", "web.1", "--node", "n1"], None);
    assert_eq!(e, "Error response from daemon: task web.1 already exists\n");
    let (_, e) = c.sctl_err(
        &[
            "task", "create", "web.3", "--node", "n1", "--secret", "nosuch",
        ],
        None,
    );
    // Docker 28.2.2's `docker service create --secret nosuch`.
    assert_eq!(e, "secret not found: nosuch\n");
    let (_, e) = c.sctl_err(
        &[
            "task",
            "create",
            "web.3",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,mode=999",
        ],
        None,
    );
    assert!(e.starts_with("invalid mode (octal) \"999\""), "{e}");
    let (_, e) = c.sctl_err(
        &[
            "task",
            "create",
            "web.3",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,target=../x",
        ],
        None,
    );
    assert!(e.contains("invalid secret target \"../x\""), "{e}");
    let (_, e) = c.sctl_err(&["secret", "rm", "db_pw"], None);
    assert_eq!(e, "Error response from daemon: rpc error: code = InvalidArgument desc = secret 'db_pw' is in use by the following tasks: web.1, web.2\n");
    let (_, e) = c.sctl_err(&["config", "rm", "nginx_conf"], None);
    assert_eq!(
        e,
        "Error response from daemon: rpc error: code = InvalidArgument desc = config 'nginx_conf' is in use by the following task: web.1\n"
    );
    let (_, e) = c.sctl_err(&["task", "inspect", "web.9"], None);
    assert_eq!(e, "Error: No such task: web.9\n");

    // Pinning keeps a version past the history limit.
    c.sctl(
        &[
            "task",
            "create",
            "pin.1",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,target=old,version=1",
        ],
        None,
    );
    for i in 0..7 {
        c.sctl(
            &["secret", "rotate", "db_pw", "-"],
            Some(format!("v{i}").as_bytes()),
        );
    }
    let v: Value = serde_json::from_str(&c.sctl(&["secret", "versions", "db_pw"], None)).unwrap();
    let kept: Vec<u64> = v[0]["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        kept,
        [1, 4, 5, 6, 7, 8],
        "default history is 5 old versions, plus the pinned 1"
    );
    let (_, e) = c.sctl_err(
        &[
            "task",
            "create",
            "pin.2",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,version=2",
        ],
        None,
    );
    assert_eq!(e, "Error response from daemon: secret db_pw has no version 2 (versions kept: 1, 4, 5, 6, 7, 8)\n");

    // Removing the tasks frees the objects.
    let (out, e) = c.sctl_err(&["task", "rm", "web.1", "web.9", "web.2", "pin.1"], None);
    assert_eq!(out, "web.1\nweb.2\npin.1\n");
    assert_eq!(e, "Error: No such task: web.9\n");
    assert_eq!(c.sctl(&["secret", "rm", "db_pw"], None), "db_pw\n");
    assert_eq!(
        c.sctl(&["config", "rm", "nginx_conf"], None),
        "nginx_conf\n"
    );
    assert_eq!(c.sctl(&["task", "ls", "-q"], None), "");
}

/// The first secrets, created on every member at once, race to create the
/// cluster's KEK: exactly one generation is registered, every member ends
/// up holding that key (checked against its verifier), and every create
/// succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn members_racing_to_create_the_kek_agree_on_one() {
    use secretd_api::pb::secretstore::{secrets_client::SecretsClient, CreateRequest};
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    let mut calls = Vec::new();
    for i in 0..3 {
        for j in 0..4 {
            let mut s = SecretsClient::new(c.channel(i).await);
            calls.push(tokio::spawn(async move {
                s.create(CreateRequest {
                    name: format!("first{i}x{j}"),
                    labels: Default::default(),
                    data: b"x".to_vec(),
                    ..Default::default()
                })
                .await
            }));
        }
    }
    for call in calls {
        call.await.unwrap().expect("every racing create succeeds");
    }
    for i in 0..3 {
        let out = c.secretctl_at(&c.endpoint(i), &["cluster", "settings"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("KEK generations:       1\n")
                && text.contains("held by this member:   1\n"),
            "member {i}: {text}"
        );
        // And each member can seal with it.
        c.sctl(
            &[
                "--endpoints",
                &c.endpoint(i),
                "secret",
                "rotate",
                "first0x0",
                "-",
            ],
            Some(b"y"),
        );
    }
}

/// `secretctl ... | head` on a pipe that is already closed ends quietly (as
/// a shell tool does, by SIGPIPE), never with a panic and a backtrace.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_secretctl_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    for i in 0..20 {
        c.sctl(&["secret", "create", &format!("s{i}"), "-"], Some(b"x"));
    }
    let mut child = std::process::Command::new(crate::common::secretctl_bin())
        .args(["--endpoints", &c.endpoint(0), "secret", "inspect"])
        .args((0..20).map(|i| format!("s{i}")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before secretctl writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}

/// `ls` reads the member's list page by page: configs whose labels make
/// the list larger than one answer (3 MiB) are all listed, filtered or not;
/// so are tasks whose environments make theirs larger.
#[tokio::test(flavor = "multi_thread")]
async fn ls_reads_every_page_of_a_list_too_large_for_one_answer() {
    let c = Cluster::start_with(1, &[]);
    c.wait_leader(crate::common::secs(15)).await;
    let labels: Vec<String> = (0..64)
        .flat_map(|l| {
            [
                "--label".to_string(),
                format!("l{l:02}={}", "v".repeat(4096)),
            ]
        })
        .collect();
    for i in 0..13 {
        let name = format!("big-{i:02}");
        let mut args: Vec<&str> = vec!["config", "create"];
        args.extend(labels.iter().map(String::as_str));
        args.extend([name.as_str(), "-"]);
        c.sctl(&args, Some(b"x"));
    }
    let all = c.sctl(&["config", "ls", "--format", "{{.Name}}"], None);
    let want: Vec<String> = (0..13).map(|i| format!("big-{i:02}")).collect();
    assert_eq!(lines(&all), want);
    let some = c.sctl(&["config", "ls", "-q", "--filter", "name=big-1"], None);
    assert_eq!(lines(&some).len(), 3, "big-10, big-11, big-12: {some}");
    // Tasks too: 60 of 60 KB of environment are more than one answer.
    let env = format!("BIG={}", "e".repeat(60_000));
    for i in 0..60 {
        let id = format!("t{i:02}");
        c.sctl(
            &["task", "create", &id, "--node", "n1", "--env", &env],
            None,
        );
    }
    let tasks = c.sctl(&["task", "ls", "-q"], None);
    let want: Vec<String> = (0..60).map(|i| format!("t{i:02}")).collect();
    assert_eq!(lines(&tasks), want);
}

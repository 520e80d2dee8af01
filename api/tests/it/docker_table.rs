//! `secretctl secret|config` replays what Docker printed: the table
//! `docker_table.json` holds 70-odd commands with the exact stdout, stderr
//! and exit status Docker's 28.x client gave for them against a swarm-mode
//! `dockerd` (captured by `scripts/docker-table.py`, never from
//! secretctl). Each row runs, in order, against a real member; IDs and times
//! are normalised the same way on both sides, as the script's docstring
//! says.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::common::Cluster;

const TABLE: &str = include_str!("docker_table.json");

struct Normaliser {
    time: Regex,
    ago: Regex,
    header: Regex,
    index: Regex,
    docker: Regex,
}

impl Normaliser {
    fn new() -> Normaliser {
        // The same expressions as scripts/docker-table.py.
        Normaliser {
            time: Regex::new(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z| [+-]\d{4} (UTC|utc))")
                .unwrap(),
            ago: Regex::new(
                r"(Less than a second|About a minute|About an hour|\d+ (second|minute|hour)s?|an? (second|minute|hour)) ago( +)?",
            )
            .unwrap(),
            header: Regex::new("CREATED +UPDATED").unwrap(),
            index: Regex::new(r#""Index": \d+"#).unwrap(),
            docker: Regex::new(r"\bdocker\b").unwrap(),
        }
    }

    fn apply(&self, text: &str, ids: &BTreeMap<String, String>) -> String {
        let mut t = text.to_string();
        for (name, id) in ids {
            let mut token = format!("ID-{name}");
            while token.len() < 25 {
                token.push('-');
            }
            token.truncate(25);
            t = t.replace(id.as_str(), &token);
        }
        let t = self.time.replace_all(&t, "<TIME>");
        let t = self.ago.replace_all(&t, |c: &regex::Captures| {
            if c.get(4).is_some() {
                "<AGO>   ".to_string()
            } else {
                "<AGO>".to_string()
            }
        });
        let t = self.header.replace_all(&t, "CREATED   UPDATED");
        let t = self.index.replace_all(&t, "\"Index\": <N>");
        self.docker.replace_all(&t, "secretctl").into_owned()
    }
}

fn ids_now(c: &Cluster) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for kind in ["secret", "config"] {
        let out = c.sctl(&[kind, "ls", "--format", "{{.ID}} {{.Name}}"], None);
        for line in out.lines() {
            let (id, name) = line.split_once(' ').expect("ID NAME");
            ids.insert(name.to_string(), id.to_string());
        }
    }
    ids
}

/// `{id:NAME}` is NAME's ID, `{id6:NAME}` its first six characters.
fn with_ids(arg: &str, ids: &BTreeMap<String, String>) -> String {
    let re = Regex::new(r"\{id(6?):([^}]+)\}").unwrap();
    re.replace_all(arg, |c: &regex::Captures| {
        // An object that was not made leaves the row to fail on its own.
        let Some(id) = ids.get(&c[2]) else {
            return format!("<no object {}>", &c[2]);
        };
        if c[1].is_empty() {
            id.clone()
        } else {
            id[..6].to_string()
        }
    })
    .into_owned()
}

fn run(c: &Cluster, args: &[String], stdin: Vec<u8>) -> (i32, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.secretctl(&args, Some(&stdin));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secretctl_replays_dockers_table() {
    let table: Value = serde_json::from_str(TABLE).expect("docker_table.json");
    let rows = table["rows"].as_array().unwrap();
    assert!(rows.len() >= 60, "the table has {} rows", rows.len());
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    let norm = Normaliser::new();
    let mut ids = BTreeMap::new();
    let mut differences = Vec::new();
    for row in rows {
        let args: Vec<String> = row["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        ids.extend(ids_now(&c));
        let real: Vec<String> = args.iter().map(|a| with_ids(a, &ids)).collect();
        let stdin = match (&row["stdin"], &row["stdin_repeat"]) {
            (Value::String(s), _) => s.as_bytes().to_vec(),
            (_, Value::Array(r)) => r[0]
                .as_str()
                .unwrap()
                .repeat(r[1].as_u64().unwrap() as usize)
                .into_bytes(),
            _ => Vec::new(),
        };
        let (code, out, err) = run(&c, &real, stdin);
        ids.extend(ids_now(&c));
        let got = (code, norm.apply(&out, &ids), norm.apply(&err, &ids));
        let want = (
            row["exit"].as_i64().unwrap() as i32,
            row["stdout"].as_str().unwrap().to_string(),
            row["stderr"].as_str().unwrap().to_string(),
        );
        if got != want {
            differences.push(format!(
                "secretctl {args:?}\n  want exit {}\n{}\n  ~~ stderr\n{}\n  got exit {}\n{}\n  ~~ stderr\n{}",
                want.0, want.1, want.2, got.0, got.1, got.2
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} rows differ from Docker:\n\n{}",
        differences.len(),
        rows.len(),
        differences.join("\n\n")
    );
}

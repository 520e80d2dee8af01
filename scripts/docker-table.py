#!/usr/bin/env python3
"""Captures what Docker itself prints for the `secret`/`config` commands that
secretctl mirrors, into the table `api/tests/it/docker_table.json` that the
`docker_table` test replays against a real secretd member.

The expected bytes come from Docker, never from secretctl: run this against
a swarm-mode dockerd (see `api/tests/it/docker.rs` for starting one in a
network namespace of its own) with Docker's 28.x client:

    DOCKER=/usr/local/bin/docker DOCKER_HOST=unix:///tmp/dk/docker.sock \
        scripts/docker-table.py > api/tests/it/docker_table.json

IDs and times differ between any two runs, so both sides are normalised the
same way (`normalise` here and in the test): an object's ID becomes a
25-character token naming the object (so column widths stay as Docker's),
absolute times become <TIME>, relative ones <AGO>, Swarm's version index
<N>. The word `docker` in messages becomes `secretctl`.
"""
import json
import os
import re
import subprocess
import sys

DOCKER = os.environ.get("DOCKER", "docker")

# Each row: the arguments after `docker` (and `secretctl`), and stdin.
# `{id:NAME}` is NAME's full ID, `{id6:NAME}` its first six characters.
ROWS = [
    (["secret", "create", "db_pw", "-"], "hunter2"),
    (["secret", "create", "--label", "env=prod", "-l", "team=core", "api_key", "-"], "k3y"),
    (["secret", "create", "-l", "env=dev", "DB_Admin", "-"], "root"),
    (["secret", "create", "db_pw", "-"], "again"),
    (["secret", "create", "bad name!", "-"], "x"),
    (["secret", "create", "empty", "-"], ""),
    (["secret", "create", "big", "-"], "a" * (600 * 1024)),
    (["secret", "create", "from_file", "/nonexistent/file"], None),
    (["secret", "create"], None),
    (["secret", "create", "a", "b", "c"], None),
    (["secret", "create", "--bogus", "x", "-"], "x"),
    (["secret", "create", "onlyname"], ""),
    (["secret", "bogus"], None),
    (["secret", "ls"], None),
    (["secret", "list"], None),
    (["secret", "ls", "-q"], None),
    (["secret", "ls", "-q", "-q"], None),
    (["secret", "ls", "--format", "{{.Name}}"], None),
    (["secret", "ls", "--format", "{{.Name}} {{.Label \"env\"}}"], None),
    (["secret", "ls", "-f", "name=db", "--format", "table {{.Name}}\t{{.Labels}}"], None),
    (["secret", "ls", "-f", "name=db", "--format", "json"], None),
    (["secret", "ls", "-f", "name=db", "--format", "{{json .}}"], None),
    (["secret", "ls", "--format", "{{printf \"%s:%d\" .Name 7}}"], None),
    (["secret", "ls", "--format", "{{.Bogus}}"], None),
    (["secret", "ls", "-q", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "name=db"], None),
    (["secret", "ls", "-f", "name=DB", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "name=db_pw", "-f", "name=api", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "label=env", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "label=env=prod", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "label=env", "-f", "label=team", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "id={id6:db_pw}", "--format", "{{.Name}}"], None),
    (["secret", "ls", "-f", "name=nothing"], None),
    (["secret", "ls", "-f", "bogus=1"], None),
    (["secret", "ls", "-f", "name"], None),
    (["secret", "ls", "extra"], None),
    (["secret", "ls", "--bogus"], None),
    (["secret", "ls", "-z"], None),
    (["secret", "ls", "--format"], None),
    (["secret", "inspect", "db_pw"], None),
    (["secret", "inspect", "api_key", "db_pw"], None),
    (["secret", "inspect", "-f", "{{.Spec.Name}}", "db_pw"], None),
    (["secret", "inspect", "-f", "{{json .Spec.Labels}}", "api_key"], None),
    (["secret", "inspect", "--format", "{{.ID}}", "{id:db_pw}"], None),
    (["secret", "inspect", "--format", "{{.Spec.Name}}", "{id6:api_key}"], None),
    (["secret", "inspect", "-f", "{{.CreatedAt}}", "db_pw"], None),
    (["secret", "inspect", "-f", "{{.Spec.Bogus}}", "db_pw"], None),
    (["secret", "inspect", "-f", "{{.Spec.Name", "db_pw"], None),
    (["secret", "inspect", "-f", "{{index .Spec.Labels \"team\"}}", "api_key"], None),
    (["secret", "inspect", "missing"], None),
    (["secret", "inspect", "db_pw", "missing"], None),
    (["secret", "inspect", "--pretty", "db_pw"], None),
    (["secret", "inspect", "--pretty", "api_key", "db_pw"], None),
    (["secret", "inspect", "--pretty", "--format", "{{.ID}}", "db_pw"], None),
    (["secret", "inspect"], None),
    (["secret", "rm", "missing"], None),
    (["secret", "rm", "DB_Admin"], None),
    (["secret", "rm", "api_key", "missing", "db_pw"], None),
    (["secret", "remove"], None),
    (["secret", "ls"], None),
    (["config", "create", "app_conf", "-"], "listen 80;\n"),
    (["config", "create", "-l", "env=prod", "web_conf", "-"], "server {}\n"),
    (["config", "create", "app_conf", "-"], "x"),
    (["config", "create", "--driver", "x", "c", "-"], "x"),
    (["config", "create"], None),
    (["config", "ls"], None),
    (["config", "ls", "-q"], None),
    (["config", "ls", "--format", "{{.Name}}\t{{.Labels}}"], None),
    (["config", "ls", "--format", "{{json .}}"], None),
    (["config", "ls", "-f", "name=APP", "--format", "{{.Name}}"], None),
    (["config", "inspect", "app_conf"], None),
    (["config", "inspect", "--pretty", "app_conf", "web_conf"], None),
    (["config", "inspect", "-f", "{{.Spec.Name}} {{.Spec.Labels}}", "web_conf"], None),
    (["config", "create", "--template-driver", "golang", "tpl_conf", "-"], "task={{.Task.Name}}\n"),
    (["config", "inspect", "tpl_conf"], None),
    (["config", "inspect", "-f", "{{json .Spec.Templating}}", "tpl_conf"], None),
    (["config", "rm", "tpl_conf"], None),
    (["secret", "create", "--template-driver", "golang", "tpl_pw", "-"], "{{.Task.Name}}"),
    (["secret", "inspect", "tpl_pw"], None),
    (["secret", "rm", "tpl_pw"], None),
    (["config", "inspect", "missing"], None),
    (["config", "rm", "app_conf"], None),
    (["config", "rm", "missing"], None),
    (["config", "rm", "web_conf"], None),
    (["config", "ls"], None),
    (["config", "ls", "extra"], None),
    (["config", "inspect"], None),
]

TIME = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z| [+-]\d{4} (UTC|utc))")
AGO = re.compile(
    r"(Less than a second|About a minute|About an hour|\d+ (second|minute|hour)s?|an? (second|minute|hour)) ago( +)?")
INDEX = re.compile(r'"Index": \d+')


def normalise(text, ids):
    for name, i in ids.items():
        text = text.replace(i, ("ID-" + name).ljust(25, "-")[:25])
    text = TIME.sub("<TIME>", text)
    text = AGO.sub(lambda m: "<AGO>" + ("   " if m.group(4) else ""), text)
    text = re.sub(r"CREATED +UPDATED", "CREATED   UPDATED", text)
    text = INDEX.sub('"Index": <N>', text)
    return re.sub(r"\bdocker\b", "secretctl", text)


def run(args, stdin):
    p = subprocess.run([DOCKER] + args, input=(stdin or "").encode(),
                       capture_output=True)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def ids_now():
    out = {}
    for kind in ("secret", "config"):
        _, o, _ = run([kind, "ls", "--format", "{{.ID}} {{.Name}}"], None)
        for line in o.splitlines():
            i, name = line.split(" ", 1)
            out[name] = i
    return out


def main():
    for kind in ("secret", "config"):
        _, o, _ = run([kind, "ls", "-q"], None)
        if o.split():
            run([kind, "rm"] + o.split(), None)
    ids = {}
    table = []
    for args, stdin in ROWS:
        ids.update(ids_now())
        real = [re.sub(r"\{id(6?):([^}]+)\}",
                       lambda m: ids[m.group(2)][:6] if m.group(1) else ids[m.group(2)],
                       a) for a in args]
        code, out, err = run(real, stdin)
        ids.update(ids_now())
        row = {"args": args, "exit": code, "stdout": normalise(out, ids),
               "stderr": normalise(err, ids)}
        if stdin is not None:
            if len(stdin) > 4096:
                row["stdin_repeat"] = [stdin[0], len(stdin)]
            else:
                row["stdin"] = stdin
        table.append(row)
    json.dump({"docker_client": run(["version", "--format", "{{.Client.Version}}"], None)[1].strip(),
               "rows": table}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

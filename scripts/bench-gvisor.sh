#!/usr/bin/env bash
# The gvisor backend against bare runsc and the namespace backend, in one run:
#   1. start to first command: `paddock run --backend gvisor -- true` vs `runsc do true` (the
#      same flags Paddock uses: systrap, no network, no cgroups) vs `paddock run --backend ns`;
#   2. a walk of a large workspace (find + stat of every file) and `git status` on it: native,
#      ns, gvisor (timed inside the sandbox, so start-up is not counted).
# Runs this checkout's release build (built here, with its static paddock-guest), as the other
# bench scripts do: an installed paddock of another version would share the state database.
# Writes target/bench-gvisor.md. Usage: scripts/bench-gvisor.sh [RUNS] [FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
files=${2:-50000}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
runsc=$(command -v runsc || echo /usr/sbin/runsc)
cargo build --release -q --workspace --bins
scripts/build-guest.sh target/release/paddock-guest >/dev/null 2>&1
export PADDOCK_GUEST_BINARY="$PWD/target/release/paddock-guest"
P="$PWD/target/release/paddock"
out=target/bench-gvisor.md
mkdir -p target
ws=$(mktemp -d /var/tmp/paddock-bench-gv-XXXXXX)
state=$(mktemp -d /tmp/paddock-bench-runsc-XXXXXX)
trap 'rm -rf "$ws" "$state"' EXIT

echo "## start to first command ($runs runs each)" | tee "$out"
"$P" run --rm -T -w "$ws" --backend gvisor -- true
hyperfine -N --warmup 5 --runs "$runs" --export-markdown target/bench-gvisor-start.md \
    -n "runsc do true (bare)" "$runsc --root=$state --network=none --platform=systrap --ignore-cgroups do /bin/true" \
    -n "paddock run --backend gvisor --no-network -- true" "$P run --rm -T -w $ws --backend gvisor --no-network -- true" \
    -n "paddock run --backend gvisor -- true" "$P run --rm -T -w $ws --backend gvisor -- true" \
    -n "paddock run --backend ns -- true" "$P run --rm -T -w $ws --backend ns -- true"
cat target/bench-gvisor-start.md >>"$out"

echo "setting up a workspace of $files files in git" >&2
python3 - "$ws/repo" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 500:03d}", f"s{(i // 50) % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"file {i}\n" * 4)
PY
git -C "$ws/repo" init -q
# No automatic gc: it would pack and delete objects while the walks run.
git -C "$ws/repo" config gc.auto 0
git -C "$ws/repo" add -A
git -C "$ws/repo" -c user.email=b@b -c user.name=b commit -qm files
# Three of each, the best reported (warm caches, as in an agent's loop).
script='cd repo; best() { b=999; for i in 1 2 3; do s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); b=$(echo "$b $s $e" | awk "{d=\$3-\$2; print (d<\$1)?d:\$1}"); done; echo $b; }
echo "walk $(best sh -c "find . -type f | xargs -n 2000 stat -c %s")"
echo "status $(best git status)"'
{
    echo
    echo "## workspace of $files files: find + stat, git status (best of 3, seconds)"
    echo
    echo "| where | walk | git status |"
    echo "|---|---|---|"
    for where in native ns gvisor; do
        if [ "$where" = native ]; then
            res=$(cd "$ws" && sh -c "$script")
        else
            res=$("$P" run --rm -T -w "$ws" --backend "$where" --no-network -- sh -c "git config --global --add safe.directory '*'; $script")
        fi
        echo "| $where | $(echo "$res" | awk '/^walk/{print $2}') | $(echo "$res" | awk '/^status/{print $2}') |"
    done
} | tee -a "$out"
echo "written to $out" >&2

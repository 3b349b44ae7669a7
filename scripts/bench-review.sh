#!/usr/bin/env bash
# Review mode's costs, in one interleaved run (scripts/bench-interleaved.py):
# - `paddock diff NAME --stat` on a workspace of FILES files (a git repository) of which the
#   agent changed 20, next to `git status` on the same tree;
# - file-heavy work on ns through `paddock exec` (read every file with tar, copy a directory of
#   1,000 files, remove the copy) in a review-mode sandbox and in a normal one on the same
#   workspace.
# Writes the markdown tables to target/bench-review.md.
# Usage: scripts/bench-review.sh [RUNS] [FILES]   (as root, after ./setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
files=${2:-100000}
cargo build --release -q -p paddock -p paddock-jail
P="$PWD/target/release/paddock"
ws=$(mktemp -d /var/tmp/paddock-bench-review-XXXXXX)
names=(bench-review-r bench-review-n)
cleanup() {
    for n in "${names[@]}"; do "$P" rm -f "$n" >/dev/null 2>&1 || true; done
    rm -rf "$ws"
}
trap cleanup EXIT
for n in "${names[@]}"; do "$P" rm -f "$n" >/dev/null 2>&1 || true; done

echo "bench-review: a workspace of $files files" >&2
python3 - "$ws" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"line {i}\n" * 4)
PY
git -C "$ws" init -q
git -C "$ws" add -A
git -C "$ws" -c user.name=bench -c user.email=bench@example.invalid commit -qm files

# The agent changes 20 files in review mode; both sandboxes then wait in the background.
"$P" run -T --review --backend ns --name bench-review-r -w "$ws" -- \
    sh -c 'for i in $(seq 0 19); do echo changed >> d0/f$i.txt; done' >/dev/null 2>&1
"$P" start bench-review-r >/dev/null
"$P" run -d --backend ns --name bench-review-n -w "$ws" >/dev/null
work='tar cf - . | wc -c >/dev/null; cp -r d0 copy; rm -rf copy'
changed=$("$P" diff bench-review-r --name-only | wc -l)
[ "$changed" -eq 20 ] || { echo "bench-review: $changed changes listed, not 20" >&2; exit 1; }

{
    echo "### diff --stat on $files files, 20 changed"
    echo
    python3 scripts/bench-interleaved.py "$runs" \
        "paddock diff --stat=$P diff bench-review-r --stat" \
        "git status=git -C $ws status --porcelain"
    echo
    echo "### file-heavy work on ns (tar of every file, copy and removal of 1,000 files)"
    echo
    python3 scripts/bench-interleaved.py "$runs" \
        "review mode=$P exec bench-review-r -- sh -c '$work'" \
        "normal=$P exec bench-review-n -- sh -c '$work'"
} | tee target/bench-review.md

#!/usr/bin/env bash
# One command from a fresh clone to a sandbox: installs what the host lacks, builds Paddock,
# installs it to /usr/local/bin, builds the default image (first time only) and runs a command
# in a sandbox with the current directory as the workspace.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: Paddock's namespace backend currently needs root; run: sudo ./setup.sh" >&2
    exit 1
fi
if ! command -v mmdebstrap >/dev/null; then
    echo "setup.sh: installing mmdebstrap (builds the sandbox image from this host's apt sources)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null; }
fi

echo "setup.sh: building paddock (release)"
cargo build --release --locked --workspace --bins
install -m 0755 target/release/paddock target/release/paddock-ns-jail /usr/local/bin/

echo "setup.sh: running a first command in a sandbox (builds the default image on first use)"
paddock run --rm -- sh -c 'echo hello from the sandbox; id; ls /'

#!/usr/bin/env bash
# Builds paddock-guest (pid 1 of a VM guest) statically linked, since the initramfs has no
# dynamic loader or libraries, and copies it to $1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/build-guest.sh OUTPUT}
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build --release --locked -p paddock-guest --target "$triple"
cp "target/$triple/release/paddock-guest" "$out"

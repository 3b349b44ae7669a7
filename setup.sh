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
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}
# mmdebstrap builds the sandbox image from this host's apt sources; QEMU, qemu-img and
# e2fsprogs run the vm backend (the libraries are what virtiofsd builds against).
want=()
for pair in mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils \
    mkfs.ext4:e2fsprogs; do
    command -v "${pair%%:*}" >/dev/null || want+=("${pair#*:}")
done
for lib in libseccomp-dev libcap-ng-dev pkg-config; do
    dpkg -s "$lib" >/dev/null 2>&1 || want+=("$lib")
done
if [ "${#want[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${want[*]}"
    apt_install "${want[@]}"
fi
# The vm backend's device helpers: virtio-fs and user-space vsock (maintained rust-vmm
# programs, built with cargo install).
for tool in virtiofsd vhost-device-vsock; do
    if ! command -v "$tool" >/dev/null; then
        echo "setup.sh: installing $tool (cargo install, a few minutes the first time)"
        cargo install --locked --quiet --root /usr/local "$tool"
    fi
done

echo "setup.sh: building paddock (release)"
cargo build --release --locked --workspace --bins
install -m 0755 target/release/paddock target/release/paddock-ns-jail /usr/local/bin/
echo "setup.sh: building paddock-guest (the VM's init, statically linked)"
scripts/build-guest.sh target/release/paddock-guest
install -m 0755 target/release/paddock-guest /usr/local/bin/

echo "setup.sh: running a first command in a sandbox (builds the default image on first use)"
paddock run --rm -- sh -c 'echo hello from the sandbox; id; ls /'
echo "setup.sh: the same in a microVM (prepares the guest kernel and disk on first use)"
paddock run --rm --backend vm -- sh -c 'echo hello from a VM running kernel $(uname -r)'

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

# gVisor's runsc is in Debian's backports suite. When apt does not offer it yet, the suite is
# added from the same mirror this host already uses for its release.
install_runsc() {
    . /etc/os-release
    local suite="${VERSION_CODENAME:-}-backports" uri
    if ! apt-cache policy runsc 2>/dev/null | grep -q "$suite"; then
        uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
            awk -v c="${VERSION_CODENAME:-}" '$2 == c { print $1; exit }')
        if [ -z "$uri" ] || [ -z "${VERSION_CODENAME:-}" ]; then
            echo "setup.sh: no apt source for this release found; the gvisor backend stays unavailable (install runsc by hand)" >&2
            return 0
        fi
        echo "setup.sh: adding $suite from $uri to apt (for runsc)"
        {
            echo "Types: deb"
            echo "URIs: $uri"
            echo "Suites: $suite"
            echo "Components: main"
            [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
                echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        } >/etc/apt/sources.list.d/paddock-backports.sources
        apt-get update -q >/dev/null
    fi
    echo "setup.sh: installing runsc (gVisor) from $suite"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t "$suite" runsc >/dev/null ||
        echo "setup.sh: runsc could not be installed; the gvisor backend stays unavailable" >&2
}
if ! command -v runsc >/dev/null && [ ! -x /usr/sbin/runsc ]; then
    # indextargets lists only sources apt has fetched once.
    [ -n "$(apt-get indextargets 2>/dev/null | head -1)" ] || apt-get update -q >/dev/null
    install_runsc
fi

echo "setup.sh: building paddock (release)"
cargo build --release --locked --workspace --bins
install -m 0755 target/release/paddock target/release/paddock-ns-jail /usr/local/bin/
echo "setup.sh: building paddock-guest (pid 1 of VM and gVisor sandboxes, statically linked)"
scripts/build-guest.sh target/release/paddock-guest
install -m 0755 target/release/paddock-guest /usr/local/bin/

echo "setup.sh: running a first command in a sandbox (builds the default image on first use)"
paddock run --rm -- sh -c 'echo hello from the sandbox; id; ls /'
echo "setup.sh: the same under gVisor and in the namespace sandbox"
if command -v runsc >/dev/null || [ -x /usr/sbin/runsc ]; then
    paddock run --rm --backend gvisor -- sh -c 'echo hello from $(dmesg | head -1 | cut -c16-)'
fi
paddock run --rm --backend ns -- sh -c 'echo hello from the namespace sandbox on kernel $(uname -r)'
echo "setup.sh: the same in a microVM (prepares the guest kernel and disk on first use)"
paddock run --rm --backend vm -- sh -c 'echo hello from a VM running kernel $(uname -r)'

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
# Every apt call waits for another apt's lock instead of failing, and shows apt's errors.
apt_get() {
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -q -o DPkg::Lock::Timeout=600 "$@"
}
# Installs packages, refusing (with apt's own plan shown) when that would remove an installed
# package: a fresh machine may carry packages from another suite (qemu-utils from backports,
# say) that a plain install replaces or removes without a word.
apt_install() {
    local plan removed
    plan=$(apt_get -s install -y --no-install-recommends "$@" 2>&1) || {
        apt_get update >/dev/null
        plan=$(apt_get -s install -y --no-install-recommends "$@" 2>&1) || {
            printf '%s\n' "$plan" >&2
            echo "setup.sh: apt cannot install $*; see apt's message above" >&2
            return 1
        }
    }
    removed=$(printf '%s\n' "$plan" | awk '$1 == "Remv" { print $2 }' | tr '\n' ' ')
    if [ -n "$removed" ]; then
        echo "setup.sh: installing $* would remove $removed; install a matching set by hand, then run setup.sh again" >&2
        return 1
    fi
    apt_get install -y --no-install-recommends "$@" >/dev/null
}
# The suite that offers version $2 of package $1 (empty when none of the configured ones does).
suite_of() {
    apt-cache madison "$1" 2>/dev/null | awk -F' [|] ' -v v="$2" '$2 == v { split($3, a, " "); split(a[2], s, "/"); print s[1]; exit }'
}
# Makes this release's backports suite available from the mirror this host already uses (for
# runsc, and for QEMU when its utilities came from there). Returns 1 when no source is known.
ensure_backports() {
    . /etc/os-release
    local suite="${VERSION_CODENAME:-}-backports" uri
    [ -n "$(apt-get indextargets 2>/dev/null | head -1)" ] || apt_get update >/dev/null
    if apt-get indextargets --format '$(RELEASE)' 2>/dev/null | grep -qx "$suite"; then
        return 0
    fi
    uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
        awk -v c="${VERSION_CODENAME:-}" '$2 == c { print $1; exit }')
    if [ -z "$uri" ] || [ -z "${VERSION_CODENAME:-}" ]; then
        return 1
    fi
    echo "setup.sh: adding $suite from $uri to apt"
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: $suite"
        echo "Components: main"
        [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
            echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    } >/etc/apt/sources.list.d/paddock-backports.sources
    apt_get update >/dev/null
}
# QEMU's packages as one matched set: the system emulator from the same suite and version as
# an installed qemu-utils (installing bookworm's qemu-system-x86 beside backports' qemu-utils
# removes qemu-utils), else both from the default suite.
install_qemu() {
    local have suite=""
    have=$(dpkg-query -W -f '${db:Status-Abbrev} ${Version}' qemu-utils 2>/dev/null | awk '$1 == "ii" { print $2 }')
    if [ -n "$have" ]; then
        suite=$(suite_of qemu-utils "$have")
        if [ -z "$suite" ] && ensure_backports; then
            suite=$(suite_of qemu-utils "$have")
        fi
    fi
    if [ -n "$suite" ]; then
        echo "setup.sh: installing QEMU $have from $suite (matching the installed qemu-utils)"
        apt_install -t "$suite" qemu-system-x86 qemu-utils
    else
        echo "setup.sh: installing QEMU"
        apt_install qemu-system-x86 qemu-utils
    fi
}
# mmdebstrap builds the sandbox image from this host's apt sources; QEMU, qemu-img and
# e2fsprogs run the vm backend (the libraries are what virtiofsd builds against).
want=()
for pair in mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs; do
    command -v "${pair%%:*}" >/dev/null || want+=("${pair#*:}")
done
for lib in libseccomp-dev libcap-ng-dev pkg-config; do
    dpkg -s "$lib" >/dev/null 2>&1 || want+=("$lib")
done
if [ "${#want[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${want[*]}"
    apt_install "${want[@]}"
fi
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
    install_qemu
fi
# The vm backend's device helpers: virtio-fs and user-space vsock (maintained rust-vmm
# programs, built with cargo install).
for tool in virtiofsd vhost-device-vsock; do
    if ! command -v "$tool" >/dev/null; then
        echo "setup.sh: installing $tool (cargo install, a few minutes the first time)"
        cargo install --locked --quiet --root /usr/local "$tool"
    fi
done

# gVisor's runsc is in Debian's backports suite, added from the same mirror this host already
# uses for its release when apt does not offer it yet.
if ! command -v runsc >/dev/null && [ ! -x /usr/sbin/runsc ]; then
    if ensure_backports; then
        . /etc/os-release
        echo "setup.sh: installing runsc (gVisor) from ${VERSION_CODENAME}-backports"
        apt_install -t "${VERSION_CODENAME}-backports" runsc ||
            echo "setup.sh: runsc could not be installed; the gvisor backend stays unavailable" >&2
    else
        echo "setup.sh: no apt source for this release found; the gvisor backend stays unavailable (install runsc by hand)" >&2
    fi
fi

# Every program the backends drive must really be there now (apt may have replaced one).
missing=()
for tool in mmdebstrap mkfs.ext4 qemu-system-x86_64 qemu-img virtiofsd vhost-device-vsock; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: still missing after installing: ${missing[*]}; see the messages above" >&2
    exit 1
fi
qemu-system-x86_64 --version >/dev/null && qemu-img --version >/dev/null || {
    echo "setup.sh: QEMU is installed but does not run; see its message above" >&2
    exit 1
}

echo "setup.sh: building paddock (release)"
cargo build --release --locked --workspace --bins
install -m 0755 target/release/paddock target/release/paddock-jail /usr/local/bin/
rm -f /usr/local/bin/paddock-ns-jail # the jail's name before it left the ns crate
echo "setup.sh: building paddock-guest (pid 1 of VM and gVisor sandboxes, statically linked)"
scripts/build-guest.sh target/release/paddock-guest
install -m 0755 target/release/paddock-guest /usr/local/bin/

# The user who ran sudo gets what running paddock without root will take (subordinate ids,
# a cgroup subtree, /dev/kvm); root itself needs none of it.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    echo "setup.sh: preparing the host for $SUDO_USER (paddock system setup)"
    paddock system setup --user "$SUDO_USER"
fi

# A first command on each backend, its output shown as it comes (the first builds the default
# image, the vm one prepares the guest's files), then one line per backend. Setup fails only
# if none works: a host without KVM or gVisor still has the others.
works=0
summary=()
try_backend() {
    local backend=$1
    shift
    echo "setup.sh: a first command ($backend)"
    if "$@"; then
        summary+=("  $backend: works")
        works=$((works + 1))
    else
        summary+=("  $backend: does not work here (its message is above; paddock doctor says how to fix it)")
    fi
}
try_backend ns paddock run --rm --backend ns -- sh -c 'echo hello from the namespace sandbox on kernel $(uname -r); id'
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # The user's own image and a first sandbox without root, in a folder of the user's.
    try_backend "ns as $SUDO_USER" runuser -l "$SUDO_USER" -c \
        'mkdir -p "$HOME/paddock-first-run" && cd "$HOME/paddock-first-run" && paddock run --rm --backend ns -- sh -c "echo hello from a sandbox $USER runs without root; id"'
fi
if command -v runsc >/dev/null || [ -x /usr/sbin/runsc ]; then
    try_backend gvisor paddock run --rm --backend gvisor -- sh -c 'echo hello from $(dmesg | head -1 | cut -c16-)'
else
    summary+=("  gvisor: runsc is not installed (see above)")
fi
try_backend vm paddock run --rm --backend vm -- sh -c 'echo hello from a VM running kernel $(uname -r)'
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # The same as the user: what their account lacks (a PATH without /usr/sbin, a group not
    # yet in effect) shows here, not at their first run.
    for backend in gvisor vm; do
        if [ "$backend" = gvisor ] && ! { command -v runsc >/dev/null || [ -x /usr/sbin/runsc ]; }; then
            continue
        fi
        try_backend "$backend as $SUDO_USER" runuser -l "$SUDO_USER" -c \
            "cd \"\$HOME/paddock-first-run\" && paddock run --rm --backend $backend -- sh -c 'echo hello from $backend, without root'"
    done
fi
echo "setup.sh: done; the backends on this host:"
printf '%s\n' "${summary[@]}"
if [ "$works" -eq 0 ]; then
    echo "setup.sh: no backend works on this host; paddock doctor shows what is missing" >&2
    exit 1
fi

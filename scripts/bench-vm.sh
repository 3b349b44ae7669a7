#!/usr/bin/env bash
# The vm backend, all figures from one run, stating the accelerator:
#  1. cold start to the first command's exit (`paddock run --backend vm -- true`) against bare
#     QEMU booting the same kernel and initramfs to a marker (same machine, accelerator, vCPUs,
#     memory; no disk, vsock, virtio-fs or Paddock);
#  2. exec round-trip into a running VM (an exec connection: command, output, exit) against
#     the cold start;
#  3. a workspace file walk and small-file writes on virtio-fs against native;
#  4. host memory per idle sandbox beyond guest RAM (VMM and device helpers, guest RAM
#     mappings excluded).
# Usage: scripts/bench-vm.sh [RUNS]  (writes target/bench-vm.md)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
cargo build --release -q --workspace --bins
scripts/build-guest.sh target/release/paddock-guest >/dev/null 2>&1
export PADDOCK_GUEST_BINARY="$PWD/target/release/paddock-guest"
P="$PWD/target/release/paddock"
ws=$(mktemp -d /var/tmp/paddock-bench-vm-XXXXXX)
trap 'rm -rf "$ws"; [ -n "${sup:-}" ] && kill "$sup" 2>/dev/null || true' EXIT
"$P" run --rm -w "$ws" --backend vm -- true 2>/dev/null  # prepares the VM image if missing
out=target/bench-vm.md
: >"$out"

vm=$(ls -d "${PADDOCK_HOME:-$HOME/.local/share/paddock}"/images/default/vm)
accel=$("$P" doctor --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("kvm" if any(i["name"]=="kvm" and i["ok"] for i in r["host"]) else "tcg")')
khz=$(cat /run/paddock/tsc-khz 2>/dev/null | awk '{print $2}')
tmp=$(mktemp -d)
python3 - "$vm/modules.cpio" "$PADDOCK_GUEST_BINARY" "$tmp/initrd" <<'PY'
import sys
mods, guest, out = sys.argv[1:]
def entry(name, mode, data, ino):
    n = name.encode() + b"\0"
    h = "070701" + "".join("%08X" % v for v in [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0])
    b = h.encode() + n
    b += b"\0" * ((4 - len(b) % 4) % 4)
    return b + data + b"\0" * ((4 - len(data) % 4) % 4)
with open(out, "wb") as f:
    f.write(open(mods, "rb").read())
    f.write(entry("init", 0o100755, open(guest, "rb").read(), 1) + entry("TRAILER!!!", 0, b"", 0))
PY
if [ "$accel" = kvm ]; then qaccel="-accel kvm -cpu host"; extra=""; else
    qaccel="-accel tcg,thread=multi,tb-size=128 -cpu max"; extra=" tsc_early_khz=$khz tsc=reliable"; fi
bare="qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot -display none -bios qboot.rom -M microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on,memory-backend=mem $qaccel -smp 2 -m 2048M -object memory-backend-memfd,id=mem,size=2048M,share=on -serial null -kernel $vm/vmlinuz -initrd $tmp/initrd -append 'console=ttyS0 quiet panic=-1 reboot=t pci=off paddock.probe=1$extra'"
echo "## vm backend ($accel), $(nproc) cores, $(date -u +%F)" >>"$out"
echo >>"$out"
hyperfine -N --warmup 1 --runs "$runs" --export-markdown "$tmp/start.md" \
    -n "paddock run --backend vm -- true" "$P run --rm -T -w $ws --backend vm -- true" \
    -n "bare QEMU, same kernel+initramfs, to a marker" "sh -c \"$bare\"" >/dev/null
cat "$tmp/start.md" >>"$out"

# A running sandbox to exec into and measure.
name=bench-vm-$$
"$P" rm -f "$name" >/dev/null 2>&1 || true
mkdir -p "$ws/tree"
python3 - "$ws/tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(50):
    d = os.path.join(root, f"d{i}", "sub")
    os.makedirs(d)
    for j in range(100):
        open(os.path.join(d, f"f{j}.txt"), "w").write("x" * 100)
PY
"$P" run --name "$name" -T -w "$ws" --backend vm -- sleep 600 2>/dev/null &
sup=$!
uds=
for _ in $(seq 1 600); do
    # The vsock device's socket (the run directory's layout: see crates/vm/src/lib.rs).
    uds=$(ls "${TMPDIR:-/tmp}"/paddock-vm-"$name"-*/vsock/vm.vsock 2>/dev/null | head -1 || true)
    [ -n "$uds" ] && python3 - "$uds" 2>/dev/null <<'PY' && break
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"CONNECT 1024\n")
assert s.recv(64).startswith(b"OK")
PY
    sleep 0.2
    uds=
done
if [ -z "$uds" ]; then
    echo "bench-vm.sh: the running VM's exec socket never answered (looked for ${TMPDIR:-/tmp}/paddock-vm-$name-*/vsock/vm.vsock)" >&2
    exit 1
fi
python3 - "$uds" "$ws" >>"$out" <<'PY'
import json, os, socket, struct, sys, time, subprocess
uds, ws = sys.argv[1:]
def frame(kind, payload): return struct.pack("<I", len(payload) + 1) + bytes([kind]) + payload
def run(argv):
    s = socket.socket(socket.AF_UNIX); s.connect(uds); s.sendall(b"CONNECT 1024\n")
    f = s.makefile("rb")
    f.readline()
    cmd = {"argv": argv, "env": [["PATH", "/usr/local/bin:/usr/bin:/bin"]], "cwd": ws, "uid": 1000,
           "gid": 1000, "groups": [], "tty": False, "no_new_privs": False}
    s.sendall(frame(2, json.dumps(cmd).encode()) + frame(4, b""))
    out = b""
    while True:
        n = struct.unpack("<I", f.read(4))[0]; body = f.read(n)
        if body[0] == 11: out += body[1:]
        if body[0] == 13: s.close(); return out
def timed(argv, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); out = run(argv); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2], out
rt, _ = timed(["true"], 20)
print(f"\nexec round-trip into the running VM (`true`, median of 20): {rt*1000:.1f} ms\n")
walk = "find tree -type f | wc -l"
write = "rm -rf w && mkdir w && i=0; while [ $i -lt 1000 ]; do echo data > w/f$i; i=$((i+1)); done; sync"
def native(script, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); subprocess.run(["sh", "-c", script], cwd=ws, check=True, capture_output=True); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2]
vw, out = timed(["sh", "-c", walk], 5)
vwr, _ = timed(["sh", "-c", write], 5)
nw, nwr = native(walk), native(write)
# The same shell loop on the guest's own disk, to separate virtio-fs from emulation speed.
dw, _ = timed(["sh", "-c", "mkdir -p /tmp/b && cd /tmp/b && " + write], 5)
print("| workload (median of 5) | native | VM, virtio-fs workspace | ratio native/VM | VM, guest's own disk |")
print("|---|---|---|---|---|")
print(f"| walk 5000 files (`find`) | {nw*1000:.0f} ms | {vw*1000:.0f} ms | {nw/vw:.2f}x | |")
print(f"| write 1000 small files + sync | {nwr*1000:.0f} ms | {vwr*1000:.0f} ms | {nwr/vwr:.2f}x | {dw*1000:.0f} ms |")
print(f"\n(walk found {out.decode().strip()} files)")
PY

python3 - "$name" >>"$out" <<'PY'
import os, sys
name = sys.argv[1]
needle = f"paddock-vm-{name}-"
total, rows = 0, []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        if needle not in cmd or cmd.startswith(("unshare", "sh ")):
            continue
        rss = guest = 0
        cur = ""
        for line in open(f"/proc/{pid}/smaps"):
            if not line[0].isupper() or ":" not in line.split()[0]:
                cur = line
            elif line.startswith("Rss:"):
                kb = int(line.split()[1]); rss += kb
                if "memfd:mem" in cur: guest += kb
        prog = os.path.basename(cmd.split()[0])
        rows.append((prog, rss - guest, guest)); total += rss - guest
    except OSError:
        pass
print("\nhost memory of an idle VM sandbox beyond guest RAM (RSS without the guest-RAM mapping):\n")
print("| process | RSS beyond guest RAM | guest RAM touched |")
print("|---|---|---|")
for p, o, g in sorted(rows):
    print(f"| {p} | {o/1024:.1f} MiB | {g/1024:.1f} MiB |")
print(f"| **total** | **{total/1024:.1f} MiB** | |")
PY
kill "$sup" 2>/dev/null || true
wait "$sup" 2>/dev/null || true
sup=
"$P" rm -f "$name" >/dev/null 2>&1 || true
rm -rf "$tmp"
cat "$out"

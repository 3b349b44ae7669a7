#!/usr/bin/env python3
"""Round trips of one command (`true`) in a running sandbox through an HTTP API, timed from
inside one client process, so no process start of the client is counted: Paddock's
(`POST /v1/sandboxes/NAME/exec` on `paddock serve`'s unix socket, one kept-alive connection)
and Docker Engine's (what its SDKs do for `exec_run`: create the exec, start it attached and read
its stream to the end on a connection of its own, which Docker takes over, then inspect it for
the exit code). Paddock's rounds go first, then Docker's: Docker's work goes on in the
background after each of its execs (containerd and its shim clean up), and timed in
alternation the other client paid for it (medians 1.75 ms alone against 2.06-2.26 ms in
alternating blocks, on 2026-12-03). Prints a markdown
table (medians, 10th and 90th percentiles, in ms) and the ratio of the medians.

A first row is this machine's floor for any of them: the same process starting `true` on the
host itself (`posix_spawn` and `waitpid`, no sandbox, no API), whose cost moves a lot on a
shared virtual machine (1.3 ms and 2.6 ms medians an hour apart on 2026-12-03).

Usage: bench-api-exec.py RUNS PADDOCK_SOCKET SANDBOX [DOCKER_SOCKET CONTAINER]
"""

import http.client
import json
import os
import socket
import statistics
import sys
import time


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def request(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data


def paddock_exec(conn, sandbox):
    status, data = request(conn, "POST", f"/v1/sandboxes/{sandbox}/exec", {"command": ["true"]})
    answer = json.loads(data)
    if status != 200 or answer.get("exit_code") != 0:
        sys.exit(f"Paddock's exec failed: {status} {data[:300]!r}")


def docker_exec(conn, docker_socket, container):
    status, data = request(conn, "POST", f"/containers/{container}/exec",
                           {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True})
    if status != 201:
        sys.exit(f"Docker's exec create failed: {status} {data[:300]!r}")
    exec_id = json.loads(data)["Id"]
    start = Unix(docker_socket)
    status, _ = request(start, "POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False})
    start.close()
    if status != 200:
        sys.exit(f"Docker's exec start failed: {status}")
    status, data = request(conn, "GET", f"/exec/{exec_id}/json")
    if status != 200 or json.loads(data)["ExitCode"] != 0:
        sys.exit(f"Docker's exec inspect failed: {status} {data[:300]!r}")


def host_spawn(_conn):
    pid = os.posix_spawn("/usr/bin/true", ["true"], {})
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(f"true on the host failed: {status}")


def main():
    if len(sys.argv) not in (4, 6):
        sys.exit(__doc__)
    runs = int(sys.argv[1])
    clients = [("floor: `true` started and waited for on the host (posix_spawn)", None,
                host_spawn),
               ("Paddock API exec (ns): `POST /v1/sandboxes/NAME/exec` [true]",
                Unix(sys.argv[2]), lambda c: paddock_exec(c, sys.argv[3]))]
    if len(sys.argv) == 6:
        docker_socket, container = sys.argv[4], sys.argv[5]
        clients.append(("Docker Engine API exec: create, start, inspect [true]",
                        Unix(docker_socket), lambda c: docker_exec(c, docker_socket, container)))
    times = {name: [] for name, _, _ in clients}
    for name, conn, once in clients:  # warm-up: connections, caches
        for _ in range(3):
            once(conn)
    for name, conn, once in clients:
        for _ in range(runs):
            began = time.perf_counter()
            once(conn)
            times[name].append((time.perf_counter() - began) * 1000)
    print("| Round trip | Median [ms] | P10 [ms] | P90 [ms] |")
    print("|:---|---:|---:|---:|")
    medians = []
    for name, _, _ in clients:
        t = sorted(times[name])
        median = statistics.median(t)
        medians.append(median)
        print(f"| {name} | {median:.2f} | {t[len(t) // 10]:.2f} | {t[len(t) * 9 // 10]:.2f} |")
    print(f"\nPaddock's median / the floor's: {medians[1] / medians[0]:.2f}x", end="")
    if len(medians) == 3:
        print(f"; Docker Engine's / Paddock's: {medians[2] / medians[1]:.1f}x", end="")
    print(f" ({runs} rounds each)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Round trips of one command (`true`) in a running sandbox through an HTTP API, timed from
inside one client process, so no process start of the client is counted:

- `--floor`: this machine's floor for any of them, the same process starting `true` on the
  host itself (`posix_spawn` and `waitpid`: no sandbox, no API), whose cost moves a lot on a
  shared virtual machine (1.3 ms and 2.6 ms medians an hour apart on 2026-12-03);
- `--paddock SOCKET SANDBOX`: Paddock's `POST /v1/sandboxes/SANDBOX/exec` on `paddock serve`'s
  unix socket, one kept-alive connection;
- `--docker SOCKET CONTAINER`: Docker Engine's API exec as its SDKs do it (create the exec;
  start it attached and read its stream to the end on a connection of its own, which Docker
  takes over; inspect it for the exit code).

Each is timed RUNS times after 3 warm-ups, in the order given. Prints one markdown table row
each (median, 10th and 90th percentiles, in ms) and appends `name median` lines to
`--medians FILE` when given.

Usage: bench-api-exec.py RUNS [--floor] [--paddock SOCKET SANDBOX] [--docker SOCKET CONTAINER]
           [--medians FILE] [--header]
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


def host_spawn():
    pid = os.posix_spawn("/usr/bin/true", ["true"], {})
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(f"true on the host failed: {status}")


def paddock(sock, sandbox):
    conn = Unix(sock)

    def once():
        status, data = request(conn, "POST", f"/v1/sandboxes/{sandbox}/exec",
                               {"command": ["true"]})
        if status != 200 or json.loads(data).get("exit_code") != 0:
            sys.exit(f"Paddock's exec failed: {status} {data[:300]!r}")
    return once


def docker(sock, container):
    conn = Unix(sock)

    def once():
        status, data = request(conn, "POST", f"/containers/{container}/exec",
                               {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True})
        if status != 201:
            sys.exit(f"Docker's exec create failed: {status} {data[:300]!r}")
        exec_id = json.loads(data)["Id"]
        start = Unix(sock)
        status, _ = request(start, "POST", f"/exec/{exec_id}/start",
                            {"Detach": False, "Tty": False})
        start.close()
        if status != 200:
            sys.exit(f"Docker's exec start failed: {status}")
        status, data = request(conn, "GET", f"/exec/{exec_id}/json")
        if status != 200 or json.loads(data)["ExitCode"] != 0:
            sys.exit(f"Docker's exec inspect failed: {status} {data[:300]!r}")
    return once


def main():
    args = sys.argv[1:]
    if not args or not args[0].isdigit():
        sys.exit(__doc__)
    runs = int(args.pop(0))
    timed, medians_file, header = [], None, False
    while args:
        opt = args.pop(0)
        if opt == "--floor":
            timed.append(("floor", "`true` started and waited for on the host (posix_spawn)",
                          host_spawn))
        elif opt == "--paddock" and len(args) >= 2:
            sock, sandbox = args.pop(0), args.pop(0)
            timed.append(("paddock", "Paddock API exec (ns): `POST /v1/sandboxes/NAME/exec`",
                          paddock(sock, sandbox)))
        elif opt == "--docker" and len(args) >= 2:
            sock, container = args.pop(0), args.pop(0)
            timed.append(("docker", "Docker Engine API exec: create, start, inspect",
                          docker(sock, container)))
        elif opt == "--medians" and args:
            medians_file = args.pop(0)
        elif opt == "--header":
            header = True
        else:
            sys.exit(__doc__)
    if header:
        print("| Round trip of `true` | Median [ms] | P10 [ms] | P90 [ms] |")
        print("|:---|---:|---:|---:|")
    for key, name, once in timed:
        for _ in range(3):
            once()
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            once()
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {times[len(times) // 10]:.2f} | "
              f"{times[len(times) * 9 // 10]:.2f} |", flush=True)
        if medians_file:
            with open(medians_file, "a") as f:
                f.write(f"{key} {median}\n")


if __name__ == "__main__":
    main()

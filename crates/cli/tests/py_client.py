"""Paddock's Python client (clients/python, installed by pip) against a real `paddock serve`:
its routes and fields checked against the OpenAPI document, then the sync and async clients
drive a real sandbox: create, exec with stdin and exact bytes, a streamed exec (with a terminal
too), files, a rule check, limits, ports, events (followed too), review mode, errors, stop,
reset, delete.

Usage: python py_client.py SOCKET OPENAPI_JSON WORKSPACE NAME BACKEND
"""

import asyncio
import dataclasses
import json
import os
import socket as sockets
import sys

import paddock_client
from paddock_client import AsyncClient, Client, PaddockError


def check(cond, what, got=None):
    if not cond:
        print(f"FAILED: {what}: {got!r}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def contract(doc):
    paths = doc["paths"]
    for method, path in paddock_client.ROUTES:
        check(method in paths.get(path, {}), f"the document has {method.upper()} {path}")
    schemas = doc["components"]["schemas"]
    for cls, schema, extra in [
        (paddock_client.Sandbox, "Summary", {"notes"}),
        (paddock_client.ExecResult, "ExecResult", set()),
        (paddock_client.FileEntry, "FileEntry", set()),
        (paddock_client.Rule, "RuleView", set()),
        (paddock_client.Check, "Check", set()),
        (paddock_client.Pending, "AskRow", set()),
        (paddock_client.Updated, "Updated", set()),
        (paddock_client.Port, "Port", set()),
        (paddock_client.Event, "SandboxEvent", set()),
        (paddock_client.Changes, "Changes", set()),
        (paddock_client.ReviewResult, "ReviewResult", set()),
    ]:
        mine = {f.name for f in dataclasses.fields(cls)} - extra
        theirs = set(schemas[schema]["properties"])
        check(mine == theirs - ({"encoding"} if schema == "ExecResult" else set()),
              f"{cls.__name__} has {schema}'s fields", (mine ^ theirs))
    start = paddock_client._stream_start(["sh"], ["A=1"], "agent", "/", True, 30, 100)
    theirs = set(schemas["StreamStart"]["properties"])
    check(set(start) == theirs, "a streamed exec's start has StreamStart's fields",
          set(start) ^ theirs)


def sync_flow(socket, workspace, name, backend):
    with Client(socket=socket) as c:
        check(c.health()["status"] == "ok", "health")
        sb = c.create(workspace=workspace, name=name, backend=backend)
        check(sb.state == "running" and sb.name == name, "create starts it", sb)
        r = c.exec(name, ["sh", "-c", "cat; printf '\\377' >&2; exit 4"], stdin=b"in\x00put")
        check((r.exit_code, r.stdout, r.stderr) == (4, b"in\x00put", b"\xff"),
              "exec: status, stdin and output bytes exact", r)
        r = c.exec(name, ["sleep", "60"], timeout_ms=500)
        check(r.timed_out, "exec: timeout", r)
        with c.exec_stream(name, ["sh", "-c", "read l; echo got-$l; echo e >&2"]) as s:
            s.write("x\n")
            seen = {"stdout": b"", "stderr": b""}
            for channel, data in s:
                seen[channel] += data
        check(seen == {"stdout": b"got-x\n", "stderr": b"e\n"} and s.exit_code == 0,
              "a streamed exec", (seen, s.exit_code))
        # In a terminal: input is typed once the command is up (its size reaches the sandbox
        # just after it starts); a resize reaches it as SIGWINCH.
        script = ("trap '[ \"$(stty size)\" = \"31 101\" ] && { echo resized; echo e >&2; exit; }' "
                  "WINCH; echo ready; read l; stty size; while :; do sleep 0.1; done")
        with c.exec_stream(name, ["bash", "-c", script], tty=True, rows=30, cols=100) as s:
            out = b""
            for channel, data in s:
                out += data
                if out.endswith(b"ready\r\n"):
                    s.write("a\r")
                if out.endswith(b"30 100\r\n"):
                    s.resize(31, 101)
        check(out == b"ready\r\na\r\n30 100\r\nresized\r\ne\r\n" and s.exit_code == 0,
              "a streamed exec in a terminal: its size, a resize, stderr with stdout", out)
        with c.exec_stream(name, ["cat"]) as s:
            s.resize(30, 100)
            s.write("after")
            s.close_stdin()
            out = b"".join(d for _, d in s)
        check(out == b"after" and len(s.refused) == 1 and "no terminal" in s.refused[0],
              "a resize without a terminal is refused, the stream goes on", (out, s.refused))
        entry = c.write_file(name, "dir/f.bin", b"\x00\x01", mode=0o600)
        check((entry.size, entry.mode) == (2, 0o600), "write_file", entry)
        check(c.read_file(name, "dir/f.bin") == b"\x00\x01", "read_file")
        check(any(e.path == "dir" for e in c.list_files(name)), "list_files")
        with open(os.path.join(workspace, "dir", "f.bin"), "rb") as f:
            check(f.read() == b"\x00\x01", "the file is in the host workspace")
        check(isinstance(c.secrets(sandbox=name), list), "secrets: names only")
        # A background command with a terminal, attached to and detached from.
        shell = name + "-t"
        c.create(workspace=workspace, name=shell, backend=backend, tty=True,
                 command=["bash", "-c", "while read -r l; do echo got-$l; done"])
        with c.attach(shell, rows=30, cols=90) as s:
            out = b""
            for _, data in s:
                out += data
                if out.endswith(b"detaches\r\n"):
                    s.write("typed\r")
                if out.endswith(b"got-typed\r\n"):
                    s.write(bytes([16, 17]))
        check(b"got-typed" in out and s.exit_code == 0 and c.get(shell).state == "running",
              "attach: typed into, detached, still running", out)
        c.delete(shell, force=True)
        verdict = c.check("https://denied.invalid/", sandbox=name)
        check(not verdict.allowed and verdict.decision == "deny",
              "check: a host no rule allows", verdict)
        check(c.pending(name) == [], "pending: nothing waits")
        try:
            c.approve(2**40, lasting="always", host_only=True)
            check(False, "approving what does not wait raises")
        except PaddockError as e:
            check((e.status, e.code) == (404, "not_found"), "approving what does not wait", e)
        try:
            c.get("no-such-sandbox")
            check(False, "an unknown sandbox raises")
        except PaddockError as e:
            check((e.status, e.code) == (404, "not_found"), "PaddockError carries status and code", e)
        try:
            c.read_file(name, "../outside")
            check(False, "a path out of the workspace raises")
        except PaddockError as e:
            check(e.code == "invalid", "a path out of the workspace is invalid", e)
        check(any(s.name == name for s in c.list()), "list")

        entry = c.fs_write(name, "/opt/py/f.txt", "inside", mode=0o640)
        check((entry.path, entry.size, entry.mode) == ("/opt/py/f.txt", 6, 0o640),
              "fs_write: the sandbox's own file system", entry)
        check(c.fs_read(name, "/opt/py/f.txt") == b"inside"
              and [e.path for e in c.fs_list(name, "/opt/py")] == ["/opt/py/f.txt"]
              and c.fs_stat(name, "/opt/py").kind == "dir", "fs_read, fs_list, fs_stat")
        up = c.update_limits(name, pids=300)
        check(up.live and up.limits["pids"] == 300, "update_limits applies at once", up)
        probe = sockets.socket()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        ports = c.publish(name, f"{free}:8080")
        check([(p.host_port, p.sandbox_port) for p in ports] == [(free, 8080)], "publish", ports)
        check(c.ports(name) == ports, "ports", c.ports(name))
        check(c.unpublish(name, free) == [], "unpublish")
        check(b"supervisor" in c.logs(name) and len(c.logs(name, tail_bytes=5)) == 5,
              "logs, and their tail", c.logs(name))
        kinds = [e.kind for e in c.events(sandbox=name)]
        check(kinds[:2] == ["created", "started"] and kinds.count("updated") == 3,
              "events: made, started, three changes", kinds)

        # Review mode: what the command writes waits; listed, applied by path, discarded.
        held = name + "-r"
        c.create(workspace=workspace, name=held, backend=backend, review=True)
        c.exec(held, ["sh", "-c", "echo one > review-1.txt; echo two > review-2.txt"])
        check(not os.path.exists(os.path.join(workspace, "review-1.txt")),
              "review mode: nothing reaches the workspace unreviewed")
        listed = c.changes(held)
        check(sorted(ch["path"] for ch in listed.changes) == ["review-1.txt", "review-2.txt"]
              and "+one" in listed.patch, "changes: listed with their diff", listed)
        done = c.apply(held, ["review-1.txt"])
        with open(os.path.join(workspace, "review-1.txt")) as f:
            check(done.complete and f.read() == "one\n", "apply: one path reaches the workspace",
                  done)
        c.stop(held)
        check(c.discard(held).complete and c.changes(held).changes == [],
              "discard: the rest is dropped")
        check(not os.path.exists(os.path.join(workspace, "review-2.txt")),
              "a discarded change never reaches the workspace")
        c.delete(held)


async def async_flow(socket, name):
    async with AsyncClient(socket=socket) as c:
        results = await asyncio.gather(*(c.exec(name, ["echo", str(i)]) for i in range(8)))
        check([r.stdout for r in results] == [f"{i}\n".encode() for i in range(8)],
              "async: eight commands side by side", results)
        async with c.exec_stream(name, ["cat"]) as s:
            await s.write(b"async-in")
            await s.close_stdin()
            out = b"".join([d async for ch, d in s if ch == "stdout"])
        check(out == b"async-in" and s.exit_code == 0, "async: a streamed exec", (out, s.exit_code))
        # Ctrl-D at the start of a line is end of input for a reader that waits (here `cat`;
        # under gVisor a `read -t` that polls the terminal does not see it).
        script = ("trap '[ \"$(stty size)\" = \"44 144\" ] && { echo resized; cat; echo ended; "
                  "exit; }' WINCH; echo ready; read l; stty size; while :; do sleep 0.1; done")
        async with c.exec_stream(name, ["bash", "-c", script], tty=True) as s:
            out = b""
            async for _, data in s:
                out += data
                if out.endswith(b"ready\r\n"):
                    await s.write(b"go\r")
                if out.endswith(b"24 80\r\n"):
                    await s.resize(44, 144)
                if out.endswith(b"resized\r\n"):
                    await s.close_stdin()
        check(out.startswith(b"ready\r\ngo\r\n24 80\r\n")
              and out.endswith(b"resized\r\nended\r\n") and s.exit_code == 0,
              "async: a terminal of 24 x 80, resized, Ctrl-D ends its input", (out, s.exit_code))
        # The stop is seen by a follower as it happens.
        last = (await c.events(sandbox=name, limit=1))[-1].id

        async def first_stop():
            async for event in c.follow_events(sandbox=name, after=last):
                if event.kind == "stopped":
                    return event

        follower = asyncio.create_task(first_stop())
        await c.exec(name, ["sh", "-c", "echo layer > /opt/in-layer"], user="root")
        sb = await c.stop(name)
        check(sb.state == "stopped", "async: stop", sb)
        stopped = await asyncio.wait_for(follower, 60)
        check(stopped.sandbox == name and stopped.id > last, "async: the stop is followed", stopped)
        sb = await c.reset(name)
        check(sb.state == "stopped", "async: reset", sb)
        await c.start(name)
        r = await c.exec(name, ["sh", "-c", "test -e /opt/in-layer || echo gone"])
        check(r.stdout == b"gone\n", "async: reset empties the layer", r)
        await c.stop(name)
        await c.delete(name)
        try:
            await c.get(name)
            check(False, "deleted")
        except PaddockError as e:
            check(e.status == 404, "async: deleted", e)


def main(socket, openapi, workspace, name, backend):
    with open(openapi) as f:
        contract(json.load(f))
    sync_flow(socket, workspace, name, backend)
    asyncio.run(async_flow(socket, name))
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])

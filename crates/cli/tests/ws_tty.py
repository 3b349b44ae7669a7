"""A streamed exec with a terminal over `paddock serve`'s WebSocket (the `websockets` package,
on the unix socket): the command has a terminal (/dev/pts), its size is the one asked for and
follows resize messages (with SIGWINCH), Ctrl-C typed interrupts it, eof types Ctrl-D, and
sizes out of range or a resize without a terminal are refused. Reuses ws_exec.py's session.

Usage: python ws_tty.py SOCKET SANDBOX
"""

import asyncio
import json
import sys

from ws_exec import STDERR, STDOUT, check, session, until


async def text(ws, streams):
    """The next text message, keeping the output that comes before it."""
    while True:
        msg = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(msg, str):
            return json.loads(msg)
        streams[msg[0]] += msg[1:]


async def main(socket, sandbox):
    # A terminal of the size asked for, from the start (the command's first look at it is
    # right); stdout and stderr together on channel 1; what is typed is echoed.
    async def go(ws, streams):
        await until(ws, streams, STDOUT, b"ready\r\n")
        await ws.send(bytes([0]) + b"go\r")

    out, err, last = await session(socket, sandbox, {
        "command": ["sh", "-c", "stty size; test -t 0 && test -t 1 && tty && echo ready; "
                    "read -r go; echo to-err >&2"],
        "tty": True, "rows": 33, "cols": 77,
    }, go)
    lines = out.decode(errors="replace").split("\r\n")
    check(lines[0] == "33 77", "the size asked for, from the start", out)
    check(lines[1].startswith("/dev/pts/"), "the command has a terminal (tty)", out)
    check(lines[2:4] == ["ready", "go"], "typed input is echoed by the terminal", out)
    check(lines[4:] == ["to-err", ""], "stderr on the same channel", out)
    check(err == b"" and last == {"type": "exit", "exit_code": 0, "notes": []},
          "channel 2 unused, exit 0", (err, last))

    # Resizes: the command gets SIGWINCH and sees the new size; bad ones are refused and the
    # command goes on; eof types Ctrl-D, which ends `read` at the start of a line.
    async def resize(ws, streams):
        await until(ws, streams, STDOUT, b"ready\r\n")
        await ws.send(json.dumps({"type": "resize", "rows": 50, "cols": 132}))
        await until(ws, streams, STDOUT, b"winch 50 132\r\n")
        await ws.send(json.dumps({"type": "resize", "rows": 0, "cols": 80}))
        refused = await text(ws, streams)
        check(refused["type"] == "refused" and refused["code"] == "invalid"
              and "rows: give 1 to 1000" in refused["detail"], "a resize to 0 rows is refused",
              refused)
        await ws.send(json.dumps({"type": "resize", "rows": 12, "cols": 1001}))
        refused = await text(ws, streams)
        check(refused["type"] == "refused" and "cols" in refused["detail"],
              "a resize to 1001 columns is refused", refused)
        await ws.send(bytes([0]) + b"still\r")
        await until(ws, streams, STDOUT, b"line:still\r\n")
        await ws.send(json.dumps({"type": "eof"}))

    out, _, last = await session(socket, sandbox, {
        # bash runs the trap between reads: each waits 0.2 s at most (status > 128), and
        # the end of input (status 1) ends the loop.
        "command": ["bash", "-c", "trap 'echo winch $(stty size)' WINCH; echo ready; "
                    "while :; do if read -r -t 0.2 l; then echo line:$l; "
                    "elif [ $? -le 128 ]; then break; fi; done; echo input-ended; exit 5"],
        "tty": True,
    }, resize)
    check(b"input-ended\r\n" in out and last["exit_code"] == 5,
          "eof ends the input, the command goes on to its end", (out, last))

    # Ctrl-C typed interrupts the command in the foreground (here: sleep, then sh).
    async def interrupt(ws, streams):
        await until(ws, streams, STDOUT, b"sleeping\r\n")
        await ws.send(bytes([0]) + b"\x03")

    loop = asyncio.get_running_loop()
    began = loop.time()
    out, _, last = await session(socket, sandbox, {
        "command": ["sh", "-c", "echo sleeping; sleep 100; echo not-interrupted"],
        "tty": True,
    }, interrupt)
    check(last["exit_code"] == 130 and b"not-interrupted" not in out
          and loop.time() - began < 60, "Ctrl-C interrupts sleep 100", (out, last))

    # A signal message still works with a terminal.
    async def term(ws, streams):
        await until(ws, streams, STDOUT, b"up\r\n")
        await ws.send(json.dumps({"type": "signal", "signal": 15}))

    out, _, last = await session(socket, sandbox, {
        "command": ["sh", "-c", "trap 'echo term; exit 9' TERM; echo up; "
                    "while :; do sleep 0.1; done"],
        "tty": True,
    }, term)
    check(b"term\r\n" in out and last["exit_code"] == 9, "a signal reaches it", (out, last))

    # Without a terminal a resize is refused and the stream goes on.
    async def no_tty(ws, streams):
        await ws.send(json.dumps({"type": "resize", "rows": 30, "cols": 90}))
        refused = await text(ws, streams)
        check(refused["type"] == "refused" and "no terminal" in refused["detail"],
              "a resize without a terminal is refused", refused)
        await ws.send(bytes([0]) + b"after\n")
        await ws.send(json.dumps({"type": "eof"}))

    out, err, last = await session(socket, sandbox, {"command": ["cat"]}, no_tty)
    check(out == b"after\n" and last["exit_code"] == 0, "and the stream goes on", (out, last))

    # Sizes out of range, or without tty, end the exec before it starts with `invalid`.
    for start, what in [
        ({"tty": True, "rows": 0, "cols": 80}, "rows: give 1 to 1000 (character cells), not 0"),
        ({"tty": True, "rows": 24, "cols": 1001}, "cols: give 1 to 1000"),
        ({"rows": 24, "cols": 80}, "give them with \"tty\": true"),
    ]:
        out, _, last = await session(socket, sandbox, {"command": ["echo", "ran"], **start},
                                     lambda ws, s: asyncio.sleep(0))
        check(out == b"" and last["type"] == "error" and last["code"] == "invalid"
              and what in last["detail"], f"{start} is refused", (out, last))
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

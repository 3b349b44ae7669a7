"""A streamed exec over `paddock serve`'s WebSocket (the `websockets` package, on the unix
socket): input sent while the command runs and answered at once, both output streams apart,
the exit status, a signal, and a client that leaves.

Usage: python ws_exec.py SOCKET SANDBOX
"""

import asyncio
import json
import sys

from websockets.asyncio.client import unix_connect

STDIN, STDOUT, STDERR = 0, 1, 2


def check(cond, what, got):
    if not cond:
        print(f"FAILED: {what}: {got!r}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


async def session(socket, sandbox, start, script, route="exec/stream"):
    """Runs `script(ws, streams)` on the sandbox's `route` after sending `start` (when it is not
    None); returns (stdout, stderr, last)."""
    uri = f"ws://x/v1/sandboxes/{sandbox}/{route}"
    streams = {STDOUT: b"", STDERR: b""}
    async with unix_connect(socket, uri) as ws:
        if start is not None:
            await ws.send(json.dumps(start))
        await script(ws, streams)
        last = None
        async for msg in ws:
            if isinstance(msg, bytes):
                streams[msg[0]] += msg[1:]
            else:
                last = json.loads(msg)
    return streams[STDOUT], streams[STDERR], last


async def until(ws, streams, channel, want):
    """Reads messages until `want` is in the stream `channel`."""
    while want not in streams[channel]:
        msg = await asyncio.wait_for(ws.recv(), 60)
        check(isinstance(msg, bytes), "output arrives as channel-tagged bytes", msg)
        streams[msg[0]] += msg[1:]


async def main(socket, sandbox):
    async def conversation(ws, streams):
        await ws.send(bytes([STDIN]) + b"hello\n")
        # The answer comes while the command still runs: it is streamed, not buffered.
        await until(ws, streams, STDOUT, b"got:hello\n")
        print("ok: the answer to the first line came before the input ended", flush=True)
        await ws.send(bytes([STDIN]) + b"more\x00bytes")
        await ws.send(json.dumps({"type": "eof"}))

    out, err, last = await session(socket, sandbox, {
        "command": ["sh", "-c", "read line; echo got:$line; echo to-err >&2; cat; exit 3"],
    }, conversation)
    check(out == b"got:hello\nmore\x00bytes", "stdout, with bytes as they were", out)
    check(err == b"to-err\n", "stderr apart", err)
    check(last == {"type": "exit", "exit_code": 3, "notes": []}, "the exit status", last)

    async def interrupt(ws, streams):
        await until(ws, streams, STDOUT, b"ready\n")
        await ws.send(json.dumps({"type": "signal", "signal": 15}))

    out, _, last = await session(socket, sandbox, {
        "command": ["sh", "-c", "trap 'echo term; exit 9' TERM; echo ready; "
                    "while :; do sleep 0.1; done"]}, interrupt)
    check(out == b"ready\nterm\n" and last["exit_code"] == 9,
          "a signal reaches the command", (out, last))

    out, err, last = await session(socket, sandbox, {"command": []}, lambda ws, s: asyncio.sleep(0))
    check(last["type"] == "error" and last["code"] == "invalid", "an empty command is refused",
          last)

    # A client that leaves stops its command.
    uri = f"ws://x/v1/sandboxes/{sandbox}/exec/stream"
    async with unix_connect(socket, uri) as ws:
        await ws.send(json.dumps({"command": ["sh", "-c", "echo up; exec sleep 600"]}))
        streams = {STDOUT: b"", STDERR: b""}
        await until(ws, streams, STDOUT, b"up\n")
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

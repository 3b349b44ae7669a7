"""Attaching to a background sandbox's command over `paddock serve`'s WebSocket (the
`websockets` package, on the unix socket): what is typed reaches the command and its answer
comes back, a resize reaches it, Ctrl-P Ctrl-Q detaches and leaves it running, and a second
attach finds it still there.

Usage: python ws_attach.py SOCKET SANDBOX
"""

import asyncio
import json
import sys

from ws_exec import STDIN, STDOUT, check, session, until


async def attached(socket, sandbox, script):
    """`script` on the sandbox's attach route, with a terminal of 30 x 90: (output, last)."""
    out, _, last = await session(socket, sandbox, None, script, route="attach?rows=30&cols=90")
    return out, last


async def main(socket, sandbox):
    async def first(ws, streams):
        await until(ws, streams, STDOUT, b"Ctrl-P Ctrl-Q detaches")
        await ws.send(bytes([STDIN]) + b"hello\r")
        await until(ws, streams, STDOUT, b"got hello")
        await ws.send(bytes([STDIN]) + b"size\r")
        await until(ws, streams, STDOUT, b"30 90")
        await ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 100}))
        await ws.send(bytes([STDIN]) + b"size\r")
        await until(ws, streams, STDOUT, b"40 100")
        await ws.send(bytes([STDIN, 16, 17]))

    out, last = await attached(socket, sandbox, first)
    check(b"got hello" in out and b"40 100" in out, "typed lines reach the command, its size follows",
          out)
    check(last == {"type": "exit", "exit_code": 0, "notes": []} and b"detached" in out,
          "Ctrl-P Ctrl-Q detaches", (last, out))

    async def again(ws, streams):
        await until(ws, streams, STDOUT, b"Ctrl-P Ctrl-Q detaches")
        await ws.send(bytes([STDIN]) + b"again\r")
        await until(ws, streams, STDOUT, b"got again")
        await ws.send(bytes([STDIN]) + b"quit\r")

    out, last = await attached(socket, sandbox, again)
    check(b"got again" in out and last["type"] == "exit",
          "the command was still there, and its end ends the stream", (last, out))
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))

"""A thousand exec requests at once to `paddock serve` on its unix socket (asyncio, plain
HTTP/1.1): every one must be answered 200 with its own output, and the server must answer a
health check afterwards.

Usage: python api_flood.py SOCKET SANDBOX COUNT
"""

import asyncio
import json
import sys


async def request(socket, method, path, body=None):
    reader, writer = await asyncio.open_unix_connection(socket)
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    writer.write(head.encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, payload


async def one(socket, sandbox, i):
    status, payload = await request(socket, "POST", f"/v1/sandboxes/{sandbox}/exec",
                                    {"command": ["echo", f"run-{i}"]})
    if status != 200:
        return f"request {i}: {status} {payload[:300]!r}"
    answer = json.loads(payload)
    if answer["stdout"] != f"run-{i}\n" or answer["exit_code"] != 0:
        return f"request {i}: {answer!r}"
    return None


async def main(socket, sandbox, count):
    results = await asyncio.gather(*(one(socket, sandbox, i) for i in range(count)),
                                   return_exceptions=True)
    failed = [r for r in results if r is not None]
    for f in failed[:10]:
        print(f"FAILED: {f}", flush=True)
    status, _ = await request(socket, "GET", "/v1/health")
    print(f"answered {count - len(failed)} of {count}; health {status}", flush=True)
    if failed or status != 200:
        sys.exit(1)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

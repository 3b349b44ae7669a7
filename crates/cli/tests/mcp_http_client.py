"""The official MCP Python SDK over streamable HTTP to `paddock serve`'s /v1/mcp, on its unix
socket: the same tools as `paddock mcp`, a sandbox made, a command run, the sandbox deleted.

Usage: python mcp_http_client.py SOCKET WORKSPACE NAME
"""

import asyncio
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def check(cond, what, got=None):
    if not cond:
        print(f"FAILED: {what}: {got!r}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def structured(result):
    value = getattr(result, "structured_content", None)
    if value is None:
        value = getattr(result, "structuredContent", None)
    return value


async def main(socket, workspace, name):
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=socket), timeout=300)
    async with http, streamable_http_client("http://localhost/v1/mcp", http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            info = getattr(init, "server_info", None) or getattr(init, "serverInfo")
            check(info.name == "paddock", "the server over HTTP is paddock", info)
            tools = {t.name for t in (await session.list_tools()).tools}
            check({"sandbox_create", "sandbox_exec", "file_read", "policy_check"} <= tools,
                  "the same tools as over stdio", tools)
            made = structured(await session.call_tool("sandbox_create", {
                "workspace": workspace, "name": name, "backend": "ns"}))
            check(made["sandbox"]["state"] == "running", "sandbox_create", made)
            ran = structured(await session.call_tool("sandbox_exec", {
                "sandbox": name, "command": ["sh", "-c", "echo over-http; exit 5"]}))
            check(ran["stdout"] == "over-http\n" and ran["exit_code"] == 5, "sandbox_exec", ran)
            gone = await session.call_tool("sandbox_delete", {"sandbox": name, "force": True})
            check(not (getattr(gone, "is_error", None) or getattr(gone, "isError", False)),
                  "sandbox_delete", gone)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

"""An MCP client (the official Python SDK, PyPI `mcp`) driving `paddock mcp` over stdio.

Usage: python mcp_client.py PADDOCK WORKSPACE BACKEND NAME OUTSIDE
(OUTSIDE: a host file outside the workspace that holds `host-only`)
The server inherits this process's environment. Prints one line per step; exits non-zero on
the first step that does not hold.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def field(obj, *names):
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    raise AttributeError(f"{obj!r} has none of {names}")


def check(cond, what, got):
    if not cond:
        print(f"FAILED: {what}: {got!r}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def structured(result):
    value = field(result, "structured_content", "structuredContent")
    if value is None:
        texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
        value = json.loads(texts[0])
    return value


def text(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main(paddock, workspace, backend, name, outside):
    params = StdioServerParameters(command=paddock, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            info = field(init, "server_info", "serverInfo")
            check(info.name == "paddock", "the server says it is paddock", info)
            instructions = init.instructions or ""
            check("workspace" in instructions and "proxy" in instructions,
                  "its instructions say what is isolated", instructions)

            tools = {t.name: t for t in (await session.list_tools()).tools}
            want = {"sandbox_create", "sandbox_exec", "sandbox_list", "sandbox_stop",
                    "sandbox_start", "sandbox_delete", "sandbox_diff", "file_read", "file_write",
                    "file_list", "policy_check"}
            check(want <= set(tools), "it lists the sandbox tools", sorted(tools))
            check("no tool here applies" in tools["sandbox_diff"].description,
                  "sandbox_diff's description says the user applies the changes",
                  tools["sandbox_diff"].description)
            check("only that folder" in tools["sandbox_create"].description,
                  "sandbox_create's description says what the sandbox sees",
                  tools["sandbox_create"].description)
            schema = field(tools["sandbox_exec"], "input_schema", "inputSchema")
            check("command" in schema.get("required", []),
                  "sandbox_exec's schema requires a command", schema)

            made = await session.call_tool("sandbox_create", {
                "workspace": workspace, "backend": backend, "name": name})
            check(not field(made, "is_error", "isError"), "sandbox_create succeeds", text(made))
            sandbox = structured(made)["sandbox"]
            check(sandbox["name"] == name and sandbox["state"] == "running",
                  "the sandbox runs", sandbox)

            ran = await session.call_tool("sandbox_exec", {
                "sandbox": name,
                "command": ["sh", "-c", "cat > from-mcp; id -un; echo oops >&2; exit 7"],
                "stdin": "written through MCP\n",
            })
            check(not field(ran, "is_error", "isError"), "sandbox_exec succeeds", text(ran))
            out = structured(ran)
            check(out["exit_code"] == 7 and out["stdout"] == "agent\n"
                  and out["stderr"] == "oops\n", "the command's status and streams", out)
            with open(os.path.join(workspace, "from-mcp")) as f:
                check(f.read() == "written through MCP\n",
                      "its file is in the host workspace", workspace)

            # What the sandbox cannot see: a host file outside its workspace.
            peek = structured(await session.call_tool("sandbox_exec", {
                "sandbox": name, "command": ["sh", "-c", f"cat {outside} || echo unseen"]}))
            check(peek["stdout"].endswith("unseen\n") and "host-only" not in peek["stdout"],
                  "a host file outside the workspace is out of reach", peek)

            # Files: written by the tool, seen by the command; read back; a symlink the
            # command plants to the outside file is not followed.
            wrote = await session.call_tool("file_write", {
                "sandbox": name, "path": "notes/todo.txt", "content": "from the tool\n"})
            check(not field(wrote, "is_error", "isError"), "file_write writes", text(wrote))
            seen = structured(await session.call_tool("sandbox_exec", {
                "sandbox": name, "command": ["cat", "notes/todo.txt"]}))
            check(seen["stdout"] == "from the tool\n", "the command sees the written file", seen)
            read = structured(await session.call_tool("file_read", {
                "sandbox": name, "path": "from-mcp"}))
            check(read["content"] == "written through MCP\n", "file_read reads", read)
            files = structured(await session.call_tool("file_list", {"sandbox": name}))
            names = {e["path"]: e["kind"] for e in files["entries"]}
            check(names.get("notes") == "dir" and names.get("from-mcp") == "file",
                  "file_list lists", names)
            await session.call_tool("sandbox_exec", {
                "sandbox": name, "command": ["ln", "-s", outside, "planted"]})
            refused = await session.call_tool("file_read", {"sandbox": name, "path": "planted"})
            check(field(refused, "is_error", "isError") and "host-only" not in text(refused),
                  "file_read does not follow a planted symlink", text(refused))
            escaped = await session.call_tool("file_read", {"sandbox": name, "path": "../x"})
            check(field(escaped, "is_error", "isError"), "a path out of the workspace is refused",
                  text(escaped))

            verdict = structured(await session.call_tool("policy_check", {
                "url": "https://denied.invalid/", "sandbox": name}))
            check(verdict["allowed"] is False and "CONNECT denied.invalid:443" in verdict["request"],
                  "policy_check says a host no rule allows is denied", verdict)

            listed = structured(await session.call_tool("sandbox_list", {}))
            check(any(s["name"] == name for s in listed["sandboxes"]),
                  "sandbox_list shows it", listed)

            bad = await session.call_tool("sandbox_exec", {"sandbox": "no-such-sandbox",
                                                           "command": ["true"]})
            check(field(bad, "is_error", "isError") and "not_found" in text(bad),
                  "an unknown sandbox is a tool error naming not_found", text(bad))
            busy = await session.call_tool("sandbox_delete", {"sandbox": name})
            check(field(busy, "is_error", "isError") and "conflict" in text(busy),
                  "a running sandbox is not deleted without force", text(busy))

            direct = await session.call_tool("sandbox_diff", {"sandbox": name})
            check(field(direct, "is_error", "isError") and "review mode" in text(direct),
                  "sandbox_diff of a sandbox not in review mode says so", text(direct))

            # A review-mode sandbox: what its command writes waits, and sandbox_diff shows it.
            held = name + "-r"
            made = await session.call_tool("sandbox_create", {
                "workspace": workspace, "backend": backend, "name": held, "review": True})
            check(not field(made, "is_error", "isError"), "a review-mode sandbox is made",
                  text(made))
            wrote = structured(await session.call_tool("sandbox_exec", {
                "sandbox": held, "command": ["sh", "-c",
                                             "echo held back > held.txt; echo changed >> from-mcp"]}))
            check(wrote["exit_code"] == 0, "its command writes files", wrote)
            check(not os.path.exists(os.path.join(workspace, "held.txt")),
                  "its new file is not in the host workspace", workspace)
            diff = await session.call_tool("sandbox_diff", {"sandbox": held})
            check(not field(diff, "is_error", "isError"), "sandbox_diff answers", text(diff))
            diff = structured(diff)
            kinds = {c["path"]: c["kind"] for c in diff["changes"]}
            check(kinds == {"held.txt": "added", "from-mcp": "modified"},
                  "sandbox_diff lists the added and the modified file", diff["changes"])
            check("+held back" in diff["patch"] and "+changed" in diff["patch"]
                  and not diff["patch_truncated"], "its patch holds the new lines", diff["patch"])
            short = structured(await session.call_tool("sandbox_diff", {
                "sandbox": held, "max_patch_bytes": 10}))
            check(len(short["patch"]) <= 10 and short["patch_truncated"],
                  "the patch is cut where asked, and says so", short)
            gone = await session.call_tool("sandbox_delete", {"sandbox": held, "force": True})
            check(not field(gone, "is_error", "isError"), "the review-mode sandbox is deleted",
                  text(gone))
            with open(os.path.join(workspace, "from-mcp")) as f:
                check(f.read() == "written through MCP\n",
                      "what it held back never reached the workspace", workspace)

            stopped = structured(await session.call_tool("sandbox_stop", {"sandbox": name}))
            check(stopped["sandbox"]["state"] == "stopped", "sandbox_stop stops it", stopped)
            gone = await session.call_tool("sandbox_delete", {"sandbox": name})
            check(not field(gone, "is_error", "isError"), "sandbox_delete deletes it", text(gone))
            with open(os.path.join(workspace, "from-mcp")) as f:
                check(f.read() == "written through MCP\n",
                      "the workspace keeps its files", workspace)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))

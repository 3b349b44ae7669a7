"""A typed client for Paddock's HTTP API (`paddock serve`), sync (`Client`) and async
(`AsyncClient`). The routes and fields are those of the API's OpenAPI document
(`docs/openapi.json`); the suite checks the two agree."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional, Sequence, Union

import httpx

__all__ = [
    "AsyncClient",
    "AsyncExecStream",
    "Changes",
    "Check",
    "Client",
    "Event",
    "ExecResult",
    "ExecStream",
    "FileEntry",
    "PaddockError",
    "Pending",
    "Port",
    "ReviewResult",
    "Rule",
    "Sandbox",
    "Updated",
    "default_socket",
]

__version__ = "0.1.0"

#: Every route the client uses, as (method, path) of the OpenAPI document.
ROUTES = [
    ("get", "/v1/health"),
    ("get", "/v1/sandboxes"),
    ("post", "/v1/sandboxes"),
    ("get", "/v1/sandboxes/{name}"),
    ("delete", "/v1/sandboxes/{name}"),
    ("post", "/v1/sandboxes/{name}/start"),
    ("post", "/v1/sandboxes/{name}/stop"),
    ("post", "/v1/sandboxes/{name}/exec"),
    ("get", "/v1/sandboxes/{name}/exec/stream"),
    ("get", "/v1/sandboxes/{name}/attach"),
    ("get", "/v1/sandboxes/{name}/files/list"),
    ("get", "/v1/sandboxes/{name}/files/stat"),
    ("get", "/v1/sandboxes/{name}/files/content"),
    ("put", "/v1/sandboxes/{name}/files/content"),
    ("delete", "/v1/sandboxes/{name}/files"),
    ("get", "/v1/policy/rules"),
    ("post", "/v1/policy/rules"),
    ("delete", "/v1/policy/rules/{id}"),
    ("get", "/v1/policy/check"),
    ("get", "/v1/policy/pending"),
    ("post", "/v1/policy/pending/{id}/approve"),
    ("post", "/v1/policy/pending/{id}/deny"),
    ("get", "/v1/secrets"),
    ("post", "/v1/sandboxes/{name}/reset"),
    ("patch", "/v1/sandboxes/{name}/limits"),
    ("get", "/v1/sandboxes/{name}/ports"),
    ("post", "/v1/sandboxes/{name}/ports"),
    ("delete", "/v1/sandboxes/{name}/ports/{host_port}"),
    ("get", "/v1/sandboxes/{name}/logs"),
    ("get", "/v1/sandboxes/{name}/fs/list"),
    ("get", "/v1/sandboxes/{name}/fs/stat"),
    ("get", "/v1/sandboxes/{name}/fs/content"),
    ("put", "/v1/sandboxes/{name}/fs/content"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/sandboxes/{name}/changes"),
    ("post", "/v1/sandboxes/{name}/changes/apply"),
    ("post", "/v1/sandboxes/{name}/changes/discard"),
]

STDIN, STDOUT, STDERR = 0, 1, 2


class PaddockError(Exception):
    """An error answer of the API (RFC 9457 problem): `status`, a stable `code`, `detail`."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


def _approval(lasting: str, shape: dict) -> dict:
    """The body of an approval (schema `Approval`); `global_` is sent as `global`."""
    body = {"lasting": lasting}
    for k, v in shape.items():
        if v is not None:
            body["global" if k == "global_" else k] = v
    return body


def _from(cls, data: dict):
    """An instance of the dataclass `cls` from the API's JSON (fields it does not know are
    left out, so a newer server's additions do not break an older client)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Sandbox:
    """A sandbox as the API shows it (schema `Summary`)."""

    name: str
    backend: str
    state: str
    image: str
    workspace: str
    created_at: int
    limits: dict
    started_at: Optional[int] = None
    last_exit: Optional[int] = None
    uptime_seconds: Optional[int] = None
    last_cause: Optional[str] = None
    memory_bytes: Optional[int] = None
    cpu_seconds: Optional[float] = None
    notes: list = field(default_factory=list)


@dataclass
class ExecResult:
    """How a command ended and what it wrote (schema `ExecResult`; output as bytes)."""

    exit_code: Optional[int]
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_ms: int
    notes: list


@dataclass
class FileEntry:
    """One entry of a workspace (schema `FileEntry`)."""

    path: str
    kind: str
    size: int
    mode: int
    modified: int
    target: Optional[str] = None


@dataclass
class Rule:
    """A network rule (schema `RuleView`)."""

    id: int
    scope: str
    action: str
    host: str
    port: str
    private_address: bool
    source: str
    method: Optional[str] = None
    path: Optional[str] = None


@dataclass
class Check:
    """What the egress proxy would decide for a URL (schema `Check`)."""

    allowed: bool
    decision: str
    request: str
    reason: str
    rule: Optional[int] = None
    rule_text: Optional[str] = None
    note: Optional[str] = None


@dataclass
class Pending:
    """A request an `ask` rule holds until the user answers (schema `AskRow`)."""

    id: int
    sandbox: str
    kind: str
    host: str
    port: int
    waiting: int
    asked_at: int
    expires_at: int
    method: Optional[str] = None
    path: Optional[str] = None
    rule: Optional[int] = None
    command: Optional[str] = None


@dataclass
class Updated:
    """What a limits update did (schema `Updated`): the limits now, whether the running
    sandbox took them at once, and those that apply only at its next start."""

    limits: dict
    live: bool
    later: list


@dataclass
class Port:
    """A published port (schema `Port`)."""

    address: str
    host_port: int
    sandbox_port: int
    auto: bool


@dataclass
class Event:
    """A sandbox's change (schema `SandboxEvent`): created, started, stopped, updated,
    removed."""

    id: int
    ts: int
    sandbox: str
    kind: str
    state: Optional[str] = None
    exit: Optional[int] = None
    cause: Optional[str] = None


@dataclass
class Changes:
    """A review-mode sandbox's changes that wait for review (schema `Changes`)."""

    changes: list
    patch: str
    patch_truncated: bool


@dataclass
class ReviewResult:
    """What an apply or discard did (schema `ReviewResult`)."""

    complete: bool
    notes: list


def default_socket() -> Path:
    """Where `paddock serve` listens by default for this user."""
    home = os.environ.get("PADDOCK_HOME")
    if home:
        return Path(home) / "run" / "api.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "paddock" / "api.sock"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "paddock" / "run" / "api.sock"


def _problem(response: httpx.Response) -> PaddockError:
    try:
        p = response.json()
        return PaddockError(p.get("status", response.status_code), p.get("code", ""), p.get("detail", ""))
    except ValueError:
        return PaddockError(response.status_code, "", response.text)


def _sandbox(answer: dict) -> Sandbox:
    sb = _from(Sandbox, answer["sandbox"] if "sandbox" in answer else answer)
    sb.notes = answer.get("notes", [])
    return sb


def _exec_body(command, stdin, env, user, workdir, timeout_ms, max_output_bytes) -> dict:
    body: dict[str, Any] = {"command": list(command), "encoding": "base64"}
    if stdin is not None:
        data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        body["stdin_base64"] = base64.b64encode(data).decode()
    for key, value in (("env", env), ("user", user), ("workdir", workdir),
                       ("timeout_ms", timeout_ms), ("max_output_bytes", max_output_bytes)):
        if value is not None:
            body[key] = list(value) if key == "env" else value
    return body


def _exec_result(answer: dict) -> ExecResult:
    r = _from(ExecResult, answer)
    r.stdout = base64.b64decode(answer["stdout"])
    r.stderr = base64.b64decode(answer["stderr"])
    return r


def _answer(r: httpx.Response) -> Any:
    """A response's value: its JSON, its bytes, None for 204; a problem raised."""
    if r.status_code >= 400:
        raise _problem(r)
    if r.status_code == 204:
        return None
    if r.headers.get("content-type", "").startswith("application/json"):
        return r.json()
    return r.content


def _stream_start(command, env, user, workdir, tty=False, rows=None, cols=None) -> dict:
    start: dict[str, Any] = {"command": list(command)}
    for key, value in (("env", env), ("user", user), ("workdir", workdir), ("rows", rows),
                       ("cols", cols)):
        if value is not None:
            start[key] = list(value) if key == "env" else value
    if tty:
        start["tty"] = True
    return start


def _resize(rows: int, cols: int) -> str:
    return json.dumps({"type": "resize", "rows": rows, "cols": cols})


def _read_params(path, max_bytes) -> dict:
    params: dict[str, Any] = {"path": path}
    if max_bytes is not None:
        params["max_bytes"] = max_bytes
    return params


def _write_args(path, data, mode, parents) -> dict:
    params: dict[str, Any] = {"path": path, "parents": str(parents).lower()}
    if mode is not None:
        params["mode"] = format(mode, "o")
    content = data.encode() if isinstance(data, str) else bytes(data)
    return {"params": params, "content": content,
            "headers": {"content-type": "application/octet-stream"}}


def _check_params(url, sandbox, method) -> dict:
    params = {"url": url}
    if sandbox is not None:
        params["sandbox"] = sandbox
    if method is not None:
        params["method"] = method
    return params


def _settings(workspace, kwargs) -> dict:
    body = {"workspace": str(workspace)}
    body.update({k: v for k, v in kwargs.items() if v is not None})
    return body


def _fs(path, user) -> dict:
    return {"path": str(path)} if user is None else {"path": str(path), "user": user}


def _limits(cpus, memory, pids, disk) -> dict:
    given = {"cpus": cpus, "memory": memory, "pids": pids, "disk": disk}
    return {k: str(v) for k, v in given.items() if v is not None}


def _event_params(sandbox, after, limit) -> dict:
    given = {"sandbox": sandbox, "after": after, "limit": limit}
    return {k: v for k, v in given.items() if v is not None}


def _ports(answer: dict) -> list[Port]:
    return [_from(Port, p) for p in answer["ports"]]


class _Sse:
    """Server-sent events, fed line by line: `line` returns an event when one is complete."""

    def __init__(self):
        self._data: list[str] = []

    def line(self, line: str) -> Optional[Event]:
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip(" "))
        elif line == "" and self._data:
            data, self._data = "\n".join(self._data), []
            return _from(Event, json.loads(data))
        return None


def _transport_args(socket, url, token):
    """httpx arguments for the unix socket (default) or a TCP URL with its token."""
    headers = {}
    if url is None:
        path = str(socket or default_socket())
        return "http://paddock", headers, {"uds": path}, path
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return url.rstrip("/"), headers, {}, None


Data = Union[bytes, str]


class Client:
    """The API, synchronously. `Client()` talks to the default unix socket; `socket=` names
    another; `url=` and `token=` talk TCP (`paddock serve --listen`)."""

    def __init__(self, socket: Optional[Union[str, Path]] = None, url: Optional[str] = None,
                 token: Optional[str] = None, timeout: float = 600.0):
        base, headers, transport, self._socket = _transport_args(socket, url, token)
        self._base, self._headers = base, headers
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout,
                                  transport=httpx.HTTPTransport(**transport))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        return _answer(self._http.request(method, path, **kwargs))

    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    # Sandboxes.
    def list(self, running: bool = False) -> list[Sandbox]:
        answer = self._call("GET", "/v1/sandboxes", params={"running": str(running).lower()})
        return [_from(Sandbox, s) for s in answer["sandboxes"]]

    def create(self, workspace: Union[str, Path], start: bool = True, **settings) -> Sandbox:
        """Makes a sandbox (`paddock create`'s settings: name, backend, image, cpus, memory,
        allow, policy, review, ...) and starts it unless `start=False`."""
        return _sandbox(self._call("POST", "/v1/sandboxes",
                                   params={"start": str(start).lower()},
                                   json=_settings(workspace, settings)))

    def get(self, name: str) -> Sandbox:
        return _from(Sandbox, self._call("GET", f"/v1/sandboxes/{name}"))

    def start(self, name: str) -> Sandbox:
        return _sandbox(self._call("POST", f"/v1/sandboxes/{name}/start"))

    def stop(self, name: str, grace: Optional[int] = None) -> Sandbox:
        params = {} if grace is None else {"grace": grace}
        return _sandbox(self._call("POST", f"/v1/sandboxes/{name}/stop", params=params))

    def delete(self, name: str, force: bool = False) -> None:
        self._call("DELETE", f"/v1/sandboxes/{name}", params={"force": str(force).lower()})

    # Commands.
    def exec(self, name: str, command: Sequence[str], stdin: Optional[Data] = None,
             env: Optional[Sequence[str]] = None, user: Optional[str] = None,
             workdir: Optional[str] = None, timeout_ms: Optional[int] = None,
             max_output_bytes: Optional[int] = None) -> ExecResult:
        """Runs `command` in the running sandbox `name` to its end."""
        body = _exec_body(command, stdin, env, user, workdir, timeout_ms, max_output_bytes)
        return _exec_result(self._call("POST", f"/v1/sandboxes/{name}/exec", json=body))

    def exec_stream(self, name: str, command: Sequence[str], env: Optional[Sequence[str]] = None,
                    user: Optional[str] = None, workdir: Optional[str] = None, tty: bool = False,
                    rows: Optional[int] = None, cols: Optional[int] = None) -> "ExecStream":
        """Runs `command` with its streams as they happen (a WebSocket): use as a context
        manager; iterate it for ("stdout" | "stderr", bytes). With `tty` it runs in a terminal
        of `rows` x `cols` (24 x 80 unless given): its output, stdout and stderr together,
        comes as "stdout", what is written is typed, `resize` changes the size, and
        `close_stdin` types Ctrl-D."""
        return ExecStream(self, name, _stream_start(command, env, user, workdir, tty, rows, cols))

    def attach(self, name: str, rows: int = 24, cols: int = 80) -> "ExecStream":
        """Attaches to the command of a background sandbox started with a terminal (`tty`):
        the stream of a streamed exec with a terminal; writing bytes 16, 17 (Ctrl-P Ctrl-Q)
        detaches and leaves the command running."""
        return ExecStream(self, name, None, f"attach?rows={int(rows)}&cols={int(cols)}")

    # Files of the workspace.
    def list_files(self, name: str, path: str = "") -> list[FileEntry]:
        answer = self._call("GET", f"/v1/sandboxes/{name}/files/list", params={"path": path})
        return [_from(FileEntry, e) for e in answer["entries"]]

    def stat(self, name: str, path: str) -> FileEntry:
        return _from(FileEntry, self._call("GET", f"/v1/sandboxes/{name}/files/stat",
                                           params={"path": path}))

    def read_file(self, name: str, path: str, max_bytes: Optional[int] = None) -> bytes:
        return self._call("GET", f"/v1/sandboxes/{name}/files/content",
                          params=_read_params(path, max_bytes))

    def write_file(self, name: str, path: str, data: Data, mode: Optional[int] = None,
                   parents: bool = True) -> FileEntry:
        return _from(FileEntry, self._call("PUT", f"/v1/sandboxes/{name}/files/content",
                                           **_write_args(path, data, mode, parents)))

    def delete_file(self, name: str, path: str, recursive: bool = False) -> None:
        self._call("DELETE", f"/v1/sandboxes/{name}/files",
                   params={"path": path, "recursive": str(recursive).lower()})

    # The sandbox's own file system (absolute paths inside, as root unless `user`).
    def fs_list(self, name: str, path: str, user: Optional[str] = None) -> list[FileEntry]:
        answer = self._call("GET", f"/v1/sandboxes/{name}/fs/list", params=_fs(path, user))
        return [_from(FileEntry, e) for e in answer["entries"]]

    def fs_stat(self, name: str, path: str, user: Optional[str] = None) -> FileEntry:
        return _from(FileEntry, self._call("GET", f"/v1/sandboxes/{name}/fs/stat",
                                           params=_fs(path, user)))

    def fs_read(self, name: str, path: str, user: Optional[str] = None) -> bytes:
        return self._call("GET", f"/v1/sandboxes/{name}/fs/content", params=_fs(path, user))

    def fs_write(self, name: str, path: str, data: Data, mode: Optional[int] = None,
                 user: Optional[str] = None) -> FileEntry:
        params = _fs(path, user)
        if mode is not None:
            params["mode"] = format(mode, "o")
        body = data.encode() if isinstance(data, str) else bytes(data)
        return _from(FileEntry, self._call("PUT", f"/v1/sandboxes/{name}/fs/content",
                                           params=params, content=body,
                                           headers={"content-type": "application/octet-stream"}))

    # Network rules.
    def rules(self, sandbox: Optional[str] = None) -> list[Rule]:
        params = {} if sandbox is None else {"sandbox": sandbox}
        return [_from(Rule, r) for r in self._call("GET", "/v1/policy/rules", params=params)["rules"]]

    def add_rule(self, action: str, hosts: Sequence[str], **options) -> list[Rule]:
        body = {"action": action, "hosts": list(hosts)}
        body.update({k: v for k, v in options.items() if v is not None})
        return [_from(Rule, r) for r in self._call("POST", "/v1/policy/rules", json=body)["rules"]]

    def remove_rule(self, rule_id: int) -> None:
        self._call("DELETE", f"/v1/policy/rules/{rule_id}")

    def check(self, url: str, sandbox: Optional[str] = None, method: Optional[str] = None) -> Check:
        return _from(Check, self._call("GET", "/v1/policy/check",
                                       params=_check_params(url, sandbox, method)))

    def pending(self, sandbox: Optional[str] = None) -> list[Pending]:
        """The requests that wait for the user's answer (every sandbox's, or one's)."""
        params = {} if sandbox is None else {"sandbox": sandbox}
        answer = self._call("GET", "/v1/policy/pending", params=params)
        return [_from(Pending, r) for r in answer["requests"]]

    def approve(self, request_id: int, lasting: str = "once", **shape) -> dict:
        """Approves a waiting request: `lasting` is `once`, `for_run` or `always`; `shape`
        (`host_only`, `path`, `method`, `sandbox`, `global_`) shapes the rule it makes. The
        answer: the request, and the rule made, if any."""
        return self._call("POST", f"/v1/policy/pending/{request_id}/approve",
                          json=_approval(lasting, shape))

    def deny(self, request_id: int, always: bool = False) -> dict:
        """Denies a waiting request; `always` also denies its host and port from now on."""
        return self._call("POST", f"/v1/policy/pending/{request_id}/deny",
                          json={"always": always})

    def secrets(self, sandbox: Optional[str] = None) -> list[dict]:
        """The secrets kept on the host (those a sandbox gets, with `sandbox`): name, scope,
        service, hosts and variables; never a value."""
        params = {} if sandbox is None else {"sandbox": sandbox}
        return self._call("GET", "/v1/secrets", params=params)["secrets"]

    # Changing a sandbox.
    def reset(self, name: str, force: bool = False) -> Sandbox:
        """Empties a stopped sandbox's layer (back to its image); `force` drops changes that
        wait for review."""
        return _sandbox(self._call("POST", f"/v1/sandboxes/{name}/reset",
                                   params={"force": str(force).lower()}))

    def update_limits(self, name: str, cpus=None, memory=None, pids=None, disk=None) -> Updated:
        """New limits as `paddock update` takes them (`"0.5"`, `"512m"`, `200`, `"20g"`)."""
        return _from(Updated, self._call("PATCH", f"/v1/sandboxes/{name}/limits",
                                         json=_limits(cpus, memory, pids, disk)))

    def ports(self, name: str) -> list[Port]:
        return _ports(self._call("GET", f"/v1/sandboxes/{name}/ports"))

    def publish(self, name: str, spec: str) -> list[Port]:
        """Publishes `[ADDR:][HOST_PORT:]SANDBOX_PORT` (or a range); the ports after."""
        return _ports(self._call("POST", f"/v1/sandboxes/{name}/ports", json={"publish": spec}))

    def unpublish(self, name: str, host_port: int) -> list[Port]:
        return _ports(self._call("DELETE", f"/v1/sandboxes/{name}/ports/{host_port}"))

    def logs(self, name: str, tail_bytes: Optional[int] = None) -> bytes:
        """What a background sandbox's command and supervisor wrote (the last `tail_bytes`)."""
        params = {} if tail_bytes is None else {"tail_bytes": tail_bytes}
        r = self._http.get(f"/v1/sandboxes/{name}/logs", params=params)
        if r.status_code != 200:
            raise _problem(r)
        return r.content

    def follow_logs(self, name: str, tail_bytes: Optional[int] = None) -> Iterator[bytes]:
        """The log as it is written, until the sandbox stops."""
        params = {"follow": "true"}
        if tail_bytes is not None:
            params["tail_bytes"] = tail_bytes
        with self._http.stream("GET", f"/v1/sandboxes/{name}/logs", params=params,
                               timeout=None) as r:
            if r.status_code != 200:
                r.read()
                raise _problem(r)
            yield from r.iter_bytes()

    # Events.
    def events(self, sandbox: Optional[str] = None, after: Optional[int] = None,
               limit: Optional[int] = None) -> list[Event]:
        answer = self._call("GET", "/v1/events", params=_event_params(sandbox, after, limit))
        return [_from(Event, e) for e in answer["events"]]

    def follow_events(self, sandbox: Optional[str] = None, after: Optional[int] = None,
                      limit: int = 0) -> Iterator[Event]:
        """The events as they happen (after `after`, else the last `limit`), until the caller
        stops iterating."""
        params = _event_params(sandbox, after, limit)
        with self._http.stream("GET", "/v1/events/stream", params=params, timeout=None) as r:
            if r.status_code != 200:
                r.read()
                raise _problem(r)
            sse = _Sse()
            for line in r.iter_lines():
                event = sse.line(line)
                if event is not None:
                    yield event

    # Review mode.
    def changes(self, name: str) -> Changes:
        """The changes a review-mode sandbox made that wait for review, with their diff."""
        return _from(Changes, self._call("GET", f"/v1/sandboxes/{name}/changes"))

    def apply(self, name: str, paths: Sequence[str] = (), force: bool = False,
              merge: bool = False) -> ReviewResult:
        """Writes changes (all, or those under `paths`) to the workspace."""
        body = {"paths": list(paths), "force": force, "merge": merge}
        return _from(ReviewResult,
                     self._call("POST", f"/v1/sandboxes/{name}/changes/apply", json=body))

    def discard(self, name: str, paths: Sequence[str] = ()) -> ReviewResult:
        """Drops a stopped sandbox's changes (all, or those under `paths`)."""
        return _from(ReviewResult, self._call("POST", f"/v1/sandboxes/{name}/changes/discard",
                                              json={"paths": list(paths)}))


def _ws_uri(base: str, name: str, route: str = "exec/stream") -> str:
    if base == "http://paddock":
        return f"ws://paddock/v1/sandboxes/{name}/{route}"
    return base.replace("http", "ws", 1) + f"/v1/sandboxes/{name}/{route}"


def _end(msg: str, stream) -> None:
    end = json.loads(msg)
    if end.get("type") == "refused":
        # A control message the server refused; the command goes on.
        stream.refused.append(end.get("detail", ""))
        return
    if end.get("type") == "error":
        raise PaddockError(0, end.get("code", ""), end.get("detail", ""))
    stream.exit_code = end.get("exit_code")
    stream.notes = end.get("notes", [])


_CHANNELS = {STDOUT: "stdout", STDERR: "stderr"}


class ExecStream:
    """A command whose streams come as they happen. Iterate it for ("stdout" | "stderr",
    bytes) until the command ends; then `exit_code` and `notes` are set. `refused` lists why
    the server refused control messages (a resize without a terminal, a size out of range)."""

    def __init__(self, client: Client, name: str, start: Optional[dict],
                 route: str = "exec/stream"):
        self._client, self._name, self._start, self._route = client, name, start, route
        self._ws = None
        self.exit_code: Optional[int] = None
        self.notes: list = []
        self.refused: list[str] = []

    def __enter__(self) -> "ExecStream":
        from websockets.sync.client import connect, unix_connect
        uri = _ws_uri(self._client._base, self._name, self._route)
        if self._client._socket is not None:
            self._ws = unix_connect(self._client._socket, uri)
        else:
            self._ws = connect(uri, additional_headers=self._client._headers)
        if self._start is not None:
            self._ws.send(json.dumps(self._start))
        return self

    def __exit__(self, *exc) -> None:
        if self._ws is not None:
            self._ws.close()

    def write(self, data: Data) -> None:
        self._ws.send(bytes([STDIN]) + (data.encode() if isinstance(data, str) else bytes(data)))

    def close_stdin(self) -> None:
        self._ws.send(json.dumps({"type": "eof"}))

    def signal(self, signal: int) -> None:
        self._ws.send(json.dumps({"type": "signal", "signal": signal}))

    def resize(self, rows: int, cols: int) -> None:
        """Gives the command's terminal (`tty`) a new size; it gets SIGWINCH."""
        self._ws.send(_resize(rows, cols))

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        from websockets.exceptions import ConnectionClosed
        while True:
            try:
                msg = self._ws.recv()
            except ConnectionClosed:
                return
            if isinstance(msg, bytes):
                yield _CHANNELS.get(msg[0], str(msg[0])), msg[1:]
            else:
                _end(msg, self)


class AsyncClient:
    """The API as coroutines: the same methods as `Client`."""

    def __init__(self, socket: Optional[Union[str, Path]] = None, url: Optional[str] = None,
                 token: Optional[str] = None, timeout: float = 600.0):
        base, headers, transport, self._socket = _transport_args(socket, url, token)
        self._base, self._headers = base, headers
        self._http = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout,
                                       transport=httpx.AsyncHTTPTransport(**transport))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs) -> Any:
        return _answer(await self._http.request(method, path, **kwargs))

    async def health(self) -> dict:
        return await self._call("GET", "/v1/health")

    async def list(self, running: bool = False) -> list[Sandbox]:
        answer = await self._call("GET", "/v1/sandboxes", params={"running": str(running).lower()})
        return [_from(Sandbox, s) for s in answer["sandboxes"]]

    async def create(self, workspace: Union[str, Path], start: bool = True, **settings) -> Sandbox:
        return _sandbox(await self._call("POST", "/v1/sandboxes",
                                         params={"start": str(start).lower()},
                                         json=_settings(workspace, settings)))

    async def get(self, name: str) -> Sandbox:
        return _from(Sandbox, await self._call("GET", f"/v1/sandboxes/{name}"))

    async def start(self, name: str) -> Sandbox:
        return _sandbox(await self._call("POST", f"/v1/sandboxes/{name}/start"))

    async def stop(self, name: str, grace: Optional[int] = None) -> Sandbox:
        params = {} if grace is None else {"grace": grace}
        return _sandbox(await self._call("POST", f"/v1/sandboxes/{name}/stop", params=params))

    async def delete(self, name: str, force: bool = False) -> None:
        await self._call("DELETE", f"/v1/sandboxes/{name}", params={"force": str(force).lower()})

    async def exec(self, name: str, command: Sequence[str], stdin: Optional[Data] = None,
                   env: Optional[Sequence[str]] = None, user: Optional[str] = None,
                   workdir: Optional[str] = None, timeout_ms: Optional[int] = None,
                   max_output_bytes: Optional[int] = None) -> ExecResult:
        body = _exec_body(command, stdin, env, user, workdir, timeout_ms, max_output_bytes)
        return _exec_result(await self._call("POST", f"/v1/sandboxes/{name}/exec", json=body))

    def exec_stream(self, name: str, command: Sequence[str], env: Optional[Sequence[str]] = None,
                    user: Optional[str] = None, workdir: Optional[str] = None, tty: bool = False,
                    rows: Optional[int] = None, cols: Optional[int] = None) -> "AsyncExecStream":
        return AsyncExecStream(self, name,
                               _stream_start(command, env, user, workdir, tty, rows, cols))

    def attach(self, name: str, rows: int = 24, cols: int = 80) -> "AsyncExecStream":
        return AsyncExecStream(self, name, None, f"attach?rows={int(rows)}&cols={int(cols)}")

    async def read_file(self, name: str, path: str, max_bytes: Optional[int] = None) -> bytes:
        return await self._call("GET", f"/v1/sandboxes/{name}/files/content",
                                params=_read_params(path, max_bytes))

    async def write_file(self, name: str, path: str, data: Data, mode: Optional[int] = None,
                         parents: bool = True) -> FileEntry:
        return _from(FileEntry, await self._call("PUT", f"/v1/sandboxes/{name}/files/content",
                                                 **_write_args(path, data, mode, parents)))

    async def list_files(self, name: str, path: str = "") -> list[FileEntry]:
        answer = await self._call("GET", f"/v1/sandboxes/{name}/files/list", params={"path": path})
        return [_from(FileEntry, e) for e in answer["entries"]]

    async def fs_list(self, name: str, path: str, user: Optional[str] = None) -> list[FileEntry]:
        answer = await self._call("GET", f"/v1/sandboxes/{name}/fs/list", params=_fs(path, user))
        return [_from(FileEntry, e) for e in answer["entries"]]

    async def fs_read(self, name: str, path: str, user: Optional[str] = None) -> bytes:
        return await self._call("GET", f"/v1/sandboxes/{name}/fs/content",
                                params=_fs(path, user))

    async def check(self, url: str, sandbox: Optional[str] = None,
                    method: Optional[str] = None) -> Check:
        return _from(Check, await self._call("GET", "/v1/policy/check",
                                             params=_check_params(url, sandbox, method)))

    async def pending(self, sandbox: Optional[str] = None) -> list[Pending]:
        params = {} if sandbox is None else {"sandbox": sandbox}
        answer = await self._call("GET", "/v1/policy/pending", params=params)
        return [_from(Pending, r) for r in answer["requests"]]

    async def approve(self, request_id: int, lasting: str = "once", **shape) -> dict:
        return await self._call("POST", f"/v1/policy/pending/{request_id}/approve",
                                json=_approval(lasting, shape))

    async def deny(self, request_id: int, always: bool = False) -> dict:
        return await self._call("POST", f"/v1/policy/pending/{request_id}/deny",
                                json={"always": always})

    async def reset(self, name: str, force: bool = False) -> Sandbox:
        return _sandbox(await self._call("POST", f"/v1/sandboxes/{name}/reset",
                                         params={"force": str(force).lower()}))

    async def update_limits(self, name: str, cpus=None, memory=None, pids=None,
                            disk=None) -> Updated:
        return _from(Updated, await self._call("PATCH", f"/v1/sandboxes/{name}/limits",
                                               json=_limits(cpus, memory, pids, disk)))

    async def ports(self, name: str) -> list[Port]:
        return _ports(await self._call("GET", f"/v1/sandboxes/{name}/ports"))

    async def publish(self, name: str, spec: str) -> list[Port]:
        return _ports(await self._call("POST", f"/v1/sandboxes/{name}/ports",
                                       json={"publish": spec}))

    async def unpublish(self, name: str, host_port: int) -> list[Port]:
        return _ports(await self._call("DELETE", f"/v1/sandboxes/{name}/ports/{host_port}"))

    async def logs(self, name: str, tail_bytes: Optional[int] = None) -> bytes:
        params = {} if tail_bytes is None else {"tail_bytes": tail_bytes}
        r = await self._http.get(f"/v1/sandboxes/{name}/logs", params=params)
        if r.status_code != 200:
            raise _problem(r)
        return r.content

    async def events(self, sandbox: Optional[str] = None, after: Optional[int] = None,
                     limit: Optional[int] = None) -> list[Event]:
        answer = await self._call("GET", "/v1/events",
                                  params=_event_params(sandbox, after, limit))
        return [_from(Event, e) for e in answer["events"]]

    async def follow_events(self, sandbox: Optional[str] = None, after: Optional[int] = None,
                            limit: int = 0) -> AsyncIterator[Event]:
        params = _event_params(sandbox, after, limit)
        async with self._http.stream("GET", "/v1/events/stream", params=params,
                                     timeout=None) as r:
            if r.status_code != 200:
                await r.aread()
                raise _problem(r)
            sse = _Sse()
            async for line in r.aiter_lines():
                event = sse.line(line)
                if event is not None:
                    yield event

    async def changes(self, name: str) -> Changes:
        return _from(Changes, await self._call("GET", f"/v1/sandboxes/{name}/changes"))

    async def apply(self, name: str, paths: Sequence[str] = (), force: bool = False,
                    merge: bool = False) -> ReviewResult:
        body = {"paths": list(paths), "force": force, "merge": merge}
        return _from(ReviewResult, await self._call(
            "POST", f"/v1/sandboxes/{name}/changes/apply", json=body))

    async def discard(self, name: str, paths: Sequence[str] = ()) -> ReviewResult:
        return _from(ReviewResult, await self._call(
            "POST", f"/v1/sandboxes/{name}/changes/discard", json={"paths": list(paths)}))


class AsyncExecStream:
    """`ExecStream` for `AsyncClient`: `async with`, `async for`."""

    def __init__(self, client: AsyncClient, name: str, start: Optional[dict],
                 route: str = "exec/stream"):
        self._client, self._name, self._start, self._route = client, name, start, route
        self._ws = None
        self.exit_code: Optional[int] = None
        self.notes: list = []
        self.refused: list[str] = []

    async def __aenter__(self) -> "AsyncExecStream":
        from websockets.asyncio.client import connect, unix_connect
        uri = _ws_uri(self._client._base, self._name, self._route)
        if self._client._socket is not None:
            self._ws = await unix_connect(self._client._socket, uri)
        else:
            self._ws = await connect(uri, additional_headers=self._client._headers)
        if self._start is not None:
            await self._ws.send(json.dumps(self._start))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def write(self, data: Data) -> None:
        await self._ws.send(bytes([STDIN]) + (data.encode() if isinstance(data, str) else bytes(data)))

    async def close_stdin(self) -> None:
        await self._ws.send(json.dumps({"type": "eof"}))

    async def signal(self, signal: int) -> None:
        await self._ws.send(json.dumps({"type": "signal", "signal": signal}))

    async def resize(self, rows: int, cols: int) -> None:
        await self._ws.send(_resize(rows, cols))

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        from websockets.exceptions import ConnectionClosed
        while True:
            try:
                msg = await self._ws.recv()
            except ConnectionClosed:
                return
            if isinstance(msg, bytes):
                yield _CHANNELS.get(msg[0], str(msg[0])), msg[1:]
            else:
                _end(msg, self)

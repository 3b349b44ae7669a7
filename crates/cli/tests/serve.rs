//! `paddock serve`, the real binary, driven by curl: the unix socket (0600, its owner only, one
//! server at a time), TCP with the bearer token, TLS required off loopback, problem answers.
//! Network traffic stays on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::user::{Account, SUITE_USER};

/// How long a server may take to say where it listens.
const START: Duration = Duration::from_secs(30);

/// `paddock serve ARGS` with its own state directory `home`.
fn serve_cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("serve")
        .args(args)
        .env_clear()
        .env("PADDOCK_HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .stdin(Stdio::null());
    c
}

/// A running `paddock serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    /// The line it printed: where it listens.
    line: String,
}

impl Server {
    /// Starts `cmd` and waits for the line saying where it listens; `Err` with the output of a
    /// server that ended instead.
    fn start(mut cmd: Command) -> Result<Server, Output> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START).unwrap_or_default();
        if line.is_empty() {
            let _ = child.kill();
            return Err(child.wait_with_output().unwrap());
        }
        Ok(Server {
            child: Some(child),
            line: line.trim_end().to_owned(),
        })
    }

    /// The unix socket it printed.
    fn socket(&self) -> PathBuf {
        let path = self
            .line
            .strip_prefix("paddock: serving the API on unix socket ")
            .unwrap_or_else(|| panic!("no socket in {:?}", self.line));
        PathBuf::from(path)
    }

    /// The port and token file it printed for TCP.
    fn tcp(&self) -> (u16, PathBuf) {
        let rest = self
            .line
            .strip_prefix("paddock: serving the API on ")
            .unwrap_or_else(|| panic!("unexpected {:?}", self.line));
        let (url, rest) = rest.split_once(' ').unwrap();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        let token = rest
            .strip_prefix("(requests need the bearer token in ")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no token file in {:?}", self.line));
        (port, PathBuf::from(token))
    }

    /// SIGTERM, then its exit status and what it wrote to stderr.
    fn stop(mut self) -> (ExitStatus, String) {
        let child = self.child.take().unwrap();
        terminate(&child);
        let out = wait_for(child, Duration::from_secs(20));
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// Waits for `child` to end (killed after `limit`, failing the test).
fn wait_for(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `cmd` to its end within 30 s.
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(child, Duration::from_secs(30))
}

/// What curl got: the status (0 when nothing came), the headers, the body, curl's exit code.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: String,
    body: String,
    exit: Option<i32>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The problem's `code`, checking the media type and the status field.
    fn problem_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(p["status"], self.status, "{self:?}");
        p["code"].as_str().unwrap().to_owned()
    }
}

/// Runs a command as `owner` when given.
trait Uids {
    fn uids(&mut self, owner: Option<(u32, u32)>) -> &mut Self;
}

impl Uids for Command {
    fn uids(&mut self, owner: Option<(u32, u32)>) -> &mut Self {
        if let Some((uid, gid)) = owner {
            self.uid(uid).gid(gid);
        }
        self
    }
}

fn curl_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-i", "--max-time", "10"]).args(args);
    c
}

fn curl_as(mut cmd: Command) -> Got {
    let out = cmd.output().expect("curl must be installed for this suite");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Got {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
        exit: out.status.code(),
    }
}

fn curl(args: &[&str]) -> Got {
    curl_as(curl_cmd(args))
}

fn over_socket(socket: &Path, args: &[&str]) -> Got {
    let mut all = vec!["--unix-socket", socket.to_str().unwrap()];
    all.extend(args);
    curl(&all)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn unix_socket_is_private_answers_and_goes_away() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &[])).unwrap();
    let socket = server.socket();
    assert_eq!(socket, home.path().join("run/api.sock"));
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&socket), 0o600);

    let health = over_socket(&socket, &["http://x/v1/health"]);
    assert_eq!(health.status, 200, "{health:?}");
    let h: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));

    let missing = over_socket(&socket, &["http://x/v1/no-such-route"]);
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.problem_code(), "not_found");
    let method = over_socket(&socket, &["-X", "DELETE", "http://x/v1/health"]);
    assert_eq!(method.status, 405, "{method:?}");
    assert_eq!(method.problem_code(), "method_not_allowed");
    let doc = over_socket(&socket, &["http://x/v1/openapi.json"]);
    assert_eq!(doc.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // A second server on the same socket is refused, the first one keeps serving.
    let second = run(serve_cmd(home.path(), &[]));
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another server is serving"), "{err}");
    assert_eq!(over_socket(&socket, &["http://x/v1/health"]).status, 200);

    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
    assert!(!socket.exists(), "the socket is left after SIGTERM");
}

#[test]
fn a_stale_socket_is_replaced() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("sock")).unwrap();
    let socket = home.path().join("sock/api.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let server = Server::start(serve_cmd(
        home.path(),
        &["--socket", socket.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(server.socket(), socket);
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(over_socket(&socket, &["http://x/v1/health"]).status, 200);
    let (status, _) = server.stop();
    assert!(status.success());

    // Never anything but a socket.
    std::fs::write(&socket, "a file").unwrap();
    let out = run(serve_cmd(
        home.path(),
        &["--socket", socket.to_str().unwrap()],
    ));
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "a file");
}

/// Another user cannot reach a server's socket; and root, which passes any file's mode, is
/// turned away by the peer check from an ordinary user's server.
#[test]
fn other_users_are_refused() {
    require_root!();
    let user = Account::find(SUITE_USER).unwrap_or_else(|| Account::create(SUITE_USER));
    let as_user = |mut cmd: Command| {
        cmd.uid(user.uid).gid(user.gid);
        cmd
    };

    // Root's server, its socket in a directory everyone may enter: the socket's mode stops the
    // other user.
    let home = tempfile::tempdir().unwrap();
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = open.path().join("api.sock");
    let server = Server::start(serve_cmd(
        home.path(),
        &["--socket", socket.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(over_socket(&socket, &["http://x/v1/health"]).status, 200);
    let theirs = curl_as(as_user(curl_cmd(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://x/v1/health",
    ])));
    assert_eq!(theirs.status, 0, "{theirs:?}");
    assert_eq!(
        theirs.exit,
        Some(7),
        "curl should fail to connect: {theirs:?}"
    );
    drop(server);

    // The user's server: root connects (root passes the mode) and is closed on.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    let socket = dir.path().join("api.sock");
    let mut cmd = user.command(dir.path(), &["serve", "--socket", socket.to_str().unwrap()]);
    cmd.env("PADDOCK_HOME", dir.path().join("state"));
    let server = Server::start(cmd).unwrap_or_else(|out| {
        panic!(
            "the user's server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(server.socket(), socket);
    let owner = curl_as(as_user(curl_cmd(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://x/v1/health",
    ])));
    assert_eq!(owner.status, 200, "{owner:?}");
    let root = over_socket(&socket, &["http://x/v1/health"]);
    assert_eq!(root.status, 0, "root got an answer: {root:?}");
    assert_ne!(root.exit, Some(0), "{root:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
    assert!(!socket.exists());
}

#[test]
fn tcp_needs_the_token() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &["--listen", "127.0.0.1:0"])).unwrap();
    assert!(server.line.contains("http://127.0.0.1:"), "{}", server.line);
    let (port, token_file) = server.tcp();
    assert_eq!(token_file, home.path().join("api-token"));
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim_end();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));

    let url = format!("http://127.0.0.1:{port}/v1/health");
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    let right = format!("Authorization: Bearer {token}");
    for refused in [curl(&[&url]), curl(&["-H", &wrong, &url])] {
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(refused.problem_code(), "unauthorized");
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{refused:?}"
        );
    }
    // Unknown routes too: nothing is answered without the token, the MCP endpoint included.
    let probe = curl(&[&format!("http://127.0.0.1:{port}/v1/no-such-route")]);
    assert_eq!(probe.status, 401, "{probe:?}");
    let mcp = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "--data",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        &format!("http://127.0.0.1:{port}/v1/mcp"),
    ]);
    assert_eq!(mcp.status, 401, "{mcp:?}");
    let ok = curl(&["-H", &right, &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let missing = curl(&[
        "-H",
        &right,
        &format!("http://127.0.0.1:{port}/v1/no-such-route"),
    ]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.problem_code(), "not_found");
    let (status, _) = server.stop();
    assert!(status.success());

    // The next server keeps the token.
    let again = Server::start(serve_cmd(home.path(), &["--listen", "127.0.0.1:0"])).unwrap();
    let (port, _) = again.tcp();
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim_end(),
        token
    );
    let ok = curl(&["-H", &right, &format!("http://127.0.0.1:{port}/v1/health")]);
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn off_loopback_only_with_tls() {
    let home = tempfile::tempdir().unwrap();
    // Refused before anything is bound.
    let plain = run(serve_cmd(home.path(), &["--listen", "0.0.0.0:0"]));
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        err.contains("0.0.0.0:0 is not a loopback address") && err.contains("--tls-cert"),
        "{err}"
    );
    assert!(!home.path().join("api-token").exists());
    // TLS flags without --listen, or half of them.
    for args in [
        &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
        &["--listen", "127.0.0.1:0", "--tls-cert", "c.pem"][..],
    ] {
        let out = run(serve_cmd(home.path(), args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }

    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::test_certificates(certs.path(), "api", &["127.0.0.1"]);
    let server = Server::start(serve_cmd(
        home.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    ))
    .unwrap_or_else(|out| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(server.line.contains("https://0.0.0.0:"), "{}", server.line);
    let (port, token_file) = server.tcp();
    let token = std::fs::read_to_string(token_file).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim_end());
    let url = format!("https://127.0.0.1:{port}/v1/health");
    let ca = ca.to_str().unwrap();
    let ok = curl(&["--cacert", ca, "-H", &auth, &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let no_token = curl(&["--cacert", ca, &url]);
    assert_eq!(no_token.status, 401, "{no_token:?}");
    // Without the CA curl does not trust it; plain HTTP gets no answer.
    let untrusted = curl(&["-H", &auth, &url]);
    assert_eq!(untrusted.status, 0, "{untrusted:?}");
    let plain = curl(&["-H", &auth, &format!("http://127.0.0.1:{port}/v1/health")]);
    assert_eq!(plain.status, 0, "{plain:?}");
    let (status, _) = server.stop();
    assert!(status.success());
}

// A sandbox driven through the API alone, on every backend, as an ordinary user (the main
// mode): create and start, list, exec with input, exit status, output caps, base64, timeout,
// commands side by side, refusals that lose nothing, stop, start, delete.
mod user {
    crate::on_every_backend_in_mode!(true, api_drives_a_sandbox_from_creation_to_removal);
}

/// The API on a unix socket, and the user whose server it is (the peer check takes no other).
struct Api {
    socket: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Api {
    /// Serving as this test's sandboxes' user does (an ordinary user or root).
    fn of(socket: PathBuf) -> Api {
        let owner = common::suite_as_user().map(|u| (u.uid, u.gid));
        Api { socket, owner }
    }

    /// A request with an optional JSON body.
    fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Got {
        let text = body.map(serde_json::Value::to_string);
        self.send(
            method,
            path,
            text.as_deref().map(|t| ("application/json", t)),
        )
    }

    /// A request with an optional body of a media type.
    fn send(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> Got {
        let url = format!("http://x{path}");
        let mut cmd = curl_cmd(&["--max-time", "120", "--unix-socket"]);
        cmd.arg(&self.socket).args(["-X", method, url.as_str()]);
        if let Some((media, data)) = body {
            let header = format!("content-type: {media}");
            cmd.args(["-H", header.as_str(), "--data-binary", data]);
        }
        cmd.uids(self.owner);
        curl_as(cmd)
    }
}

impl Api {
    /// A stream (server-sent events) followed until the returned curl is ended.
    fn follow(&self, path: &str) -> Child {
        let mut cmd = Command::new("curl");
        cmd.args(["-sSN", "--unix-socket"])
            .arg(&self.socket)
            .arg(format!("http://x{path}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.uids(self.owner)
            .spawn()
            .expect("curl must be installed for this suite")
    }
}

/// `paddock serve` from `base` (this test's `paddock` for its mode) on a unix socket in a
/// directory of its own (the sandboxes' owner's), and the API on it as that owner.
fn serve_on_socket(mut base: Command) -> (Server, Api, tempfile::TempDir) {
    let dir = common::workspace();
    let socket = dir.path().join("api.sock");
    base.args(["serve", "--socket"]).arg(&socket);
    let server = Server::start(base).unwrap_or_else(|out| {
        panic!(
            "the server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (server, Api::of(socket), dir)
}

/// A client script of tests/ run by `python`.
fn client_script(python: impl AsRef<std::ffi::OsStr>, script: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(script),
    );
    cmd
}

/// Runs a client script (as `owner` when given) within `limit`, checking it ended well and said
/// `done` last.
fn run_client(mut cmd: Command, owner: Option<(u32, u32)>, limit: Duration) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    let out = wait_for(cmd.spawn().unwrap(), limit);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim_end().ends_with("done"),
        "the client failed:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(got: &Got) -> serde_json::Value {
    serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("{e}: {got:?}"))
}

fn api_drives_a_sandbox_from_creation_to_removal(backend: &str) {
    use serde_json::json;
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock_for(backend));
    let name = common::unique("api");
    let _cleanup = common::Cleanup(name.clone());
    let workspace = ws.path().to_str().unwrap();

    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"workspace": workspace, "backend": backend, "name": name})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let made = json(&made);
    assert_eq!(made["sandbox"]["name"], name.as_str());
    assert_eq!(made["sandbox"]["backend"], backend);
    assert_eq!(made["sandbox"]["state"], "running", "{made}");
    assert_eq!(made["sandbox"]["workspace"], workspace);

    let listed = json(&api.call("GET", "/v1/sandboxes", None));
    assert!(
        listed["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name.as_str()),
        "{listed}"
    );
    let one = api.call("GET", &format!("/v1/sandboxes/{name}"), None);
    assert_eq!(one.status, 200, "{one:?}");

    let exec_path = format!("/v1/sandboxes/{name}/exec");
    let exec = |body: serde_json::Value| {
        let got = api.call("POST", &exec_path, Some(&body));
        assert_eq!(got.status, 200, "{body}: {got:?}");
        json(&got)
    };
    // Input in, both streams out, the workspace written at its own path.
    let r = exec(json!({
        "command": ["sh", "-c", "cat; echo to-stderr >&2; echo $((6*7)) > from-api; id -un"],
        "stdin": "from-stdin\n",
    }));
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "from-stdin\nagent\n", "{r}");
    assert_eq!(r["stderr"], "to-stderr\n", "{r}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("from-api")).unwrap(),
        "42\n"
    );
    let r = exec(json!({"command": ["sh", "-c", "exit 3"]}));
    assert_eq!(r["exit_code"], 3, "{r}");
    // Output past the cap is cut and said to be; bytes come back exact in base64.
    let r = exec(json!({
        "command": ["head", "-c", "100000", "/dev/zero"],
        "max_output_bytes": 10,
    }));
    assert_eq!(r["stdout"].as_str().unwrap().len(), 10, "{r}");
    assert_eq!(r["stdout_truncated"], true);
    let r = exec(json!({
        "command": ["sh", "-c", "printf '\\377\\000'; cat"],
        "encoding": "base64",
        "stdin_base64": "AQI=",
    }));
    assert_eq!(r["stdout"], "/wABAg==", "{r}");
    // A command past its timeout is stopped, and the answer says so.
    let r = exec(json!({"command": ["sleep", "600"], "timeout_ms": 1000}));
    assert_eq!(r["timed_out"], true, "{r}");
    assert!(r["duration_ms"].as_u64().unwrap() < 60_000, "{r}");
    // Commands side by side, each with its own streams.
    let answers: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let exec = &exec;
                s.spawn(move || {
                    exec(json!({
                        "command": ["sh", "-c", format!("sleep 1; echo run-{i}")],
                    }))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(r["stdout"], format!("run-{i}\n"), "{r}");
    }
    // A program that is not there: 127, and the sandbox's word for it.
    let r = exec(json!({"command": ["no-such-program-xyz"]}));
    assert_eq!(r["exit_code"], 127, "{r}");
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .contains("no-such-program-xyz: command not found"),
        "{r}"
    );
    // What the command changed that the host would run comes back as a note.
    let r = exec(json!({"command": ["sh", "-c",
        "mkdir -p .git/hooks && printf '#!/bin/sh\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit"]}));
    assert!(
        r["notes"].to_string().contains(".git/hooks/pre-commit"),
        "{r}"
    );
    if backend == "ns" {
        // Through the exec socket: the command is a child of the sandbox's pid 1 (joining
        // through `paddock-jail enter` it would be the child of a helper of its own).
        let r = exec(json!({"command": ["sh", "-c", "echo $PPID"]}));
        assert_eq!(r["stdout"], "1\n", "{r}");
        // A client that leaves takes its command with it.
        let left = curl_cmd(&["--max-time", "2", "--unix-socket"])
            .arg(&api.socket)
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(json!({"command": ["sleep", "611"]}).to_string())
            .arg(format!("http://x{exec_path}"))
            .uids(api.owner)
            .output()
            .unwrap();
        assert_eq!(left.status.code(), Some(28), "curl timed out: {left:?}");
        let mut gone = false;
        for _ in 0..100 {
            let r = exec(json!({"command": ["sh", "-c",
                "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '^sleep 611'"]}));
            if r["stdout"] == "0\n" {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(gone, "the command outlived its client");
    }

    // Refusals, each with its code, and nothing lost.
    let again = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"workspace": workspace, "backend": backend, "name": name})),
    );
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.problem_code(), "conflict");
    let busy = api.call("DELETE", &format!("/v1/sandboxes/{name}"), None);
    assert_eq!(busy.status, 409, "{busy:?}");
    for bad in [
        json!({"command": []}),
        json!({"command": ["true"], "workdir": "relative"}),
        json!({"command": ["true"], "max_output_bytes": 1_000_000_000}),
        json!({"command": ["true"], "stdin": "a", "stdin_base64": "YQ=="}),
        json!({"command": ["true"], "stdin_base64": "not base64!"}),
        json!({"command": ["true"], "timeout_ms": 1.5}),
    ] {
        let got = api.call("POST", &exec_path, Some(&bad));
        assert_eq!(got.status, 422, "{bad}: {got:?}");
        assert_eq!(got.problem_code(), "invalid", "{bad}");
    }

    // Limits: applied at once, recorded; bad ones refused with nothing changed.
    let limits_path = format!("/v1/sandboxes/{name}/limits");
    let up = api.call("PATCH", &limits_path, Some(&json!({"pids": "300"})));
    assert_eq!(up.status, 200, "{up:?}");
    let up = json(&up);
    assert_eq!(
        (&up["limits"]["pids"], &up["live"]),
        (&json!(300), &json!(true)),
        "{up}"
    );
    for bad in [json!({}), json!({"memory": "0"}), json!({"cpu": "1"})] {
        let got = api.call("PATCH", &limits_path, Some(&bad));
        assert_eq!(got.status, 422, "{bad}: {got:?}");
    }
    let busy = api.call("PATCH", &limits_path, Some(&json!({"disk": "64g"})));
    assert_eq!(busy.status, 409, "{busy:?}");
    let one = json(&api.call("GET", &format!("/v1/sandboxes/{name}"), None));
    assert_eq!(one["limits"]["pids"], 300, "{one}");

    // Ports: published now (the host port answers), listed, refused twice, unpublished.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let ports_path = format!("/v1/sandboxes/{name}/ports");
    let spec = json!({"publish": format!("{free}:8080")});
    let got = api.call("POST", &ports_path, Some(&spec));
    assert_eq!(got.status, 200, "{got:?}");
    let want =
        json!({"address": "127.0.0.1", "host_port": free, "sandbox_port": 8080, "auto": false});
    assert_eq!(json(&got)["ports"], json!([want]), "{got:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", free)).is_ok());
    assert_eq!(
        json(&api.call("GET", &ports_path, None))["ports"],
        json!([want])
    );
    let twice = api.call("POST", &ports_path, Some(&spec));
    assert_eq!(twice.status, 409, "{twice:?}");
    let bad = api.call("POST", &ports_path, Some(&json!({"publish": "no-port"})));
    assert_eq!(bad.status, 422, "{bad:?}");
    let port_path = format!("{ports_path}/{free}");
    let gone = api.call("DELETE", &port_path, None);
    assert_eq!(
        (gone.status, json(&gone)["ports"].clone()),
        (200, json!([])),
        "{gone:?}"
    );
    assert_eq!(api.call("DELETE", &port_path, None).status, 404);
    let closed = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", free)).is_err()
    });
    assert!(closed, "port {free} still answers after it was unpublished");

    // Reset: refused while it runs; on a stopped sandbox it empties the layer (a file written
    // outside the workspace is gone) and leaves the workspace.
    let r = exec(json!({"command": ["sh", "-c", "echo x > /opt/api-marker"], "user": "root"}));
    assert_eq!(r["exit_code"], 0, "{r}");
    let reset_path = format!("/v1/sandboxes/{name}/reset");
    let running = api.call("POST", &reset_path, None);
    assert_eq!(running.status, 409, "{running:?}");

    // The events from here are followed as they come.
    let seen = json(&api.call("GET", &format!("/v1/events?sandbox={name}&limit=1"), None));
    let after = seen["events"][0]["id"].as_i64().unwrap();
    let follower = api.follow(&format!("/v1/events/stream?sandbox={name}&after={after}"));

    let stopped = api.call("POST", &format!("/v1/sandboxes/{name}/stop"), None);
    assert_eq!(stopped.status, 200, "{stopped:?}");
    assert_eq!(json(&stopped)["sandbox"]["state"], "stopped");
    let idle = api.call("POST", &exec_path, Some(&json!({"command": ["true"]})));
    assert_eq!(idle.status, 409, "{idle:?}");
    assert_eq!(idle.problem_code(), "conflict");
    let reset = api.call("POST", &reset_path, None);
    assert_eq!(reset.status, 200, "{reset:?}");
    let started = api.call("POST", &format!("/v1/sandboxes/{name}/start"), None);
    assert_eq!(started.status, 200, "{started:?}");
    assert_eq!(json(&started)["sandbox"]["state"], "running");
    let r = exec(json!({"command": ["sh", "-c", "cat from-api; test -e /opt/api-marker"]}));
    assert_eq!(
        (&r["stdout"], &r["exit_code"]),
        (&json!("42\n"), &json!(1)),
        "{r}"
    );

    // The sandbox's own file system, as it sees it (image, layer, workspace).
    let fs = |method: &str, query: &str, body: Option<&str>| {
        let path = format!("/v1/sandboxes/{name}/fs/{query}");
        api.send(method, &path, body.map(|b| ("application/octet-stream", b)))
    };
    let wrote = fs(
        "PUT",
        "content?path=/opt/fs-api/new.txt&mode=600",
        Some("hello"),
    );
    assert_eq!(wrote.status, 200, "{wrote:?}");
    let entry = json(&wrote);
    assert_eq!(
        (
            &entry["path"],
            &entry["kind"],
            &entry["size"],
            &entry["mode"]
        ),
        (
            &json!("/opt/fs-api/new.txt"),
            &json!("file"),
            &json!(5),
            &json!(0o600)
        ),
        "{entry}"
    );
    assert_eq!(
        fs("GET", "content?path=/opt/fs-api/new.txt", None).body,
        "hello"
    );
    let r =
        exec(json!({"command": ["ln", "-s", "/etc/hostname", "/opt/fs-api/link"], "user": "root"}));
    assert_eq!(r["exit_code"], 0, "{r}");
    let listed = json(&fs("GET", "list?path=/opt/fs-api", None));
    assert_eq!(
        listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["path"].as_str().unwrap(), e["kind"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("/opt/fs-api/link", "symlink"),
            ("/opt/fs-api/new.txt", "file")
        ],
        "{listed}"
    );
    let link = json(&fs("GET", "stat?path=/opt/fs-api/link", None));
    assert_eq!(link["target"], "/etc/hostname", "{link}");
    // Inside, /etc/passwd is the image's (its agent user), and the workspace is at its path.
    let passwd = fs("GET", "content?path=/etc/passwd", None);
    assert!(passwd.body.contains("\nagent:"), "{passwd:?}");
    let in_ws = fs("GET", &format!("content?path={workspace}/from-api"), None);
    assert_eq!(in_ws.body, "42\n", "{in_ws:?}");
    for (query, status) in [
        ("content?path=/no/such/file", 404),
        ("content?path=/opt", 422),
        ("content?path=/etc/passwd&max_bytes=2", 413),
        ("content?path=relative", 422),
        ("list?path=/opt/fs-api/new.txt", 422),
    ] {
        let got = fs("GET", query, None);
        assert_eq!(got.status, status, "{query}: {got:?}");
    }

    // The log has each change, and the follower saw the stop and the start as they came.
    let log = json(&api.call("GET", &format!("/v1/events?sandbox={name}"), None));
    let kinds: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created", "started", "updated", "updated", "updated", "stopped", "started"
        ],
        "{log}"
    );
    std::thread::sleep(Duration::from_millis(600));
    terminate(&follower);
    let streamed =
        String::from_utf8_lossy(&follower.wait_with_output().unwrap().stdout).into_owned();
    let kinds: Vec<&str> = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds, ["stopped", "started"], "{streamed}");

    let gone = api.call("DELETE", &format!("/v1/sandboxes/{name}?force=true"), None);
    assert_eq!(gone.status, 204, "{gone:?}");
    let missing = api.call("GET", &format!("/v1/sandboxes/{name}"), None);
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.problem_code(), "not_found");
    // The workspace is the user's: removal leaves it.
    assert_eq!(
        std::fs::read_to_string(ws.path().join("from-api")).unwrap(),
        "42\n"
    );
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

/// Requests the API refuses before anything is made: each answered with its problem code, and
/// the state directory holds no sandbox afterwards.
#[test]
fn bad_sandbox_requests_are_refused_with_their_codes() {
    use serde_json::json;
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &[])).unwrap();
    let api = Api::of(server.socket());
    let ws = tempfile::tempdir().unwrap();
    let cases = [
        ("POST", "/v1/sandboxes", json!({}), 422, "invalid"),
        (
            "POST",
            "/v1/sandboxes",
            json!({"workspace": "relative/dir"}),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/sandboxes",
            json!({"workspace": ws.path(), "no_such_setting": 1}),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/sandboxes",
            json!({"workspace": ws.path(), "cpus": "lots"}),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/sandboxes",
            json!({"workspace": "/no/such/dir", "backend": "ns"}),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/sandboxes",
            json!({"workspace": "/etc"}),
            422,
            "invalid",
        ),
        (
            "POST",
            "/v1/sandboxes/nobody/exec",
            json!({"command": ["true"]}),
            404,
            "not_found",
        ),
        // Which sandbox first: an unknown one is 404 whatever else is wrong.
        (
            "POST",
            "/v1/sandboxes/nobody/exec",
            json!({"command": ["true"], "max_output_bytes": 1_000_000_000}),
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/sandboxes/nobody/exec",
            json!({"command": [], "workdir": "relative"}),
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/sandboxes/nobody/start",
            json!(null),
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/sandboxes/nobody/stop",
            json!(null),
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/v1/sandboxes/nobody",
            json!(null),
            404,
            "not_found",
        ),
        (
            "GET",
            "/v1/sandboxes/Not%20A%20Name",
            json!(null),
            422,
            "invalid",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let body = (!body.is_null()).then_some(body);
        let got = api.call(method, path, body.as_ref());
        assert_eq!(got.status, status, "{method} {path} {body:?}: {got:?}");
        assert_eq!(got.problem_code(), code, "{method} {path}");
    }
    let listed = api.call("GET", "/v1/sandboxes", None);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(json(&listed)["sandboxes"], json!([]));
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// The MCP server driven by the official MCP Python SDK over stdio, as an ordinary user: its
// tools make a sandbox, run a command in it with input, show what it cannot reach, refuse what
// they should, stop it and delete it.
mod mcp {
    #[test]
    fn the_python_sdk_runs_a_command_in_a_real_sandbox() {
        crate::require_root!();
        crate::common::in_mode(true, || super::mcp_client_session("ns"));
    }

    #[test]
    fn the_python_sdk_reaches_the_same_tools_over_streamable_http() {
        crate::require_root!();
        crate::common::in_mode(true, super::mcp_over_http);
    }
}

/// `paddock serve`'s /v1/mcp on its unix socket, driven by the MCP Python SDK's streamable
/// HTTP client (tests/mcp_http_client.py).
fn mcp_over_http() {
    let Some(python) = py_tools("the MCP SDK") else {
        return;
    };
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, sock_dir) = serve_on_socket(common::paddock());
    let socket = api.socket.clone();
    let name = common::unique("mcphttp");
    let _cleanup = common::Cleanup(name.clone());
    let mut py = client_script(python, "mcp_http_client.py");
    py.arg(&socket)
        .arg(ws.path())
        .arg(&name)
        .current_dir(sock_dir.path());
    run_client(py, api.owner, Duration::from_secs(300));
    let gone = api.call("GET", &format!("/v1/sandboxes/{name}"), None);
    assert_eq!(gone.status, 404, "the tool deleted it: {gone:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

/// The system's Python (one under root's home, as pyenv makes, is out of the suite user's reach).
fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A Python with the official MCP SDK (PyPI `mcp`), schemathesis, websockets and httpx, from this host's own
/// package index, in a venv made once per target directory; None where the registries cannot be
/// reached (unless CI requires them), after saying the test skips for want of `needs`.
fn py_tools(needs: &str) -> Option<PathBuf> {
    let python = py_venv();
    if python.is_none() {
        eprintln!(
            "skipped: needs {needs}, installed from the package registries, which do not answer"
        );
    }
    python
}

fn py_venv() -> Option<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py-tools");
    let python = venv.join("bin/python");
    let has_sdk = |p: &Path| {
        Command::new(p)
            .args([
                "-c",
                "import mcp.client.stdio, schemathesis, websockets, httpx",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_sdk(&python) {
        return Some(python);
    }
    if !common::registries_ready() {
        return None;
    }
    // The system's Python (a user's own, under root's home, is out of the suite user's reach).
    let made = Command::new(system_python())
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .expect("python3 must be installed for this suite");
    assert!(
        made.status.success(),
        "cannot make a venv (Debian: apt-get install python3-venv): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "-q",
            "mcp",
            "schemathesis",
            "websockets",
            "httpx",
        ])
        .output()
        .unwrap();
    assert!(
        pip.status.success(),
        "cannot install the Python test tools from the package index: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    assert!(
        has_sdk(&python),
        "the venv lacks a Python test tool after pip"
    );
    Some(python)
}

fn mcp_client_session(backend: &str) {
    let Some(python) = py_tools("the MCP SDK") else {
        return;
    };
    common::ensure_image();
    let ws = common::workspace();
    let other = common::workspace();
    let outside = other.path().join("secret");
    std::fs::write(&outside, "host-only\n").unwrap();
    let owner = common::suite_as_user().map(|u| (u.uid, u.gid));
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&outside, Some(uid), Some(gid)).unwrap();
    }
    let name = common::unique("mcp");
    let _cleanup = common::Cleanup(name.clone());
    let _cleanup_held = common::Cleanup(format!("{name}-r"));
    // The client with paddock's own environment for this mode; it starts `paddock mcp`.
    let base = common::paddock_for(backend);
    let mut cmd = client_script(python, "mcp_client.py");
    cmd.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.arg(common::bin())
        .arg(ws.path())
        .arg(backend)
        .arg(&name)
        .arg(&outside)
        .current_dir(ws.path());
    run_client(cmd, owner, Duration::from_secs(600));
}

// A review-mode sandbox's changes through the API, as an ordinary user on ns: listed with
// their diff, applied by path (a conflict refused and kept), discarded once it stops.
mod review {
    #[test]
    fn changes_are_listed_applied_and_discarded_over_the_api() {
        crate::require_root!();
        crate::common::in_mode(true, super::review_over_the_api);
    }
}

fn review_over_the_api() {
    use serde_json::json;
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock());
    let name = common::unique("apirev");
    let _cleanup = common::Cleanup(name.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"workspace": ws.path(), "name": name, "backend": "ns", "review": true})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let ran = api.call(
        "POST",
        &format!("/v1/sandboxes/{name}/exec"),
        Some(&json!({"command": ["sh", "-c", "for f in a b c; do echo agent-$f > $f.txt; done"]})),
    );
    assert_eq!(json(&ran)["exit_code"], 0, "{ran:?}");
    assert!(
        !ws.path().join("a.txt").exists(),
        "a change reached the workspace unreviewed"
    );

    let changes_path = format!("/v1/sandboxes/{name}/changes");
    // The changed paths an answer lists.
    let paths = |v: &serde_json::Value| -> Vec<String> {
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = json(&api.call("GET", &changes_path, None));
    assert_eq!(paths(&listed), ["a.txt", "b.txt", "c.txt"], "{listed}");
    assert!(
        listed["patch"].as_str().unwrap().contains("+agent-b"),
        "{listed}"
    );

    let apply_path = format!("{changes_path}/apply");
    let applied = api.call("POST", &apply_path, Some(&json!({"paths": ["a.txt"]})));
    assert_eq!(applied.status, 200, "{applied:?}");
    assert_eq!(json(&applied)["complete"], true, "{applied:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("a.txt")).unwrap(),
        "agent-a\n"
    );
    // The host made b.txt meanwhile: a conflict, refused and kept for later.
    std::fs::write(ws.path().join("b.txt"), "host-b\n").unwrap();
    if let Some(u) = common::suite_as_user() {
        std::os::unix::fs::chown(ws.path().join("b.txt"), Some(u.uid), Some(u.gid)).unwrap();
    }
    let refused = api.call("POST", &apply_path, Some(&json!({"paths": ["b.txt"]})));
    assert_eq!(refused.status, 200, "{refused:?}");
    let refused = json(&refused);
    assert_eq!(refused["complete"], false, "{refused}");
    assert!(refused["notes"].to_string().contains("b.txt"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("b.txt")).unwrap(),
        "host-b\n"
    );
    for bad in [
        json!({"paths": ["../outside"]}),
        json!({"paths": ["/etc/passwd"]}),
        json!({"force": true, "merge": true}),
    ] {
        let got = api.call("POST", &apply_path, Some(&bad));
        assert_eq!(got.status, 422, "{bad}: {got:?}");
    }
    let discard_path = format!("{changes_path}/discard");
    let running = api.call("POST", &discard_path, Some(&json!({"paths": ["c.txt"]})));
    assert_eq!(running.status, 409, "{running:?}");
    let stopped = api.call("POST", &format!("/v1/sandboxes/{name}/stop"), None);
    assert_eq!(stopped.status, 200, "{stopped:?}");
    let dropped = api.call("POST", &discard_path, Some(&json!({"paths": ["c.txt"]})));
    assert_eq!(json(&dropped)["complete"], true, "{dropped:?}");
    let left = json(&api.call("GET", &changes_path, None));
    assert_eq!(paths(&left), ["b.txt"], "{left}");
    assert!(left["changes"][0]["conflict"].is_string(), "{left}");
    assert!(!ws.path().join("c.txt").exists());
    let missing = api.call("GET", "/v1/sandboxes/no-such-box/changes", None);
    assert_eq!(missing.status, 404, "{missing:?}");
    let gone = api.call("DELETE", &format!("/v1/sandboxes/{name}?force=true"), None);
    assert_eq!(gone.status, 204, "{gone:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// Attaching to a background sandbox's command with a terminal through the API, as an ordinary
// user on ns: tests/ws_attach.py types into it, resizes it, detaches and attaches again.
mod attach {
    #[test]
    fn a_background_command_is_attached_to_detached_from_and_found_again() {
        crate::require_root!();
        crate::common::in_mode(true, super::attach_over_the_api);
    }
}

fn attach_over_the_api() {
    use serde_json::json;
    let Some(python) = py_tools("websockets") else {
        return;
    };
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock());
    let name = common::unique("attach");
    let _cleanup = common::Cleanup(name.clone());
    let script = "while read -r l; do case $l in size) stty size;; quit) exit 0;; \
                  *) echo got $l;; esac; done";
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({
            "workspace": ws.path(), "name": name, "backend": "ns", "tty": true,
            "command": ["bash", "-c", script],
        })),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let mut py = client_script(python, "ws_attach.py");
    py.arg(&api.socket)
        .arg(&name)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_client(py, api.owner, Duration::from_secs(120));
    // Its command ended ("quit"): the sandbox stops with it.
    let stopped = (0..100).any(|_| {
        let state = json(&api.call("GET", &format!("/v1/sandboxes/{name}"), None));
        state["state"] == "stopped" || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(stopped, "{name} still runs after its command ended");
    // Refused before any upgrade: a sandbox that does not run, and one without a terminal.
    let stopped = api.call("GET", &format!("/v1/sandboxes/{name}/attach"), None);
    assert_eq!(stopped.status, 409, "{stopped:?}");
    let plain = common::unique("attach-plain");
    let _cleanup_plain = common::Cleanup(plain.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"workspace": ws.path(), "name": plain, "backend": "ns"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let no_tty = api.call("GET", &format!("/v1/sandboxes/{plain}/attach"), None);
    assert_eq!(no_tty.status, 409, "{no_tty:?}");
    assert!(no_tty.body.contains("no terminal"), "{no_tty:?}");
    let bad = api.call("GET", &format!("/v1/sandboxes/{plain}/attach?rows=0"), None);
    assert!(bad.status == 409 || bad.status == 422, "{bad:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// A background sandbox's output through the API, as an ordinary user on ns: followed until
// its command ends, then its tail.
mod logs {
    #[test]
    fn a_background_sandboxs_output_is_followed_until_it_stops() {
        crate::require_root!();
        crate::common::in_mode(true, super::logs_over_the_api);
    }
}

fn logs_over_the_api() {
    use serde_json::json;
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock());
    let name = common::unique("apilog");
    let _cleanup = common::Cleanup(name.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({
            "workspace": ws.path(), "name": name, "backend": "ns",
            "command": ["sh", "-c", "echo first; sleep 2; echo second"],
        })),
    );
    assert_eq!(made.status, 201, "{made:?}");
    // Followed: the answer goes on while it runs, and ends by itself when it stops.
    let followed = api.call(
        "GET",
        &format!("/v1/sandboxes/{name}/logs?follow=true"),
        None,
    );
    assert_eq!(followed.status, 200, "{followed:?}");
    assert_eq!(followed.exit, Some(0), "{followed:?}");
    // (The supervisor's first line names the command: whole lines only.)
    let first = followed.body.find("\nfirst\n");
    let second = followed.body.find("\nsecond\n");
    assert!(first.is_some() && first < second, "{followed:?}");
    assert!(
        followed
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"),
        "{followed:?}"
    );
    let state = json(&api.call("GET", &format!("/v1/sandboxes/{name}"), None));
    assert_eq!(state["state"], "stopped", "{state}");
    let tail = api.call(
        "GET",
        &format!("/v1/sandboxes/{name}/logs?tail_bytes=16"),
        None,
    );
    assert_eq!(tail.body, "(exit status 0)\n", "{tail:?}");
    let missing = api.call("GET", "/v1/sandboxes/no-such-box/logs", None);
    assert_eq!(missing.status, 404, "{missing:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// A request an ask rule holds, answered over the API: the waiting list followed as server-sent
// events, an approval that makes a rule, the request let through; as an ordinary user.
mod asks {
    #[test]
    fn a_held_request_is_followed_and_approved_over_the_api() {
        crate::require_root!();
        crate::common::in_mode(true, super::asks_over_the_api);
    }
}

fn asks_over_the_api() {
    use serde_json::json;
    common::ensure_image();
    let ws = common::workspace();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello from upstream\n").unwrap();
    let origin = common::static_server(www.path(), None);
    let mut base = common::paddock();
    base.env("PADDOCK_TEST_RESOLVE", "up.test=127.0.0.1");
    let (server, api, _sock_dir) = serve_on_socket(base);
    let name = common::unique("apiask");
    let _cleanup = common::Cleanup(name.clone());
    let script = format!(
        "curl -sS http://up.test:{}/hello.txt > got.txt 2>&1; sleep 300",
        origin.port
    );
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&json!({
            "workspace": ws.path(), "name": name, "backend": "ns",
            "allow": ["127.0.0.1"], "ask_unlisted": true, "ask_timeout": 120,
            "command": ["sh", "-c", script],
        })),
    );
    assert_eq!(made.status, 201, "{made:?}");
    // The waiting list, followed: the request comes as `asked`...
    let mut follower = api.follow(&format!("/v1/policy/pending/stream?sandbox={name}"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_event = |kind: &str| -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut event = String::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{kind}` event came"));
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ")
                && event == kind
            {
                return serde_json::from_str(data).unwrap();
            }
        }
    };
    let asked = next_event("asked");
    assert_eq!(
        (
            &asked["sandbox"],
            &asked["host"],
            &asked["method"],
            &asked["path"]
        ),
        (
            &json!(name),
            &json!("up.test"),
            &json!("GET"),
            &json!("/hello.txt")
        ),
        "{asked}"
    );
    let id = asked["id"].as_i64().unwrap();
    let listed = json(&api.call("GET", "/v1/policy/pending", None));
    assert!(
        listed["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id),
        "{listed}"
    );
    // ...approved always for the whole host, it goes (`gone`), and the request goes through.
    let approved = api.call(
        "POST",
        &format!("/v1/policy/pending/{id}/approve"),
        Some(&json!({"lasting": "always", "host_only": true})),
    );
    assert_eq!(approved.status, 200, "{approved:?}");
    let approved = json(&approved);
    assert_eq!(approved["allowed"], true);
    assert_eq!(
        (
            &approved["rule"]["action"],
            &approved["rule"]["host"],
            &approved["rule"]["path"]
        ),
        (&json!("allow"), &json!("up.test"), &json!(null)),
        "{approved}"
    );
    assert_eq!(next_event("gone")["id"], id);
    let got = ws.path().join("got.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&got).unwrap_or_default() != "hello from upstream\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            std::fs::read_to_string(&got)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Answered once: a second answer finds nothing waiting.
    let again = api.call(
        "POST",
        &format!("/v1/policy/pending/{id}/deny"),
        Some(&json!({"always": true})),
    );
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(again.problem_code(), "not_found");
    let _ = follower.kill();
    let _ = follower.wait();
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// A sandbox's workspace files through the API, as an ordinary user: write, read, stat, list,
// delete; symlinks the sandbox planted (to a host file and a host directory outside the
// workspace) are listed as symlinks and never followed; paths out of the workspace refused.
mod files {
    #[test]
    fn workspace_files_round_trip_and_never_follow_a_symlink() {
        crate::require_root!();
        crate::common::in_mode(true, super::files_round_trip);
    }
}

fn files_round_trip() {
    common::ensure_image();
    let ws = common::workspace();
    let other = common::workspace();
    std::fs::write(other.path().join("secret"), "host-only\n").unwrap();
    std::os::unix::fs::symlink(other.path().join("secret"), ws.path().join("link")).unwrap();
    std::os::unix::fs::symlink(other.path(), ws.path().join("out")).unwrap();
    let (server, api, sock_dir) = serve_on_socket(common::paddock());
    let socket = api.socket.clone();
    let name = common::unique("files");
    let _cleanup = common::Cleanup(name.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes?start=false",
        Some(&serde_json::json!({"workspace": ws.path(), "name": name})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(json(&made)["sandbox"]["state"], "created");

    // Raw bytes in and out (curl --data-binary @file, so any byte goes).
    let payload = sock_dir.path().join("payload");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&payload, &bytes).unwrap();
    if let Some((uid, gid)) = api.owner {
        std::os::unix::fs::chown(&payload, Some(uid), Some(gid)).unwrap();
    }
    let base = format!("/v1/sandboxes/{name}/files");
    let put = |path: &str, extra: &str| {
        let url = format!("http://x{base}/content?path={path}{extra}");
        let mut cmd = curl_cmd(&["--unix-socket", socket.to_str().unwrap(), "-X", "PUT"]);
        cmd.args([
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", payload.display()))
        .arg(url);
        if let Some((uid, gid)) = api.owner {
            cmd.uid(uid).gid(gid);
        }
        curl_as(cmd)
    };
    let wrote = put("deep/dir/blob.bin", "&mode=640");
    assert_eq!(wrote.status, 200, "{wrote:?}");
    let entry = json(&wrote);
    assert_eq!(entry["kind"], "file");
    assert_eq!(entry["size"], 70_000);
    assert_eq!(entry["mode"], 0o640);
    let on_host = ws.path().join("deep/dir/blob.bin");
    assert_eq!(std::fs::read(&on_host).unwrap(), bytes);
    // Made as the sandbox's owner, who owns the workspace.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&on_host).unwrap().uid(),
        std::fs::metadata(ws.path()).unwrap().uid()
    );
    let fetched = sock_dir.path().join("fetched");
    let mut read_cmd = Command::new("curl");
    read_cmd
        .args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(&socket)
        .arg("-o")
        .arg(&fetched)
        .arg(format!("http://x{base}/content?path=deep/dir/blob.bin"));
    if let Some((uid, gid)) = api.owner {
        std::os::unix::fs::chown(sock_dir.path(), Some(uid), Some(gid)).unwrap();
        read_cmd.uid(uid).gid(gid);
    }
    let got = read_cmd.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "200", "{got:?}");
    assert_eq!(std::fs::read(&fetched).unwrap(), bytes);
    let small = api.call(
        "GET",
        &format!("{base}/content?path=deep/dir/blob.bin&max_bytes=100"),
        None,
    );
    assert_eq!(small.status, 422, "{small:?}");

    let listed = json(&api.call("GET", &format!("{base}/list"), None));
    let kinds: Vec<(String, String)> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [("deep", "dir"), ("link", "symlink"), ("out", "symlink")] {
        assert!(
            kinds.iter().any(|(p, k)| p == want.0 && k == want.1),
            "{want:?} not in {kinds:?}"
        );
    }
    let stat = json(&api.call("GET", &format!("{base}/stat?path=link"), None));
    assert_eq!(stat["kind"], "symlink");
    assert_eq!(
        stat["target"],
        other.path().join("secret").to_str().unwrap()
    );

    // Never through a symlink, never out of the workspace.
    for (method, path) in [
        ("GET", format!("{base}/content?path=link")),
        ("GET", format!("{base}/content?path=out/secret")),
        ("GET", format!("{base}/list?path=out")),
        ("GET", format!("{base}/content?path=../secret")),
        ("GET", format!("{base}/content?path=/etc/passwd")),
        ("DELETE", format!("{base}?path=out/secret")),
    ] {
        let got = api.call(method, &path, None);
        assert_eq!(got.status, 422, "{method} {path}: {got:?}");
        assert_eq!(got.problem_code(), "invalid");
        assert!(!got.body.contains("host-only"), "{got:?}");
    }
    let through = put("out/planted", "");
    assert_eq!(through.status, 422, "{through:?}");
    assert!(!other.path().join("planted").exists());
    let over_link = put("link", "");
    assert_eq!(over_link.status, 422, "{over_link:?}");
    assert_eq!(
        std::fs::read_to_string(other.path().join("secret")).unwrap(),
        "host-only\n"
    );

    let missing = api.call("GET", &format!("{base}/stat?path=nothing"), None);
    assert_eq!(missing.status, 404, "{missing:?}");
    let full = api.call("DELETE", &format!("{base}?path=deep"), None);
    assert_eq!(full.status, 409, "{full:?}");
    let gone = api.call("DELETE", &format!("{base}?path=deep&recursive=true"), None);
    assert_eq!(gone.status, 204, "{gone:?}");
    assert!(!ws.path().join("deep").exists());
    let unlinked = api.call("DELETE", &format!("{base}?path=out"), None);
    assert_eq!(unlinked.status, 204, "{unlinked:?}");
    assert!(other.path().join("secret").exists());
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// A thousand exec requests at once, as an ordinary user on an ns sandbox: each answered with
// its own output, the server still answering after, and no exec process left behind.
mod flood {
    #[test]
    fn a_thousand_execs_at_once_are_all_answered_and_leave_nothing_behind() {
        crate::require_root!();
        crate::common::in_mode(true, super::flood);
    }
}

fn flood() {
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock());
    let socket = api.socket.clone();
    let server_pid = server.child.as_ref().unwrap().id();
    let name = common::unique("flood");
    let _cleanup = common::Cleanup(name.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&serde_json::json!({"workspace": ws.path(), "name": name, "backend": "ns"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let mut py = client_script(system_python(), "api_flood.py");
    py.arg(&socket).arg(&name).arg("1000");
    run_client(py, api.owner, Duration::from_secs(900));
    // No exec process of this server's is left.
    let children =
        std::fs::read_to_string(format!("/proc/{server_pid}/task/{server_pid}/children"))
            .unwrap_or_default();
    assert!(
        children.split_whitespace().all(|pid| {
            !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("__exec")
        }),
        "exec processes left: {children}"
    );
    let ps = Command::new("pgrep")
        .args(["-f", &format!("__exec {name}")])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "exec processes left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    let gone = api.call("DELETE", &format!("/v1/sandboxes/{name}?force=true"), None);
    assert_eq!(gone.status, 204, "{gone:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

/// schemathesis (PyPI) against the served OpenAPI document, over TCP with the token: no 5xx,
/// every answer's status, media type, headers and body as documented, schema-valid requests
/// accepted and invalid ones refused. Making a sandbox, adding rules and checking a URL are
/// fuzzed without the check that every schema-valid request is accepted (a workspace must exist
/// and be shareable, a host or URL must parse, which no schema says).
#[test]
fn schemathesis_finds_no_server_error_and_every_answer_conforms() {
    let Some(python) = py_tools("schemathesis") else {
        return;
    };
    let schemathesis = python.with_file_name("schemathesis");
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &["--listen", "127.0.0.1:0"])).unwrap();
    let (port, token_file) = server.tcp();
    let token = std::fs::read_to_string(token_file).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim_end());
    let url = format!("http://127.0.0.1:{port}/v1/openapi.json");
    // Whose valid values no schema says: a workspace that exists, a host or URL that parses.
    let semantic = "^/v1/(sandboxes|policy/rules|policy/check)$";
    // A followed stream (server-sent events) never ends, so every one the document has is
    // left out, found in the document itself so that a new one cannot hang the run: the audit
    // stream's events are checked in `stream`, the sandbox events' in
    // `api_drives_a_sandbox_from_creation_to_removal`, the waiting requests' in
    // `asks::a_held_request_is_followed_and_approved_over_the_api`.
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let streams: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, ops)| {
            ops.as_object().unwrap().values().any(|op| {
                op["responses"].as_object().is_some_and(|r| {
                    r.values()
                        .any(|r| r["content"].get("text/event-stream").is_some())
                })
            })
        })
        .map(|(path, _)| path.clone())
        .collect();
    for known in [
        "/v1/audit/stream",
        "/v1/events/stream",
        "/v1/policy/pending/stream",
    ] {
        assert!(
            streams.iter().any(|s| s == known),
            "{known} not found in {streams:?}"
        );
    }
    let mut first: Vec<&str> = vec!["--exclude-path-regex", semantic];
    for s in &streams {
        first.extend(["--exclude-path", s.as_str()]);
    }
    let passes: [&[&str]; 2] = [
        &first,
        &[
            "--include-path-regex",
            semantic,
            "--exclude-checks",
            "positive_data_acceptance",
        ],
    ];
    for pass in passes {
        let mut cmd = Command::new(&schemathesis);
        cmd.args([
            "run",
            &url,
            "-H",
            &auth,
            "--checks",
            "all",
            "--request-timeout",
            "60",
        ])
        .args(["--max-examples", "50", "--seed", "1", "--no-color"])
        .args(pass)
        .current_dir(home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let out = wait_for(cmd.spawn().unwrap(), Duration::from_secs(600));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains(" passed"),
            "schemathesis {pass:?} found failures:\n{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// A streamed exec over the WebSocket, as an ordinary user on an ns sandbox (the Python
// `websockets` client): see tests/ws_exec.py. Then the audit log followed as server-sent
// events sees a request the sandbox made and the proxy denied.
mod stream {
    #[test]
    fn a_streamed_exec_answers_as_it_runs_and_stops_when_its_client_leaves() {
        crate::require_root!();
        crate::common::in_mode(true, super::streamed_exec);
    }

    #[test]
    fn a_streamed_exec_with_a_terminal_has_its_size_follows_resizes_and_takes_ctrl_c() {
        crate::require_root!();
        crate::common::in_mode(true, super::streamed_exec_with_a_terminal);
    }
}

/// tests/ws_tty.py against an ns sandbox made through the API, as an ordinary user.
fn streamed_exec_with_a_terminal() {
    let Some(python) = py_tools("websockets") else {
        return;
    };
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock());
    let name = common::unique("tty");
    let _cleanup = common::Cleanup(name.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&serde_json::json!({"workspace": ws.path(), "name": name, "backend": "ns"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let mut py = client_script(python, "ws_tty.py");
    // It imports ws_exec.py from beside it: no bytecode written into the source tree.
    py.arg(&api.socket)
        .arg(&name)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_client(py, api.owner, Duration::from_secs(300));
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

fn streamed_exec() {
    let Some(python) = py_tools("websockets") else {
        return;
    };
    common::ensure_image();
    let ws = common::workspace();
    let (server, api, _sock_dir) = serve_on_socket(common::paddock());
    let socket = api.socket.clone();
    let name = common::unique("stream");
    let _cleanup = common::Cleanup(name.clone());
    let made = api.call(
        "POST",
        "/v1/sandboxes",
        Some(&serde_json::json!({"workspace": ws.path(), "name": name, "backend": "ns"})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    // Before any upgrade: an unknown sandbox, a stopped one.
    let unknown = api.call("GET", "/v1/sandboxes/nobody/exec/stream", None);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let mut py = client_script(python, "ws_exec.py");
    py.arg(&socket).arg(&name);
    run_client(py, api.owner, Duration::from_secs(300));
    // The command of the client that left is stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = Command::new("pgrep")
            .args(["-f", "exec sleep 600|sleep 600"])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&left.stdout).trim().to_owned();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {left}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The audit log as it is written: a denied request the sandbox makes arrives as an event.
    let mut follow = Command::new("curl");
    follow
        .args(["-sS", "-N", "--max-time", "60", "--unix-socket"])
        .arg(&socket)
        .arg(format!(
            "http://x/v1/audit/stream?sandbox={name}&denied=true&limit=0"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = api.owner {
        follow.uid(uid).gid(gid);
    }
    let mut follower = follow.spawn().unwrap();
    let events = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(events).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Events start after the stream is open; one request now, more until one is seen.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen = Vec::new();
    'wait: loop {
        let r = api.call(
            "POST",
            &format!("/v1/sandboxes/{name}/exec"),
            Some(&serde_json::json!({"command": ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://denied.invalid/from-the-sandbox"]})),
        );
        assert_eq!(r.status, 200, "{r:?}");
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(1500)) {
            if line.starts_with("data:") && line.contains("denied.invalid") {
                let row: serde_json::Value =
                    serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
                assert_eq!(row["action"], "deny", "{row}");
                assert_eq!(row["sandbox"], name.as_str(), "{row}");
                assert_eq!(row["path"], "/from-the-sandbox", "{row}");
                break 'wait;
            }
            seen.push(line);
        }
        assert!(
            Instant::now() < deadline,
            "no audit event arrived: {seen:?}"
        );
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let stopped = api.call("POST", &format!("/v1/sandboxes/{name}/stop"), None);
    assert_eq!(stopped.status, 200, "{stopped:?}");
    let idle = api.call("GET", &format!("/v1/sandboxes/{name}/exec/stream"), None);
    assert_eq!(idle.status, 409, "{idle:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

/// Rules through the API: added for one sandbox, weighed by the check, listed, removed; refused
/// where the CLI refuses them.
#[test]
fn rules_are_added_checked_listed_and_removed() {
    use serde_json::json;
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(serve_cmd(home.path(), &[])).unwrap();
    let api = Api::of(server.socket());
    let added = api.call(
        "POST",
        "/v1/policy/rules",
        Some(&json!({"action": "allow", "hosts": ["docs.example.org"], "sandbox": "web"})),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let rule = json(&added)["rules"][0].clone();
    assert_eq!(rule["host"], "docs.example.org");
    assert_eq!(rule["scope"], "web");
    let id = rule["id"].as_i64().unwrap();

    let check = |url: &str, sandbox: &str| {
        let got = api.call(
            "GET",
            &format!("/v1/policy/check?url={url}&sandbox={sandbox}"),
            None,
        );
        assert_eq!(got.status, 200, "{got:?}");
        json(&got)
    };
    let yes = check("https://docs.example.org/guide", "web");
    assert_eq!(yes["allowed"], true, "{yes}");
    assert_eq!(yes["rule"], id);
    assert_eq!(yes["request"], "CONNECT docs.example.org:443");
    let other = check("https://docs.example.org/", "api");
    assert_eq!(
        other["allowed"], false,
        "another sandbox has no such rule: {other}"
    );
    let no = check("http://elsewhere.example.org/x", "web");
    assert_eq!(no["allowed"], false, "{no}");

    let listed = json(&api.call("GET", "/v1/policy/rules?sandbox=web", None));
    assert!(
        listed["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id),
        "{listed}"
    );
    for bad in [
        json!({"action": "allow", "hosts": ["*"]}),
        json!({"action": "allow", "hosts": ["0.0.0.0/0"]}),
        json!({"action": "maybe", "hosts": ["x.example.org"]}),
        json!({"action": "allow", "hosts": ["x.example.org"], "colour": "red"}),
        json!({"action": "allow", "hosts": ["x.example.org"], "port": "http"}),
    ] {
        let got = api.call("POST", "/v1/policy/rules", Some(&bad));
        assert_eq!(got.status, 422, "{bad}: {got:?}");
    }
    let bad_url = api.call("GET", "/v1/policy/check?url=ftp://x.example.org/", None);
    assert_eq!(bad_url.status, 422, "{bad_url:?}");
    let removed = api.call("DELETE", &format!("/v1/policy/rules/{id}"), None);
    assert_eq!(removed.status, 204, "{removed:?}");
    let again = api.call("DELETE", &format!("/v1/policy/rules/{id}"), None);
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(check("https://docs.example.org/", "web")["allowed"], false);
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

// Paddock's Python client (clients/python), installed with pip as a user would, against a real
// server, as an ordinary user on every backend: see tests/py_client.py.
mod python_client {
    crate::on_every_backend_in_mode!(true, python_client);
}

fn python_client(backend: &str) {
    if py_tools("the client's dependencies").is_none() {
        return;
    }
    common::ensure_image();
    // The package as it would be published: built and installed by pip with its dependencies
    // from the package index, into a venv of its own.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = tempfile::Builder::new()
        .prefix("paddock-client-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let made = Command::new(system_python())
        .args(["-m", "venv"])
        .arg(venv.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    // From a copy: pip builds a local project in place, and the checkout stays as it is.
    let source = venv.path().join("source");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(root.join("clients/python"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(copied.success());
    let pip = Command::new(venv.path().join("bin/pip"))
        .args(["install", "-q"])
        .arg(&source)
        .current_dir(venv.path())
        .output()
        .unwrap();
    assert!(
        pip.status.success(),
        "pip could not install clients/python: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    let ws = common::workspace();
    let (server, api, sock_dir) = serve_on_socket(common::paddock_for(backend));
    let socket = api.socket.clone();
    let name = common::unique("pyclient");
    let _cleanup = common::Cleanup(name.clone());
    let _cleanup_held = common::Cleanup(format!("{name}-r"));
    let _cleanup_shell = common::Cleanup(format!("{name}-t"));
    let mut py = client_script(venv.path().join("bin/python"), "py_client.py");
    py.arg(&socket)
        .arg(root.join("docs/openapi.json"))
        .arg(ws.path())
        .arg(&name)
        .arg(backend)
        .current_dir(sock_dir.path());
    run_client(py, api.owner, Duration::from_secs(180));
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

/// `GET /v1/secrets` answers each secret's name, scope, hosts and variables, never its value.
#[test]
fn secrets_are_listed_without_their_values() {
    use std::io::Write;
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("secrets.key");
    let mut set = Command::new(common::bin());
    set.args([
        "secret",
        "set-custom",
        "demo-token",
        "--host",
        "api.example.test",
    ])
    .args(["--header", "Authorization", "--prefix", "Bearer "])
    .args(["--env", "DEMO_TOKEN", "--sandbox", "box1"])
    .env("PADDOCK_HOME", home.path())
    .env("PADDOCK_SECRET_KEY", &key)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = set.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-value-xyz\n")
        .unwrap();
    let out = wait_for(child, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let mut cmd = serve_cmd(home.path(), &[]);
    cmd.env("PADDOCK_SECRET_KEY", &key);
    let server = Server::start(cmd).unwrap();
    let api = Api::of(server.socket());
    let all = api.call("GET", "/v1/secrets", None);
    assert_eq!(all.status, 200, "{all:?}");
    assert!(
        !all.body.contains("s3cret"),
        "a value was answered: {all:?}"
    );
    assert_eq!(
        json(&all)["secrets"],
        serde_json::json!([{
            "name": "demo-token", "scope": "sandbox box1", "service": null,
            "hosts": ["api.example.test"], "env": ["DEMO_TOKEN"],
        }]),
        "{all:?}"
    );
    let mine = json(&api.call("GET", "/v1/secrets?sandbox=box1", None));
    assert_eq!(mine["secrets"].as_array().unwrap().len(), 1, "{mine}");
    let others = json(&api.call("GET", "/v1/secrets?sandbox=box2", None));
    assert_eq!(others["secrets"], serde_json::json!([]), "{others}");
    let bad = api.call("GET", "/v1/secrets?sandbox=Bad%2Fname", None);
    assert_eq!(bad.status, 422, "{bad:?}");
    let (status, err) = server.stop();
    assert!(status.success(), "{status:?} {err}");
}

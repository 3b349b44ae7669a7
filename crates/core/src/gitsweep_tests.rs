#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::trust::{Finding, report};

/// A workspace in a fresh directory (canonical, as the real ones are).
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let w = fs::canonicalize(t.path()).unwrap();
    (t, w)
}

/// A git directory at `w/dir` as `git init` leaves it.
fn git_dir(w: &Path, dir: &str) {
    for d in ["hooks", "objects", "refs/heads"] {
        fs::create_dir_all(w.join(dir).join(d)).unwrap();
    }
    fs::write(w.join(dir).join("HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(w.join(dir).join("config"), "[core]\n\tbare = false\n").unwrap();
}

fn write_exec(p: &Path, text: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The moment the run starts: what is made after it counts as the run's.
fn start() -> SystemTime {
    std::thread::sleep(Duration::from_millis(20));
    let t = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    t
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o777
}

fn is_link(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn find<'a>(r: &'a [Finding], path: &str) -> &'a Finding {
    r.iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no finding for {path} in {r:#?}"))
}

fn has_git() -> bool {
    if crate::tools::find_program("git").is_none() {
        eprintln!("skipped: no git on this host (it parses configs)");
        return false;
    }
    true
}

#[test]
fn a_symlinked_hook_into_a_skipped_folder_is_set_aside() {
    // The outside review's attack: a payload where the walk does not look, a hook leading to it.
    let (_t, w) = workspace();
    let s = start();
    git_dir(&w, ".git");
    write_exec(
        &w.join("node_modules/.bin/lint"),
        "#!/bin/sh\ntouch /tmp/owned\n",
    );
    symlink(
        "../../node_modules/.bin/lint",
        w.join(".git/hooks/post-checkout"),
    )
    .unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    let f = find(&r, ".git/hooks/post-checkout");
    assert!(
        f.why.contains("symlink (-> node_modules/.bin/lint)") && f.why.contains("set aside"),
        "{f:?}"
    );
    assert!(fs::symlink_metadata(w.join(".git/hooks/post-checkout")).is_err());
    assert!(is_link(&w.join(".git/hooks/post-checkout.paddock-review")));
    // The payload itself is left as it was (it is not git's to run any more).
    assert_eq!(mode(&w.join("node_modules/.bin/lint")), 0o755);
}

#[test]
fn a_pinned_hook_is_set_aside_when_what_it_leads_to_changed() {
    let (_t, w) = workspace();
    git_dir(&w, ".git");
    write_exec(&w.join("scripts/pre-commit"), "#!/bin/sh\nexit 0\n");
    write_exec(&w.join("scripts/pre-push"), "#!/bin/sh\nexit 0\n");
    symlink("../../scripts/pre-commit", w.join(".git/hooks/pre-commit")).unwrap();
    symlink("../../scripts/pre-push", w.join(".git/hooks/pre-push")).unwrap();
    // Through a directory symlink made in the run: the link and the file stay old.
    fs::create_dir_all(w.join("node_modules/x")).unwrap();
    write_exec(&w.join("node_modules/x/hook"), "#!/bin/sh\nexit 0\n");
    symlink("../../tools/hook", w.join(".git/hooks/post-merge")).unwrap();
    let s = start();
    fs::write(w.join("scripts/pre-commit"), "#!/bin/sh\nevil\n").unwrap();
    symlink("node_modules/x", w.join("tools")).unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    assert!(
        find(&r, ".git/hooks/pre-commit").why.contains("set aside"),
        "{r:#?}"
    );
    assert!(
        find(&r, ".git/hooks/post-merge").why.contains("set aside"),
        "{r:#?}"
    );
    assert!(is_link(&w.join(".git/hooks/pre-commit.paddock-review")));
    assert!(is_link(&w.join(".git/hooks/post-merge.paddock-review")));
    // The hook whose target did not change is the user's, and stays.
    assert!(is_link(&w.join(".git/hooks/pre-push")));
    assert!(!r.iter().any(|f| f.path.contains("pre-push")), "{r:#?}");
}

#[test]
fn a_hard_linked_hook_loses_its_execute_bits_under_every_name() {
    let (_t, w) = workspace();
    git_dir(&w, ".git");
    // Linked before the run, written through its other name during it.
    write_exec(&w.join("tools/hook"), "#!/bin/sh\nexit 0\n");
    fs::hard_link(w.join("tools/hook"), w.join(".git/hooks/pre-commit")).unwrap();
    let s = start();
    fs::write(w.join("tools/hook"), "#!/bin/sh\nevil\n").unwrap();
    // Linked during the run from a skipped folder.
    write_exec(&w.join("target/debug/x"), "#!/bin/sh\nevil\n");
    fs::hard_link(w.join("target/debug/x"), w.join(".git/hooks/pre-push")).unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    for (hook, other) in [("pre-commit", "tools/hook"), ("pre-push", "target/debug/x")] {
        let f = find(&r, &format!(".git/hooks/{hook}"));
        assert!(
            f.why.contains("execute bits were removed") && f.why.contains("hard link"),
            "{f:?}"
        );
        assert_eq!(mode(&w.join(other)), 0o644, "{other}");
    }
}

#[test]
fn git_files_leading_outside_are_set_aside_and_inside_ones_followed() {
    let (_t, w) = workspace();
    let (_o, outside) = workspace();
    git_dir(&outside, "repo.git");
    let s = start();
    fs::create_dir_all(w.join("a")).unwrap();
    fs::write(
        w.join("a/.git"),
        format!("gitdir: {}\n", outside.join("repo.git").display()),
    )
    .unwrap();
    fs::create_dir_all(w.join("b")).unwrap();
    symlink(outside.join("repo.git"), w.join("b/.git")).unwrap();
    // Inside, into a skipped folder that holds a planted hook.
    git_dir(&w, "node_modules/.cache/evil.git");
    write_exec(
        &w.join("node_modules/.cache/evil.git/hooks/post-checkout"),
        "#!/bin/sh\nevil\n",
    );
    fs::create_dir_all(w.join("c")).unwrap();
    fs::write(
        w.join("c/.git"),
        "gitdir: ../node_modules/.cache/evil.git\n",
    )
    .unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    for p in ["a/.git", "b/.git"] {
        let f = find(&r, p);
        assert!(
            f.why.contains("leads outside the shared folders") && f.why.contains("set aside"),
            "{f:?}"
        );
        assert!(fs::symlink_metadata(w.join(p)).is_err(), "{p}");
        assert!(
            fs::symlink_metadata(w.join(format!("{p}.paddock-review"))).is_ok(),
            "{p}"
        );
    }
    assert!(find(&r, "c/.git").why.contains("checked too"), "{r:#?}");
    let hook = "node_modules/.cache/evil.git/hooks/post-checkout";
    assert!(
        find(&r, hook).why.contains("execute bits were removed"),
        "{r:#?}"
    );
    assert_eq!(mode(&w.join(hook)), 0o644);
}

#[test]
fn a_commondir_leading_outside_is_set_aside() {
    let (_t, w) = workspace();
    let (_o, outside) = workspace();
    git_dir(&outside, "main.git");
    let s = start();
    fs::create_dir_all(w.join("wt/.git")).unwrap();
    fs::write(w.join("wt/.git/HEAD"), "ref: refs/heads/x\n").unwrap();
    fs::write(
        w.join("wt/.git/commondir"),
        format!("{}\n", outside.join("main.git").display()),
    )
    .unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    let f = find(&r, "wt/.git/commondir");
    assert!(
        f.why.contains("leads outside") && f.why.contains("set aside"),
        "{f:?}"
    );
    assert!(w.join("wt/.git/commondir.paddock-review").exists());
}

#[test]
fn a_hooks_path_in_an_unchanged_config_is_checked() {
    if !has_git() {
        return;
    }
    let (_t, w) = workspace();
    git_dir(&w, ".git");
    fs::write(
        w.join(".git/config"),
        "[core]\n\thooksPath = .husky/_\n[include]\n\tpath = ../shared.gitconfig\n",
    )
    .unwrap();
    write_exec(&w.join(".husky/_/pre-commit"), "#!/bin/sh\nexit 0\n");
    write_exec(&w.join(".husky/_/pre-push"), "#!/bin/sh\nexit 0\n");
    fs::write(w.join("shared.gitconfig"), "[user]\n\tname = me\n").unwrap();
    let s = start();
    fs::write(w.join(".husky/_/pre-commit"), "#!/bin/sh\nevil\n").unwrap();
    fs::write(
        w.join("shared.gitconfig"),
        "[user]\n\tname = me\n[core]\n\tfsmonitor = evil\n",
    )
    .unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    assert!(
        find(&r, ".husky/_/pre-commit")
            .why
            .contains("execute bits were removed"),
        "{r:#?}"
    );
    assert_eq!(mode(&w.join(".husky/_/pre-commit")), 0o644);
    assert_eq!(mode(&w.join(".husky/_/pre-push")), 0o755);
    let f = find(&r, "shared.gitconfig");
    assert!(
        f.why.contains("includes") && f.why.contains("dropped: core.fsmonitor"),
        "{f:?}"
    );
    assert!(
        !fs::read_to_string(w.join("shared.gitconfig"))
            .unwrap()
            .contains("fsmonitor")
    );
}

#[test]
fn a_bare_repository_made_in_a_skipped_folder_is_trimmed() {
    if !has_git() {
        return;
    }
    let (_t, w) = workspace();
    let s = start();
    for d in ["objects", "refs"] {
        fs::create_dir_all(w.join("target/sneaky").join(d)).unwrap();
    }
    fs::write(w.join("target/sneaky/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(
        w.join("target/sneaky/config"),
        "[core]\n\tbare = true\n\tfsmonitor = evil\n",
    )
    .unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    let f = find(&r, "target/sneaky/config");
    assert!(f.why.contains("dropped: core.fsmonitor"), "{f:?}");
    assert!(w.join("target/sneaky/config.paddock-review").exists());
}

#[test]
fn without_defusing_everything_is_reported_and_nothing_changes() {
    let (_t, w) = workspace();
    let s = start();
    git_dir(&w, ".git");
    write_exec(&w.join("node_modules/.bin/lint"), "#!/bin/sh\nevil\n");
    symlink(
        "../../node_modules/.bin/lint",
        w.join(".git/hooks/post-checkout"),
    )
    .unwrap();
    write_exec(&w.join(".git/hooks/pre-commit"), "#!/bin/sh\nevil\n");
    let r = report(std::slice::from_ref(&w), s, false);
    assert!(
        find(&r, ".git/hooks/post-checkout")
            .why
            .contains("git on the host may use it"),
        "{r:#?}"
    );
    assert!(
        find(&r, ".git/hooks/pre-commit")
            .why
            .contains("git on the host runs it"),
        "{r:#?}"
    );
    assert!(is_link(&w.join(".git/hooks/post-checkout")));
    assert_eq!(mode(&w.join(".git/hooks/pre-commit")), 0o755);
}

#[test]
fn what_did_not_change_is_not_reported() {
    let (_t, w) = workspace();
    git_dir(&w, ".git");
    git_dir(&w, "node_modules/dep/.git");
    write_exec(&w.join("scripts/pre-commit"), "#!/bin/sh\nexit 0\n");
    symlink("../../scripts/pre-commit", w.join(".git/hooks/pre-commit")).unwrap();
    write_exec(&w.join(".git/hooks/pre-push"), "#!/bin/sh\nexit 0\n");
    fs::create_dir_all(w.join("sub")).unwrap();
    fs::write(w.join("sub/.git"), "gitdir: /nonexistent/elsewhere\n").unwrap();
    let s = start();
    fs::write(w.join("notes.txt"), "x").unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    assert_eq!(r, []);
    assert!(is_link(&w.join(".git/hooks/pre-commit")));
    assert!(w.join("sub/.git").is_file());
}

#[test]
fn a_planted_fifo_does_not_hold_the_sweep() {
    let (_t, w) = workspace();
    let s = start();
    git_dir(&w, ".git");
    fs::remove_file(w.join(".git/config")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        w.join(".git/config"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    fs::create_dir_all(w.join("x")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        w.join("x/.git"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let r = report(std::slice::from_ref(&w), s, true);
    assert!(
        find(&r, ".git/config").why.contains("set aside whole"),
        "{r:#?}"
    );
}

#[test]
fn other_shared_folders_are_swept_and_shown_in_full() {
    let (_t, w) = workspace();
    let (_m, m) = workspace();
    let s = start();
    git_dir(&m, ".git");
    write_exec(&m.join(".git/hooks/pre-commit"), "#!/bin/sh\nevil\n");
    let r = report(&[w.clone(), m.clone()], s, true);
    let shown = m.join(".git/hooks/pre-commit").display().to_string();
    assert!(
        find(&r, &shown).why.contains("execute bits were removed"),
        "{r:#?}"
    );
}

//! What a git repository made during a run may keep once the host's git can see it.
//!
//! The repositories that exist before a start are pinned ([`crate::gitguard`]): their config
//! and hooks are read-only inside. A repository the agent makes during the run (a `git init`,
//! a clone, a bare repository, a git directory under any name that a `.git` file points to)
//! cannot be pinned in advance, and its config could make the host's git run code:
//! `core.fsmonitor`, `core.hooksPath`, `core.sshCommand`, filters, diff drivers, aliases,
//! `include.path`, `core.worktree` pointing into the user's home…
//!
//! After the run, a config file that changed in a git directory keeps only the keys of an
//! allow-list (format, remotes, branches, identity: what a clone needs); when it had anything
//! else, the original is set aside as `config.paddock-review` for the user to read, and the
//! report says which keys went. The file is read without following symlinks and parsed by the
//! host's own git (`git config --file -`), so what is judged is what git would read; a `config`
//! or `hooks` that is a symlink is set aside whole. Without git on the host, or when git cannot
//! parse the file, the whole config is set aside (fail closed).

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The suffix of a file or symlink set aside for review.
pub const REVIEW_SUFFIX: &str = ".paddock-review";

/// Larger configs are set aside whole (a real one is a few hundred bytes).
const MAX_CONFIG: u64 = 1 << 20;

/// Keys a repository made in a run keeps: (section, has a subsection, keys).
const KEEP: &[(&str, bool, &[&str])] = &[
    (
        "core",
        false,
        &[
            "repositoryformatversion",
            "filemode",
            "bare",
            "logallrefupdates",
            "ignorecase",
            "precomposeunicode",
            "symlinks",
            "autocrlf",
            "eol",
        ],
    ),
    ("extensions", false, &["objectformat", "refstorage"]),
    (
        "remote",
        true,
        &["url", "pushurl", "fetch", "tagopt", "prune", "mirror"],
    ),
    ("branch", true, &["remote", "pushremote", "merge", "rebase"]),
    ("submodule", true, &["url", "active", "branch"]),
    ("user", false, &["name", "email"]),
    ("pull", false, &["rebase", "ff"]),
    ("fetch", false, &["prune"]),
];

/// What [`defuse_config`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defused {
    /// Every key is on the allow-list: nothing changed.
    Clean,
    /// The original was set aside; the config now holds only the allowed keys.
    Trimmed {
        /// The keys that went.
        dropped: Vec<String>,
    },
    /// The original was set aside whole (why).
    SetAside(String),
}

/// Whether the directory `dir` (relative to the workspace) looks like a git directory to git:
/// it has a `HEAD`, or `objects` and `refs` (a common directory that worktrees point at).
pub fn is_git_dir(workspace: &Path, dir: &Path) -> bool {
    let has = |n: &str| std::fs::symlink_metadata(workspace.join(dir).join(n)).is_ok();
    has("HEAD") || (has("objects") && has("refs"))
}

/// Opens `rel` below `workspace` with `flags`, resolved inside the workspace without following
/// any symlink (the workspace is the sandbox's to write).
pub(crate) fn open_beneath(workspace: &Path, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let root = rustix::fs::open(
        workspace,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(rustix::fs::openat2(
        &root,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens the directory `rel` below `workspace` without following any symlink.
fn open_dir(workspace: &Path, rel: &Path) -> io::Result<OwnedFd> {
    open_beneath(workspace, rel, OFlags::RDONLY | OFlags::DIRECTORY)
}

fn split(rel: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
    }
}

/// Renames `rel` (a file, or a symlink itself) below `workspace` to its name with
/// [`REVIEW_SUFFIX`], inside the same directory.
pub fn set_aside(workspace: &Path, rel: &Path) -> io::Result<()> {
    let (parent, name) = split(rel)?;
    let dir = open_dir(workspace, parent)?;
    let mut aside = name.to_os_string();
    aside.push(REVIEW_SUFFIX);
    rustix::fs::renameat(&dir, name, &dir, aside.as_os_str())?;
    Ok(())
}

/// Makes the git config `rel` below `workspace` safe for the host's git (see the module).
pub fn defuse_config(workspace: &Path, rel: &Path) -> io::Result<Defused> {
    let (parent, name) = split(rel)?;
    let dir = open_dir(workspace, parent)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let whole = |why: &str| -> io::Result<Defused> {
        set_aside(workspace, rel)?;
        Ok(Defused::SetAside(why.to_owned()))
    };
    let fd = match fd {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return whole("a symlink"),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return whole("not a regular file");
    }
    if st.st_size as u64 > MAX_CONFIG {
        return whole("larger than any real config");
    }
    let mut text = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut text)?;
    let Some(entries) = parse(&text) else {
        return whole("the host's git is missing or cannot read it");
    };
    let dropped: Vec<String> = entries
        .iter()
        .filter(|(k, _)| !allowed(k))
        .map(|(k, _)| k.clone())
        .collect();
    if dropped.is_empty() {
        return Ok(Defused::Clean);
    }
    let kept = render(entries.iter().filter(|(k, _)| allowed(k)));
    // The trimmed config goes in beside the original, then replaces it once the original is
    // set aside.
    let mut tmp = name.to_os_string();
    tmp.push(format!(".paddock-{}", std::process::id()));
    let out = rustix::fs::openat(
        &dir,
        tmp.as_os_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    std::fs::File::from(out).write_all(kept.as_bytes())?;
    set_aside(workspace, rel)?;
    rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name)?;
    Ok(Defused::Trimmed { dropped })
}

/// The entries of a git config as the host's git reads it (`key`, value; `None` for a bare
/// boolean key), includes not followed. `None` when git is missing or rejects the file.
pub(crate) fn parse(text: &[u8]) -> Option<Vec<(String, Option<String>)>> {
    let git = crate::tools::find_program("git")?;
    let mut child = Command::new(git)
        .args(["config", "--no-includes", "--file", "-", "--list", "--null"])
        // Nothing of the user's or the workspace's git setup is read.
        .env_clear()
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = text.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().ok()?;
    let _ = writer.join();
    if !out.status.success() {
        return None;
    }
    let list = String::from_utf8(out.stdout).ok()?;
    Some(
        list.split_terminator('\0')
            .map(|e| match e.split_once('\n') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (e.to_owned(), None),
            })
            .collect(),
    )
}

/// `key` is `section.key` or `section.sub.section.key` (section and key lower-case).
fn allowed(key: &str) -> bool {
    let (Some((section, rest)), Some((_, name))) = (key.split_once('.'), key.rsplit_once('.'))
    else {
        return false;
    };
    let has_sub = rest.contains('.');
    KEEP.iter()
        .any(|(s, sub, keys)| *s == section && *sub == has_sub && keys.contains(&name))
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes entries back as a git config, one section header per run of the same section.
fn render<'a>(entries: impl Iterator<Item = &'a (String, Option<String>)>) -> String {
    let mut out = String::new();
    let mut current = String::new();
    for (key, value) in entries {
        let (Some((section, rest)), Some((head, name))) =
            (key.split_once('.'), key.rsplit_once('.'))
        else {
            continue;
        };
        if head != current {
            match rest.rsplit_once('.') {
                Some((sub, _)) => out.push_str(&format!("[{section} {}]\n", quote(sub))),
                None => out.push_str(&format!("[{section}]\n")),
            }
            current = head.to_owned();
        }
        match value {
            Some(v) => out.push_str(&format!("\t{name} = {}\n", quote(v))),
            None => out.push_str(&format!("\t{name}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = r#"[core]
	repositoryformatversion = 0
	fsmonitor = "touch /tmp/owned"
	hooksPath = ../scripts
[remote "up.stream"]
	url = "https://example.invalid/a \"b\".git"
	fetch = +refs/heads/*:refs/remotes/up.stream/*
	uploadpack = evil
[include]
	path = ../other
[alias]
	st = !sh -c evil
[branch "main"]
	remote = up.stream
	merge = refs/heads/main
"#;

    fn repo(w: &Path, config: &str) {
        std::fs::create_dir_all(w.join("x/.git/objects")).unwrap();
        std::fs::create_dir_all(w.join("x/.git/refs")).unwrap();
        std::fs::write(w.join("x/.git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(w.join("x/.git/config"), config).unwrap();
    }

    #[test]
    fn keeps_what_a_clone_needs_and_sets_the_rest_aside() {
        if crate::tools::find_program("git").is_none() {
            eprintln!("skipped: no git on this host");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        repo(w, EVIL);
        assert!(is_git_dir(w, Path::new("x/.git")));
        assert!(!is_git_dir(w, Path::new("x")));
        let rel = Path::new("x/.git/config");
        let Defused::Trimmed { dropped } = defuse_config(w, rel).unwrap() else {
            panic!("not trimmed")
        };
        assert_eq!(
            dropped,
            [
                "core.fsmonitor",
                "core.hookspath",
                "remote.up.stream.uploadpack",
                "include.path",
                "alias.st"
            ]
        );
        let review = std::fs::read_to_string(w.join("x/.git/config.paddock-review")).unwrap();
        assert_eq!(review, EVIL);
        // What is left is what git reads: the same remote and branch, nothing that runs.
        let left = parse(&std::fs::read(w.join("x/.git/config")).unwrap()).unwrap();
        let keys: Vec<&str> = left.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "core.repositoryformatversion",
                "remote.up.stream.url",
                "remote.up.stream.fetch",
                "branch.main.remote",
                "branch.main.merge"
            ]
        );
        assert_eq!(
            left[1].1.as_deref(),
            Some("https://example.invalid/a \"b\".git")
        );
        // A second pass finds nothing more to do.
        assert_eq!(defuse_config(w, rel).unwrap(), Defused::Clean);
    }

    #[test]
    fn a_symlinked_or_unreadable_config_is_set_aside_whole() {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        repo(w, "");
        std::fs::remove_file(w.join("x/.git/config")).unwrap();
        std::os::unix::fs::symlink("../../evil", w.join("x/.git/config")).unwrap();
        let rel = Path::new("x/.git/config");
        assert!(matches!(
            defuse_config(w, rel).unwrap(),
            Defused::SetAside(_)
        ));
        assert!(
            std::fs::symlink_metadata(w.join("x/.git/config.paddock-review"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(std::fs::symlink_metadata(w.join("x/.git/config")).is_err());
        if crate::tools::find_program("git").is_some() {
            std::fs::write(w.join("x/.git/config"), "[core\nbroken").unwrap();
            assert!(matches!(
                defuse_config(w, rel).unwrap(),
                Defused::SetAside(_)
            ));
        }
        // A symlinked directory on the way is not followed.
        std::fs::create_dir_all(w.join("real/.git")).unwrap();
        std::fs::write(w.join("real/.git/config"), EVIL).unwrap();
        std::os::unix::fs::symlink("real", w.join("link")).unwrap();
        assert!(defuse_config(w, Path::new("link/.git/config")).is_err());
        assert_eq!(
            std::fs::read_to_string(w.join("real/.git/config")).unwrap(),
            EVIL
        );
    }
}

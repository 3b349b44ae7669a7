//! The host's git, as `paddock apply --branch` and `--commits` run it on the workspace's
//! repository: plumbing commands only, as the workspace's owner, with nothing of the user's or
//! the repository's setup that could run a program.
//!
//! - Who: in user mode the user; in root mode root of a user namespace of its own in which the
//!   workspace's owner (uid and gid) is 0 and no other id exists, so git has the owner's access
//!   and no capability over anything else of the host (also when the owner is root).
//! - Environment: cleared, then `PATH` of the system's directories only, `HOME` pointing
//!   nowhere, no system or global config (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`),
//!   no lazy fetch of a partial clone's missing objects (`GIT_NO_LAZY_FETCH`), no replace
//!   refs, `GIT_DIR` the workspace's `.git` and `GIT_INDEX_FILE` a temporary index in a private
//!   directory (never the repository's own index), no work tree.
//! - Configuration: the repository's own config is still read (git needs its object format and
//!   ref storage), but every setting that would make these commands run a program is
//!   overridden on the command line, which takes precedence ([`OVERRIDES`]): hooks (the
//!   `reference-transaction` and `post-index-change` hooks of `update-ref` and `update-index`),
//!   fsmonitor, signing programs, ssh and credential helpers, the pager, remote transports.
//!   Content goes in with `hash-object --no-filters`, so no clean filter runs.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Where git is looked for (system directories only; never the caller's `PATH`).
pub(crate) const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Configuration given on git's command line: it takes precedence over the repository's, so
/// nothing it says can make these commands run a program.
const OVERRIDES: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.splitIndex=false",
    "core.sparseCheckout=false",
    "index.sparse=false",
    "core.useReplaceRefs=false",
    "core.sshCommand=false",
    "core.askPass=false",
    "core.pager=cat",
    "core.editor=false",
    "credential.helper=",
    "protocol.allow=never",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "log.showSignature=false",
    "gpg.program=false",
    "gpg.openpgp.program=false",
    "gpg.x509.program=false",
    "gpg.ssh.program=false",
    "gpg.ssh.defaultKeyCommand=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "user.useConfigOnly=false",
    "i18n.commitEncoding=UTF-8",
    "i18n.logOutputEncoding=UTF-8",
];

/// The most of a failed git's stderr shown.
const MAX_STDERR: usize = 4096;

/// Why the host's git cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    /// No git in [`SAFE_PATH`].
    #[error(
        "git is not installed (looked in {SAFE_PATH}): install it, or `paddock apply` without --branch writes the changes to the workspace"
    )]
    Missing,
    /// The workspace is not the top of a repository with a `.git` directory.
    #[error("{0}")]
    NotRepository(String),
    /// The private directory could not be made or written.
    #[error("cannot prepare a private directory for git: {what}")]
    Scratch {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The branch name is not one git accepts.
    #[error("{0:?} is not a valid branch name (`git check-ref-format --branch` refuses it)")]
    BadBranch(String),
    /// The branch exists.
    #[error(
        "the repository already has a branch {0}: choose another name (an existing branch is never moved)"
    )]
    BranchExists(String),
    /// `HEAD` cannot be read.
    #[error("cannot read the repository's HEAD: {0}")]
    Head(String),
    /// git could not be started.
    #[error("cannot run git {what}")]
    Spawn {
        /// The git command.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// git failed.
    #[error("git {what} failed ({status}): {stderr}")]
    Failed {
        /// The git command.
        what: String,
        /// Its exit status.
        status: String,
        /// What it said (shortened).
        stderr: String,
    },
}

/// What git reads on its standard input.
pub(crate) enum Input<'a> {
    /// Nothing.
    Null,
    /// These bytes.
    Bytes(&'a [u8]),
    /// This file of the private directory (relative to it).
    File(&'a Path),
}

/// What a finished git gave back.
pub(crate) struct Finished {
    /// Exit status 0.
    pub ok: bool,
    /// Its standard output (empty when it went to a file).
    pub stdout: Vec<u8>,
    status: String,
    stderr: String,
}

/// The host's git on one workspace's repository (see the module docs).
pub(crate) struct HostGit {
    program: PathBuf,
    git_dir: PathBuf,
    scratch: tempfile::TempDir,
    /// The private directory, open.
    root: OwnedFd,
    /// Root mode: the workspace's owner (uid, gid), whom git runs as.
    owner: Option<(u32, u32)>,
    /// Extra object directories (the sandbox's objects, copied into the private directory).
    alternates: Option<PathBuf>,
    /// Author and committer.
    identity: Option<(String, String)>,
    /// How many stdin files were made.
    inputs: std::cell::Cell<usize>,
}

/// Finds `git` in [`SAFE_PATH`].
fn find_git() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join("git"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Why `workspace` cannot be used, if it cannot: it must hold a `.git` directory.
fn check_repository(workspace: &Path) -> Result<PathBuf, GitError> {
    let git_dir = workspace.join(".git");
    let ws = workspace.display();
    // As the review helper opens it: a path that now passes through a symlink is refused before
    // git runs there.
    rustix::fs::openat2(
        rustix::fs::CWD,
        workspace,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| {
        GitError::NotRepository(format!(
            "the workspace {ws} is missing, not a directory, or reached through a symlink ({e}); nothing was done"
        ))
    })?;
    let how = "`paddock apply` without --branch writes the changes to the workspace instead";
    match std::fs::symlink_metadata(&git_dir) {
        Ok(m) if m.is_dir() => Ok(git_dir),
        Ok(m) if m.is_file() => Err(GitError::NotRepository(format!(
            "{ws}/.git is a file (a linked worktree or a submodule), not the repository itself: --branch and --commits need the workspace to be a repository's main work tree; {how}"
        ))),
        Ok(_) => Err(GitError::NotRepository(format!(
            "{ws}/.git is neither a file nor a directory (a symlink?), and is not followed; {how}"
        ))),
        Err(_)
            if ["HEAD", "objects", "refs"]
                .iter()
                .all(|n| workspace.join(n).exists()) =>
        {
            Err(GitError::NotRepository(format!(
                "{ws} is a bare git repository: --branch and --commits need a work tree with a .git directory; {how}"
            )))
        }
        Err(_) => Err(GitError::NotRepository(format!(
            "{ws} is not the top of a git repository (it has no .git directory): --branch and --commits commit to the workspace's repository; run `git init` there first, or {how}"
        ))),
    }
}

impl HostGit {
    /// The host's git on the repository of `workspace` (its `.git` directory), with a private
    /// directory of its own.
    pub(crate) fn open(workspace: &Path) -> Result<HostGit, GitError> {
        let git_dir = check_repository(workspace)?;
        let program = find_git().ok_or(GitError::Missing)?;
        let scratch_err = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| GitError::Scratch { what, source: e }
        };
        let owner = if paddock_confine::user::is_user_mode() {
            None
        } else {
            let m = std::fs::metadata(workspace).map_err(scratch_err(&format!(
                "cannot read the owner of {}",
                workspace.display()
            )))?;
            Some((m.uid(), m.gid()))
        };
        let scratch = tempfile::Builder::new()
            .prefix("paddock-git-")
            .tempdir()
            .map_err(scratch_err("cannot make a temporary directory"))?;
        // Fresh, 0700 and this process's: nobody else can have changed it yet.
        let root = rustix::fs::open(
            scratch.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| scratch_err("cannot open the temporary directory")(e.into()))?;
        let git = HostGit {
            program,
            git_dir,
            scratch,
            root,
            owner,
            alternates: None,
            identity: None,
            inputs: std::cell::Cell::new(0),
        };
        git.give(&git.root)?;
        Ok(git)
    }

    /// The private directory (only git and this process can enter it).
    pub(crate) fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Gives the file or directory `fd` (made by this process) to the owner git runs as.
    fn give(&self, fd: &OwnedFd) -> Result<(), GitError> {
        if let Some((uid, gid)) = self.owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| GitError::Scratch {
                what: "cannot give a file of the temporary directory to the workspace's owner"
                    .into(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Opens `rel` below the private directory. In root mode the directory belongs to the
    /// workspace's owner, who could put a symlink anywhere in it: nothing there is followed,
    /// and nothing resolves outside it.
    fn open_beneath(&self, rel: &Path, flags: OFlags, mode: u32) -> Result<OwnedFd, GitError> {
        rustix::fs::openat2(
            &self.root,
            rel,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| GitError::Scratch {
            what: format!("cannot open {} in the temporary directory", rel.display()),
            source: e.into(),
        })
    }

    /// Makes the directory `rel` (and its parents) in the private directory; its full path.
    pub(crate) fn make_dir(&self, rel: &Path) -> Result<PathBuf, GitError> {
        let mut at = PathBuf::new();
        for c in rel.components() {
            let parent = self.open_beneath(
                if at.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    &at
                },
                OFlags::RDONLY | OFlags::DIRECTORY,
                0,
            )?;
            let made = match rustix::fs::mkdirat(&parent, c.as_os_str(), Mode::from_raw_mode(0o700))
            {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => {
                    return Err(GitError::Scratch {
                        what: format!("cannot make {}", at.join(c).display()),
                        source: e.into(),
                    });
                }
            };
            at.push(c);
            if made {
                self.give(&self.open_beneath(&at, OFlags::RDONLY | OFlags::DIRECTORY, 0)?)?;
            }
        }
        Ok(self.scratch().join(at))
    }

    /// Creates the file `rel` of the private directory for git (its parent must exist): its
    /// full path and the file; `None` when it exists.
    pub(crate) fn create_file(&self, rel: &Path) -> Result<Option<(PathBuf, File)>, GitError> {
        let fd = match self.open_beneath(rel, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, 0o600)
        {
            Ok(fd) => fd,
            Err(GitError::Scratch { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.give(&fd)?;
        Ok(Some((self.scratch().join(rel), File::from(fd))))
    }

    /// Object directories git also reads (`GIT_ALTERNATE_OBJECT_DIRECTORIES`) from now on, or
    /// none.
    pub(crate) fn set_alternates(&mut self, dir: Option<PathBuf>) {
        self.alternates = dir;
    }

    /// The author and committer of commits made from now on.
    pub(crate) fn set_identity(&mut self, name: &str, email: &str) {
        self.identity = Some((name.to_owned(), email.to_owned()));
    }

    fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.env_clear()
            .env("PATH", SAFE_PATH)
            .env("HOME", "/nonexistent")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_NO_LAZY_FETCH", "1")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_DIR", &self.git_dir)
            .env("GIT_INDEX_FILE", self.scratch().join("index"))
            .current_dir(self.scratch());
        if let Some(alt) = &self.alternates {
            cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", alt);
        }
        if let Some((name, email)) = &self.identity {
            for who in ["AUTHOR", "COMMITTER"] {
                cmd.env(format!("GIT_{who}_NAME"), name)
                    .env(format!("GIT_{who}_EMAIL"), email);
            }
        }
        cmd.arg("--no-pager");
        for o in OVERRIDES {
            cmd.arg("-c").arg(o);
        }
        cmd.args(args);
        cmd
    }

    fn spawn(&self, cmd: &mut Command, what: &str) -> Result<Child, GitError> {
        let spawned = match self.owner {
            None => cmd.spawn(),
            Some((uid, gid)) => paddock_confine::user::spawn_mapped_by(cmd, move |pid| {
                let write = |f: &str, text: String| {
                    std::fs::write(format!("/proc/{pid}/{f}"), text).map_err(|e| {
                        paddock_confine::user::UserModeError::Io {
                            what: format!("cannot write git's {f}"),
                            source: e,
                        }
                    })
                };
                write("uid_map", format!("0 {uid} 1\n"))?;
                write("gid_map", format!("0 {gid} 1\n"))
            })
            .map_err(std::io::Error::other),
        };
        spawned.map_err(|source| GitError::Spawn {
            what: what.to_owned(),
            source,
        })
    }

    /// A new file of the private directory holding `bytes`, open at its start: git's stdin.
    /// A file rather than a pipe: a git that fails before it has read everything must not end
    /// this process with SIGPIPE (commands that print restore its default action).
    fn input_file(&self, bytes: &[u8]) -> Result<File, GitError> {
        let n = self.inputs.get();
        self.inputs.set(n + 1);
        let rel = PathBuf::from(format!("stdin-{n}"));
        let fd = self.open_beneath(&rel, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, 0o600)?;
        let mut f = File::from(fd);
        f.write_all(bytes)
            .and_then(|()| f.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| GitError::Scratch {
                what: format!("cannot write {}", rel.display()),
                source: e,
            })?;
        Ok(f)
    }

    /// Runs `git ARGS` with `input` on its stdin and its stdout captured, or written to the
    /// private directory's new file `to` (relative to it).
    pub(crate) fn exec(
        &self,
        args: &[&OsStr],
        input: Input<'_>,
        to: Option<&Path>,
    ) -> Result<Finished, GitError> {
        let what = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = self.command(args);
        cmd.stderr(Stdio::piped());
        cmd.stdin(match input {
            Input::Null => Stdio::null(),
            Input::Bytes(b) => Stdio::from(self.input_file(b)?),
            Input::File(p) => Stdio::from(self.open_beneath(p, OFlags::RDONLY, 0)?),
        });
        cmd.stdout(match to {
            None => Stdio::piped(),
            Some(p) => Stdio::from(self.open_beneath(
                p,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                0o600,
            )?),
        });
        let child = self.spawn(&mut cmd, &what)?;
        let out = child.wait_with_output().map_err(|source| GitError::Spawn {
            what: what.clone(),
            source,
        })?;
        let mut stderr = String::new();
        let _ = (&out.stderr[..])
            .take(MAX_STDERR as u64)
            .read_to_string(&mut stderr);
        Ok(Finished {
            ok: out.status.success(),
            stdout: out.stdout,
            status: out.status.to_string(),
            stderr: crate::review::quoted(stderr.trim().as_bytes()),
        })
    }

    /// Runs `git ARGS` (input on stdin); its stdout, or the error when it fails.
    pub(crate) fn run(&self, args: &[&OsStr], input: Input<'_>) -> Result<Vec<u8>, GitError> {
        self.exec(args, input, None)?.checked(args)
    }

    /// [`HostGit::run`], the output as one trimmed line of text.
    pub(crate) fn line(&self, args: &[&str]) -> Result<String, GitError> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = self.run(&args, Input::Null)?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Whether `git ARGS` exits 0 (a failure to start is an error).
    pub(crate) fn succeeds(&self, args: &[&str]) -> Result<bool, GitError> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        Ok(self.exec(&args, Input::Null, None)?.ok)
    }
}

impl HostGit {
    /// `refs/heads/NAME` for a branch the repository does not have yet, when git accepts the
    /// name.
    pub(crate) fn new_branch(&self, name: &str) -> Result<String, GitError> {
        let odd = name.is_empty()
            || name.starts_with('-')
            || name.contains("@{")
            || name == "HEAD"
            || name.chars().any(char::is_control);
        if odd || !self.succeeds(&["check-ref-format", "--branch", name])? {
            return Err(GitError::BadBranch(name.to_owned()));
        }
        let refname = format!("refs/heads/{name}");
        if self.succeeds(&["show-ref", "--verify", "--quiet", &refname])? {
            return Err(GitError::BranchExists(name.to_owned()));
        }
        Ok(refname)
    }

    /// The commit `HEAD` names; `None` when it names a branch with no commit yet.
    pub(crate) fn head_commit(&self) -> Result<Option<String>, GitError> {
        let args = ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"].map(OsStr::new);
        let found = self.exec(&args, Input::Null, None)?;
        if found.ok {
            let id = String::from_utf8_lossy(&found.stdout).trim().to_owned();
            if paddock_review::export::is_object_id(&id) {
                return Ok(Some(id));
            }
            return Err(GitError::Head(format!("git answered {id:?}")));
        }
        let branch = self.exec(
            &["symbolic-ref", "--quiet", "HEAD"].map(OsStr::new),
            Input::Null,
            None,
        )?;
        let name = String::from_utf8_lossy(&branch.stdout).trim().to_owned();
        if branch.ok && !self.succeeds(&["show-ref", "--verify", "--quiet", &name])? {
            return Ok(None);
        }
        Err(GitError::Head(found.stderr))
    }

    /// Points the new branch `refname` at `id`; the update fails if the branch exists by then
    /// (its old value must be "none").
    pub(crate) fn create_ref(&self, refname: &str, id: &str, why: &str) -> Result<(), GitError> {
        let zero = "0".repeat(id.len());
        self.line(&["update-ref", "-m", why, refname, id, &zero])
            .map(|_| ())
    }
}

impl Finished {
    /// The stdout of a success, else the error.
    pub(crate) fn checked(self, args: &[&OsStr]) -> Result<Vec<u8>, GitError> {
        if self.ok {
            return Ok(self.stdout);
        }
        Err(GitError::Failed {
            what: args
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            status: self.status,
            stderr: self.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_workspace_with_a_git_directory_will_do() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let ws = real.as_path();
        let err = |ws: &Path| check_repository(ws).unwrap_err().to_string();
        assert!(err(ws).contains("no .git directory"), "{}", err(ws));
        for d in ["HEAD", "objects", "refs"] {
            std::fs::create_dir(ws.join(d)).unwrap();
        }
        assert!(err(ws).contains("bare"), "{}", err(ws));
        std::fs::write(ws.join(".git"), "gitdir: /elsewhere\n").unwrap();
        assert!(err(ws).contains("is a file"), "{}", err(ws));
        std::fs::remove_file(ws.join(".git")).unwrap();
        std::os::unix::fs::symlink("/", ws.join(".git")).unwrap();
        assert!(err(ws).contains("not followed"), "{}", err(ws));
        std::fs::remove_file(ws.join(".git")).unwrap();
        std::fs::create_dir(ws.join(".git")).unwrap();
        assert_eq!(check_repository(ws).unwrap(), ws.join(".git"));
        let link = ws.join("link");
        std::os::unix::fs::symlink(ws, &link).unwrap();
        assert!(err(&link).contains("through a symlink"), "{}", err(&link));
    }
}

//! `paddock diff NAME --commits` and `paddock apply NAME --commits --branch BRANCH`: the
//! commits an agent made with git inside a review-mode sandbox, listed, and brought into the
//! host's repository as a new branch (the working tree, index and `HEAD` untouched).
//!
//! The agent's commits are objects and refs in the layer's `.git`. The review helper reads them
//! (the sandbox's `HEAD` as the overlay shows it, checked to be a full object id, and the loose
//! objects and packs the layer holds, by checked names): the host's git then sees them only as
//! a private directory of copies named as an extra object directory. A pack gets its index from
//! `git index-pack`, which reads every object in it; nothing else the sandbox wrote there (an
//! index, `info/alternates`, a commit-graph) is used. The import is `git pack-objects` of the
//! commits the host lacks, unpacked into the host with `git unpack-objects --strict`, which
//! checks every object and its links, then a connectivity check without the copies before the
//! branch is created.

use std::ffi::OsStr;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use paddock_review::export::{ObjectFile, Reader, Record};

use crate::branch::{git_err, prepare};
use crate::hostgit::{HostGit, Input};
use crate::review::Target;

/// The sandbox's `HEAD`.
struct SandboxHead {
    id: String,
    branch: Option<String>,
}

impl SandboxHead {
    /// `main` for `refs/heads/main`, else a description.
    fn describe(&self) -> String {
        match &self.branch {
            Some(b) => b.strip_prefix("refs/heads/").unwrap_or(b).to_owned(),
            None => format!("detached HEAD {}", &self.id[..12]),
        }
    }
}

/// Reads the helper's `commits` stream: the object files go to `objects/` of the private
/// directory (packs indexed by git), which becomes git's extra object directory.
/// `Ok(Ok(None))`: the sandbox's `HEAD` has no commit yet; `Ok(Err(code))`: the helper failed
/// (and said why).
fn load(t: &Target, git: &mut HostGit) -> Result<Result<Option<SandboxHead>, i32>> {
    let mut child = t.spawn("commits", &[], &[], true)?;
    let stream = child
        .stdout
        .take()
        .context("the review helper gave no output")?;
    let read = read_objects(stream, git);
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().context("cannot wait for the review helper")?;
    if !status.success() {
        return Ok(Err(status.code().unwrap_or(2)));
    }
    let Some((head, packs)) = read? else {
        return Ok(Ok(None));
    };
    for pack in packs {
        let args = [OsStr::new("index-pack"), pack.as_os_str()];
        let done = git.exec(&args, Input::Null, None).map_err(git_err)?;
        if !done.ok {
            eprintln!(
                "paddock: warning: a pack of the sandbox's repository is damaged and was left out ({})",
                pack.display()
            );
            let _ = std::fs::remove_file(&pack);
        }
    }
    let objects = git.scratch().join("objects");
    git.set_alternates(Some(objects));
    Ok(Ok(Some(head)))
}

fn read_objects(
    stream: impl Read,
    git: &HostGit,
) -> Result<Option<(SandboxHead, Vec<std::path::PathBuf>)>> {
    let mut r = Reader::new(BufReader::new(stream));
    let head = match r.next_record()? {
        Record::Head { id, branch } => SandboxHead { id, branch },
        Record::End => return Ok(None),
        other => bail!("the review helper sent {other:?} before HEAD"),
    };
    git.make_dir(Path::new("objects/pack")).map_err(git_err)?;
    let mut packs = Vec::new();
    loop {
        match r.next_record()? {
            Record::Object { kind, name, .. } => {
                let rel = match kind {
                    ObjectFile::Loose => {
                        let (dir, _) = name.split_once('/').context("a loose object's name")?;
                        git.make_dir(&Path::new("objects").join(dir))
                            .map_err(git_err)?;
                        Path::new("objects").join(&name)
                    }
                    ObjectFile::Pack => Path::new("objects/pack").join(&name),
                };
                // Named twice: the first copy stands.
                let Some((path, f)) = git.create_file(&rel).map_err(git_err)? else {
                    continue;
                };
                let mut w = BufWriter::new(f);
                r.data(&mut w)?;
                w.flush().context("cannot save an object file")?;
                if kind == ObjectFile::Pack {
                    packs.push(path);
                }
            }
            Record::End => return Ok(Some((head, packs))),
            other => bail!("the review helper sent an unexpected record: {other:?}"),
        }
    }
}

/// The commits reachable from `head` that no ref of the host reaches, newest first:
/// `(abbreviated id, subject)` lines, control characters made visible.
fn new_commits(git: &HostGit, head: &SandboxHead) -> Result<Vec<String>> {
    let args = [
        "rev-list",
        "--no-commit-header",
        "--format=%h %s",
        &head.id,
        "--not",
        "--all",
    ]
    .map(OsStr::new);
    let done = git.exec(&args, Input::Null, None).map_err(git_err)?;
    if !done.ok {
        bail!(
            "the sandbox's HEAD {} is not a commit that its repository or the host's holds (was it damaged inside?)",
            head.id
        );
    }
    Ok(String::from_utf8_lossy(&done.stdout)
        .lines()
        .map(crate::review_helper::visible)
        .collect())
}

/// `paddock diff NAME --commits`.
pub fn diff_commits(name: &str) -> Result<i32> {
    let t = Target::find(name)?;
    let mut git = HostGit::open(t.spec.workspace.as_path()).map_err(git_err)?;
    if !t.has_changes() {
        println!("no commits");
        return Ok(0);
    }
    let head = match load(&t, &mut git)? {
        Ok(Some(h)) => h,
        Ok(None) => {
            println!("no commits");
            return Ok(0);
        }
        Err(code) => return Ok(code),
    };
    let commits = new_commits(&git, &head)?;
    if commits.is_empty() {
        println!("no commits");
        return Ok(0);
    }
    eprintln!(
        "paddock: {} commit(s) on the sandbox's {} that the host's repository does not have:",
        commits.len(),
        head.describe()
    );
    for c in &commits {
        println!("{c}");
    }
    eprintln!(
        "paddock: `paddock apply {} --commits --branch BRANCH` makes them a branch of the host's repository",
        t.spec.name
    );
    Ok(0)
}

/// `paddock apply NAME --commits --branch BRANCH`.
pub fn apply_commits(name: &str, branch: &str) -> Result<i32> {
    let t = Target::find(name)?;
    let (mut git, refname) = prepare(&t, branch)?;
    if !t.has_changes() {
        eprintln!("paddock: {} made no commits", t.spec.name);
        return Ok(1);
    }
    let head = match load(&t, &mut git)? {
        Ok(Some(h)) => h,
        Ok(None) => {
            eprintln!(
                "paddock: {} made no commits (its HEAD names a branch with none); no branch was made",
                t.spec.name
            );
            return Ok(1);
        }
        Err(code) => return Ok(code),
    };
    let commits = new_commits(&git, &head)?;
    if commits.is_empty() {
        eprintln!(
            "paddock: {} made no commits the host's repository lacks; no branch was made",
            t.spec.name
        );
        return Ok(1);
    }
    // What the host lacks, packed from the copies and unpacked into the host, each object
    // checked there.
    let list = Path::new("import.list");
    let pack = Path::new("import.pack");
    let walk = [
        "rev-list",
        "--objects",
        "--no-object-names",
        &head.id,
        "--not",
        "--all",
    ]
    .map(OsStr::new);
    git.exec(&walk, Input::Null, Some(list))
        .map_err(git_err)?
        .checked(&walk)
        .map_err(git_err)?;
    let pack_args = ["pack-objects", "--stdout", "-q"].map(OsStr::new);
    git.exec(&pack_args, Input::File(list), Some(pack))
        .map_err(git_err)?
        .checked(&pack_args)
        .map_err(git_err)?;
    git.set_alternates(None);
    let unpack = ["unpack-objects", "--strict", "-q"].map(OsStr::new);
    git.exec(&unpack, Input::File(pack), None)
        .map_err(git_err)?
        .checked(&unpack)
        .map_err(git_err)?;
    let connected = [
        "rev-list",
        "--objects",
        "--quiet",
        &head.id,
        "--not",
        "--all",
    ]
    .map(OsStr::new);
    if !git.exec(&connected, Input::Null, None).map_err(git_err)?.ok {
        bail!(
            "the sandbox's commits are incomplete in the host's repository after the import; no branch was made"
        );
    }
    git.create_ref(
        &refname,
        &head.id,
        &format!("paddock: commits from sandbox {}", t.spec.name),
    )
    .map_err(git_err)?;
    println!(
        "branch {branch} at {}: {} commit(s) from sandbox {} ({})",
        head.id,
        commits.len(),
        t.spec.name,
        head.describe()
    );
    for c in &commits {
        println!("  {c}");
    }
    eprintln!(
        "paddock: the working tree, the index and HEAD are as they were; `git log {branch}` lists the commits"
    );
    Ok(0)
}

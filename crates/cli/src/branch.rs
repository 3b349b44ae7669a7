//! `paddock apply NAME --branch BRANCH [PATH…]`: the accepted changes as a commit on a new
//! branch of the workspace's repository, for users who review in their own git tools. The
//! working tree, the index and `HEAD` stay as they are; the layer keeps its changes.
//!
//! The review helper (confined, unprivileged) reads the layer and writes the agent's version
//! of each selected change ([`paddock_review::export`]); this process saves the contents in a
//! private directory and has the host's git ([`crate::hostgit`], plumbing only, hooks and
//! program-running config off) hash them, build the tree in a temporary index
//! ([`crate::branch_plan`]), write the commit and create the branch, never moving one that
//! exists.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use paddock_review::export::{Reader, Record};

use crate::branch_plan::{self, Edit, Incoming, Tree};
use crate::error::usage;
use crate::hostgit::{GitError, HostGit, Input};
use crate::review::{Target, quoted, relative};

/// At most this many changed paths are named in the commit message.
const MESSAGE_PATHS: usize = 500;

/// A [`GitError`] the user can act on is a usage error (exit 2); others are failures.
pub(crate) fn git_err(e: GitError) -> anyhow::Error {
    match e {
        GitError::Missing
        | GitError::NotRepository(_)
        | GitError::BadBranch(_)
        | GitError::BranchExists(_) => usage(e.to_string()),
        e => e.into(),
    }
}

/// Opens the host's git on `t`'s workspace, checked, and the new branch's ref name.
pub(crate) fn prepare(t: &Target, branch: &str) -> Result<(HostGit, String)> {
    let mut git = HostGit::open(t.spec.workspace.as_path()).map_err(git_err)?;
    let refname = git.new_branch(branch).map_err(git_err)?;
    let n = &t.spec.name;
    git.set_identity(
        &format!("paddock sandbox {n}"),
        &format!("{n}@paddock.invalid"),
    );
    Ok((git, refname))
}

/// The helper's stream of changes: what each is, its content saved in the private directory
/// (`blobs/N`), and what was skipped.
struct Exported {
    incoming: Vec<Incoming>,
    blobs: Vec<PathBuf>,
    skipped: Vec<(paddock_review::RelPath, String)>,
}

fn read_export(stream: impl Read, git: &HostGit) -> Result<Exported> {
    git.make_dir(Path::new("blobs")).map_err(git_err)?;
    let mut r = Reader::new(BufReader::new(stream));
    let mut out = Exported {
        incoming: Vec::new(),
        blobs: Vec::new(),
        skipped: Vec::new(),
    };
    loop {
        match r.next_record()? {
            Record::Change {
                kind,
                path,
                from,
                new,
                ..
            } => {
                let blob = if new.has_data() {
                    let n = out.blobs.len();
                    let (file, f) = git
                        .create_file(&Path::new("blobs").join(n.to_string()))
                        .map_err(git_err)?
                        .context("a saved content's name is taken")?;
                    let mut w = BufWriter::new(f);
                    r.data(&mut w)?;
                    w.flush().context("cannot save a change's content")?;
                    out.blobs.push(file);
                    Some(n)
                } else {
                    None
                };
                out.incoming.push(Incoming {
                    kind,
                    path,
                    from,
                    new,
                    blob,
                });
            }
            Record::Skipped { path, reason } => out.skipped.push((path, reason)),
            Record::End => return Ok(out),
            other => bail!("the review helper sent an unexpected record: {other:?}"),
        }
    }
}

/// Hashes the blobs the edits use into the repository: blob index to object id.
fn hash_blobs(git: &HostGit, edits: &[Edit], blobs: &[PathBuf]) -> Result<BTreeMap<usize, String>> {
    let used: Vec<usize> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::Put { blob, .. } => Some(*blob),
            Edit::Remove(_) => None,
        })
        .collect();
    if used.is_empty() {
        return Ok(BTreeMap::new());
    }
    // The private directory's own names: no newline in them.
    let mut list = Vec::new();
    for i in &used {
        let p = blobs.get(*i).context("a change names no saved content")?;
        list.extend_from_slice(p.as_os_str().as_encoded_bytes());
        list.push(b'\n');
    }
    let args = ["hash-object", "-w", "--no-filters", "--stdin-paths"].map(OsStr::new);
    let out = git.run(&args, Input::Bytes(&list)).map_err(git_err)?;
    let ids: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_owned)
        .collect();
    if ids.len() != used.len() || !ids.iter().all(|i| paddock_review::export::is_object_id(i)) {
        bail!(
            "git hash-object answered {} ids for {} files",
            ids.len(),
            used.len()
        );
    }
    Ok(used.into_iter().zip(ids).collect())
}

/// The tree of `commit` (none: empty).
fn tree_of(git: &HostGit, commit: Option<&str>) -> Result<Tree> {
    let Some(c) = commit else {
        return Ok(Tree::new());
    };
    let args = ["ls-tree", "-r", "-z", "--full-tree", c].map(OsStr::new);
    let out = git.run(&args, Input::Null).map_err(git_err)?;
    branch_plan::parse_ls_tree(&out).context("cannot read git ls-tree's listing of HEAD")
}

/// The commit message: the sandbox, then the changes.
fn message(sandbox: &str, listed: &[String]) -> String {
    let mut m = format!("Changes from paddock sandbox {sandbox}\n\n");
    for l in listed.iter().take(MESSAGE_PATHS) {
        m.push_str(l);
        m.push('\n');
    }
    if listed.len() > MESSAGE_PATHS {
        m.push_str(&format!("… and {} more\n", listed.len() - MESSAGE_PATHS));
    }
    m
}

/// `paddock apply NAME --branch BRANCH [PATH…]`.
pub fn apply_branch(name: &str, paths: &[OsString], branch: &str) -> Result<i32> {
    let t = Target::find(name)?;
    let rel = relative(paths, t.spec.workspace.as_path())?;
    let (git, refname) = prepare(&t, branch)?;
    if !t.has_changes() {
        eprintln!("paddock: {} has no changes waiting for review", t.spec.name);
        return Ok(0);
    }
    let parent = git.head_commit().map_err(git_err)?;
    let base = tree_of(&git, parent.as_deref())?;

    let mut child = t.spawn("export", &[], &rel, true)?;
    let stream = child
        .stdout
        .take()
        .context("the review helper gave no output")?;
    let read = read_export(stream, &git);
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().context("cannot wait for the review helper")?;
    if !status.success() {
        // The helper said why.
        return Ok(status.code().unwrap_or(2));
    }
    let exported = read?;

    let plan = branch_plan::plan(&base, &exported.incoming);
    let (internal, mut skipped): (Vec<_>, Vec<_>) = exported
        .skipped
        .into_iter()
        .partition(|(_, why)| why == paddock_review::GIT_INTERNAL);
    skipped.extend(plan.skipped.iter().cloned());
    if !internal.is_empty() {
        println!(
            "skipped {} change(s) inside .git: git internals (`paddock diff {n} --commits` lists the agent's commits, `paddock apply {n} --commits --branch BRANCH` brings them)",
            internal.len(),
            n = t.spec.name
        );
    }
    for (p, why) in &skipped {
        println!(
            "skipped {}: {}",
            quoted(p.as_bytes()),
            quoted(why.as_bytes())
        );
    }
    let ids = hash_blobs(&git, &plan.edits, &exported.blobs)?;
    let tree = branch_plan::apply(&base, &plan.edits, &ids);
    if plan.listed.is_empty() || tree == base {
        eprintln!(
            "paddock: nothing to commit: the selected changes leave HEAD's tree as it is; no branch was made"
        );
        return Ok(1);
    }
    git.run(
        &["update-index", "-z", "--index-info"].map(OsStr::new),
        Input::Bytes(&branch_plan::index_info(&tree)),
    )
    .map_err(git_err)?;
    let tree_id = git.line(&["write-tree"]).map_err(git_err)?;
    let mut args = vec!["commit-tree", "--no-gpg-sign"];
    if let Some(p) = &parent {
        args.extend(["-p", p]);
    }
    args.extend(["-F", "-", &tree_id]);
    let msg = message(&t.spec.name.to_string(), &plan.listed);
    let out = git
        .run(
            &args.iter().map(OsStr::new).collect::<Vec<_>>(),
            Input::Bytes(msg.as_bytes()),
        )
        .map_err(git_err)?;
    let commit = String::from_utf8_lossy(&out).trim().to_owned();
    if !paddock_review::export::is_object_id(&commit) {
        bail!("git commit-tree answered {commit:?}");
    }
    git.create_ref(
        &refname,
        &commit,
        &format!("paddock: changes from sandbox {}", t.spec.name),
    )
    .map_err(git_err)?;
    println!(
        "branch {branch} at {commit}: {} change(s) from sandbox {} on {}",
        plan.listed.len(),
        t.spec.name,
        parent.as_deref().map_or(
            "no parent (the repository had no commit)".to_owned(),
            |p| format!("HEAD {}", &p[..12])
        )
    );
    for l in &plan.listed {
        println!("  {l}");
    }
    let show = if parent.is_some() {
        format!("`git diff HEAD {branch}` shows the commit, `git log {branch}` lists it")
    } else {
        format!("`git show {branch}` shows the commit")
    };
    eprintln!(
        "paddock: the working tree, the index and HEAD are as they were, and the changes still wait in the sandbox; {show}"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_message_names_the_sandbox_and_the_changes() {
        let listed: Vec<String> = (0..502).map(|i| format!("A f{i}")).collect();
        let m = message("box", &listed);
        assert!(m.starts_with("Changes from paddock sandbox box\n\nA f0\nA f1\n"));
        assert!(m.ends_with("A f499\n… and 2 more\n"), "{m}");
    }
}

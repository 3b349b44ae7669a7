//! `paddock __review OP --since NS [FLAGS] -- PATH…`: the review helper's process
//! (`paddock_confine::review`). It confines itself first, then runs one operation of the
//! review engine (`paddock_review`) on its three directories and prints the result:
//!
//! - `capture`: records how the host looks for the changes not yet recorded;
//! - `diff` with `--patch`, `--stat`, `--name-only` or `--json`;
//! - `list`: the changes with their diffs, as JSON, for `paddock review`;
//! - `apply` with `--force`, `--merge`, `--settle`; `discard` with `--settle`;
//! - `export`: the selected changes with the agent's content, and `commits`: the sandbox's git
//!   `HEAD` and object files, as a [`paddock_review::export`] stream (for `apply --branch` and
//!   `--commits`).
//!
//! Exit status: 0 done, 1 some selected change was refused (a conflict), 2 an error.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paddock_review::{ApplyOptions, Change, ChangeKind, Layer, RelPath};

/// An error with its causes: `what: cause: cause`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        text.push_str(&format!(": {c}"));
        cur = c.source();
    }
    text
}

/// The request, from the command line the CLI or the supervisor wrote.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    op: String,
    since: u128,
    format: String,
    force: bool,
    merge: bool,
    settle: bool,
    workspace: Option<OsString>,
    paths: Vec<Vec<u8>>,
}

fn parse(args: Vec<OsString>) -> Result<Request, String> {
    let mut it = args.into_iter();
    let mut req = Request {
        op: it
            .next()
            .and_then(|o| o.into_string().ok())
            .ok_or("no operation")?,
        format: "--patch".into(),
        ..Request::default()
    };
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--") => {
                req.paths = it.map(|p| p.as_bytes().to_vec()).collect();
                break;
            }
            Some("--since") => {
                req.since = it
                    .next()
                    .and_then(|s| s.to_str()?.parse().ok())
                    .ok_or("--since needs nanoseconds")?;
            }
            Some("--workspace") => req.workspace = it.next(),
            Some("--force") => req.force = true,
            Some("--merge") => req.merge = true,
            Some("--settle") => req.settle = true,
            Some(f @ ("--patch" | "--stat" | "--name-only" | "--json")) => req.format = f.into(),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(req)
}

/// Control characters other than newline and tab, made visible (`^[`): a diff shows what the
/// sandbox wrote, and a terminal must not take any of it as a command.
pub(crate) fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn shown(p: &RelPath) -> String {
    p.escaped().0.into_owned()
}

/// `(+added, -removed)` lines of a unified diff.
fn counts(patch: &str) -> (usize, usize) {
    let mut n = (0, 0);
    for l in patch.lines() {
        if l.starts_with("+++") || l.starts_with("---") {
            continue;
        }
        if l.starts_with('+') {
            n.0 += 1;
        } else if l.starts_with('-') {
            n.1 += 1;
        }
    }
    n
}

fn letter(c: &Change) -> &'static str {
    match c.kind {
        ChangeKind::Added => "A",
        ChangeKind::Modified => "M",
        ChangeKind::Deleted => "D",
        ChangeKind::Renamed { .. } => "R",
        ChangeKind::Mode => "X",
        ChangeKind::TypeChanged => "T",
        ChangeKind::Special => "S",
    }
}

fn title(c: &Change) -> String {
    match &c.kind {
        ChangeKind::Renamed { from } => format!("{} -> {}", shown(from), shown(&c.path)),
        _ => shown(&c.path),
    }
}

fn notes(c: &Change) -> Vec<String> {
    let mut n = Vec::new();
    if let Some(r) = &c.risk {
        n.push(format!("risky: {r}"));
    }
    if let Some(r) = &c.conflict {
        n.push(format!("conflict: {r}"));
    }
    if c.git_internal {
        n.push(paddock_review::GIT_INTERNAL.into());
    }
    n
}

fn diff(layer: &Layer, changes: &[Change], format: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock<'_>, s: &str| {
        out.write_all(s.as_bytes()).map_err(|e| chain(&e))
    };
    match format {
        "--json" => {
            let text = serde_json::to_string_pretty(changes).map_err(|e| chain(&e))?;
            w(&mut out, &format!("{text}\n"))?;
        }
        "--name-only" => {
            for c in changes {
                w(&mut out, &format!("{}\n", shown(&c.path)))?;
            }
        }
        "--stat" => {
            let (mut risky, mut conflicts) = (0, 0);
            for c in changes {
                let patch = layer.patch(c).map_err(|e| chain(&e))?;
                let (add, del) = counts(&patch);
                let mark = match (c.conflict.is_some(), c.risk.is_some()) {
                    (true, _) => "C",
                    (false, true) => "!",
                    _ => " ",
                };
                risky += usize::from(c.risk.is_some());
                conflicts += usize::from(c.conflict.is_some());
                let lines = if c.binary {
                    "binary".to_owned()
                } else {
                    format!("+{add} -{del}")
                };
                let mut line = format!("{mark} {} {}  ({lines})", letter(c), title(c));
                for n in notes(c) {
                    line.push_str(&format!("  [{n}]"));
                }
                w(&mut out, &format!("{}\n", visible(&line)))?;
            }
            w(
                &mut out,
                &format!(
                    "{} change(s), {risky} risky, {conflicts} in conflict\n",
                    changes.len()
                ),
            )?;
        }
        _ => {
            for c in changes {
                let mut head = String::new();
                for n in notes(c) {
                    head.push_str(&format!("# {n}\n"));
                }
                let patch = layer.patch(c).map_err(|e| chain(&e))?;
                w(&mut out, &visible(&head))?;
                w(&mut out, &visible(&patch))?;
                if !patch.ends_with('\n') && !patch.is_empty() {
                    w(&mut out, "\n")?;
                }
            }
        }
    }
    Ok(())
}

/// What an apply or discard did not do (`done`: the verb for what it did), on stderr.
fn refusals(done: &str, refused: &[paddock_review::Refusal], unmatched: &[RelPath]) {
    for r in refused {
        eprintln!(
            "paddock: not {done} {}: {}",
            visible(&shown(&r.path)),
            visible(&r.reason)
        );
    }
    for p in unmatched {
        eprintln!("paddock: no change at {}", visible(&shown(p)));
    }
}

/// `list`: every change with its diff, for the interactive review.
fn list(layer: &Layer, changes: &[Change]) -> Result<(), String> {
    let mut items = Vec::new();
    for c in changes {
        let patch = layer.patch(c).map_err(|e| chain(&e))?;
        items.push(serde_json::json!({
            "raw": c.path.as_bytes(),
            "from_raw": match &c.kind {
                ChangeKind::Renamed { from } => Some(from.as_bytes()),
                _ => None,
            },
            "kind": c.kind.name(),
            "risk": c.risk,
            "conflict": c.conflict,
            "git_internal": c.git_internal,
            "patch": visible(&patch),
        }));
    }
    let text = serde_json::to_string(&items).map_err(|e| chain(&e))?;
    println!("{text}");
    Ok(())
}

fn run(req: Request, fds: [std::os::fd::RawFd; 3]) -> Result<i32, String> {
    let select = req
        .paths
        .iter()
        .map(|p| RelPath::new(p.clone()).map_err(|e| chain(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let since = UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(req.since).map_err(|_| "--since is too large")?);
    let since = if req.since == 0 {
        SystemTime::now()
    } else {
        since
    };
    // SAFETY: the descriptors were given to this process by its parent for this use
    // (`paddock_confine::review::spawn`, checked by `confine_self`) and are taken over
    // exactly once, here.
    let (upper, ws, state) = unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
            OwnedFd::from_raw_fd(fds[2]),
        )
    };
    let name = req
        .workspace
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "the workspace".into());
    let layer = Layer::from_fds(upper, ws, &name, state).map_err(|e| chain(&e))?;
    match req.op.as_str() {
        "capture" => {
            layer.capture(since).map_err(|e| chain(&e))?;
            Ok(0)
        }
        "diff" => {
            let changes = layer.changes(&select, since).map_err(|e| chain(&e))?;
            diff(&layer, &changes, &req.format)?;
            Ok(0)
        }
        "list" => {
            let changes = layer.changes(&select, since).map_err(|e| chain(&e))?;
            list(&layer, &changes)?;
            Ok(0)
        }
        "apply" => {
            let opts = ApplyOptions {
                force: req.force,
                merge: req.merge,
                settle: req.settle,
            };
            let report = layer.apply(&select, opts, since).map_err(|e| chain(&e))?;
            for p in &report.applied {
                let how = if report.merged.contains(p) {
                    "merged"
                } else {
                    "applied"
                };
                println!("{how} {}", visible(&shown(p)));
            }
            for r in &report.skipped {
                println!(
                    "skipped {}: {}",
                    visible(&shown(&r.path)),
                    visible(&r.reason)
                );
            }
            refusals("applied", &report.refused, &report.unmatched);
            if !report.refused.is_empty() {
                eprintln!("paddock: {} change(s) not applied", report.refused.len());
                return Ok(1);
            }
            Ok(0)
        }
        "export" | "commits" => {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            if req.op == "export" {
                layer.export(&select, since, &mut out)
            } else {
                layer.export_commits(&mut out)
            }
            .map_err(|e| chain(&e))?;
            out.flush().map_err(|e| chain(&e))?;
            Ok(0)
        }
        "discard" => {
            let report = layer.discard(&select).map_err(|e| chain(&e))?;
            for p in &report.discarded {
                println!("discarded {}", visible(&shown(p)));
            }
            refusals("discarded", &report.refused, &report.unmatched);
            Ok(i32::from(!report.refused.is_empty()))
        }
        other => Err(format!("unknown operation {other}")),
    }
}

/// The process's entry: confines itself, then runs the request in `args`.
pub fn main(args: Vec<OsString>) -> i32 {
    let fds = match paddock_confine::review::confine_self() {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("paddock: the review helper stopped: {e}");
            return 2;
        }
    };
    match parse(args).and_then(|r| run(r, fds)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("paddock: {}", visible(&e));
            2
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_parse_from_the_command_line() {
        let args = [
            "apply", "--since", "12", "--force", "--settle", "--", "a/b", "--c",
        ]
        .map(OsString::from)
        .to_vec();
        assert_eq!(
            parse(args).unwrap(),
            Request {
                op: "apply".into(),
                since: 12,
                format: "--patch".into(),
                force: true,
                settle: true,
                paths: vec![b"a/b".to_vec(), b"--c".to_vec()],
                ..Request::default()
            }
        );
        assert!(parse(vec!["diff".into(), "--evil".into()]).is_err());
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(visible("a\x1b[2Jb\tc\n"), "a^[[2Jb\tc\n");
        assert_eq!(visible("\u{9b}x\u{7f}"), "\\u{9b}x^?");
        assert_eq!(counts("--- a\n+++ b\n@@\n-x\n+y\n+z\n ctx\n"), (2, 1));
    }
}

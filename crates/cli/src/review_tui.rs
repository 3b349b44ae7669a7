//! `paddock review NAME`: the changes one at a time on the terminal (what it is, why it is
//! risky or in conflict, its diff), each accepted, rejected or skipped; then what was accepted
//! is applied and, when the sandbox is stopped, what was rejected is dropped. A line-based
//! prompt, so it works in any terminal, multiplexer or pty.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStringExt;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::error::usage;
use crate::review::{Target, apply_selected, quoted};

/// One change as the helper lists it (`list`).
#[derive(Debug, Deserialize)]
struct Item {
    /// The path's bytes, relative to the workspace.
    raw: Vec<u8>,
    /// For a rename, the path it came from.
    #[serde(default)]
    from_raw: Option<Vec<u8>>,
    /// Kind, as `diff --stat` names it.
    kind: String,
    #[serde(default)]
    risk: Option<String>,
    #[serde(default)]
    conflict: Option<String>,
    /// Never applied as a file (inside an existing git directory).
    #[serde(default)]
    git_internal: bool,
    /// The diff text (control characters already made visible).
    patch: String,
}

/// At most this much of the helper's listing is read (a bound on what a layer can make the
/// CLI hold).
const MAX_LISTING: u64 = 256 << 20;

/// Longest diff shown whole; a longer one shows its start and says how much is left.
const MAX_LINES: usize = 400;

enum Answer {
    Accept,
    Reject,
    Skip,
    Quit,
}

fn ask(item: &Item, index: usize, total: usize) -> Result<Answer> {
    let stdin = std::io::stdin();
    loop {
        eprint!(
            "[{}/{total}] apply this change to {}? [a]ccept [r]eject [s]kip [q]uit [?] ",
            index + 1,
            quoted(&item.raw)
        );
        std::io::stderr().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(Answer::Quit);
        }
        match line.trim() {
            "a" | "y" | "accept" => return Ok(Answer::Accept),
            "r" | "n" | "reject" => return Ok(Answer::Reject),
            "s" | "" | "skip" => return Ok(Answer::Skip),
            "q" | "quit" => return Ok(Answer::Quit),
            _ => eprintln!(
                "  a: write it to the workspace   r: drop it from the sandbox (when stopped)\n  s: decide later                  q: stop here (what was accepted is applied)"
            ),
        }
    }
}

fn show(item: &Item) {
    let mut out = std::io::stdout().lock();
    let path = quoted(&item.raw);
    let title = match &item.from_raw {
        Some(from) => format!("{} {} -> {path}", item.kind, quoted(from)),
        None => format!("{} {path}", item.kind),
    };
    let _ = writeln!(out, "\n=== {title}");
    if let Some(r) = &item.risk {
        let _ = writeln!(out, "!!! risky: {r}");
    }
    if let Some(c) = &item.conflict {
        let _ = writeln!(out, "!!! conflict: {c}");
    }
    let lines: Vec<&str> = item.patch.lines().collect();
    for l in lines.iter().take(MAX_LINES) {
        let _ = writeln!(out, "{l}");
    }
    if lines.len() > MAX_LINES {
        let _ = writeln!(
            out,
            "... {} more lines (`paddock diff NAME PATH` shows them all)",
            lines.len() - MAX_LINES
        );
    }
    let _ = out.flush();
}

/// Runs the review of `t`.
pub fn run(t: &Target) -> Result<i32> {
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(usage(format!(
            "review needs a terminal (stdin and stdout); scripts use `paddock diff {n}`, `paddock apply {n} PATH…` and `paddock discard {n} PATH…`",
            n = t.spec.name
        )));
    }
    let name = t.spec.name.clone();
    if !t.has_changes() {
        eprintln!("paddock: {name} has no changes waiting for review");
        return Ok(0);
    }
    let mut child = t.spawn("list", &[], &[], true)?;
    let mut text = String::new();
    child
        .stdout
        .take()
        .context("the review helper gave no output")?
        .take(MAX_LISTING)
        .read_to_string(&mut text)
        .context("cannot read the review helper's listing")?;
    let status = child.wait().context("cannot wait for the review helper")?;
    if !status.success() {
        return Ok(status.code().unwrap_or(2));
    }
    let items: Vec<Item> =
        serde_json::from_str(&text).context("the review helper's listing is not valid")?;
    let reviewable: Vec<&Item> = items.iter().filter(|i| !i.git_internal).collect();
    let internal = items.len() - reviewable.len();
    if internal > 0 {
        eprintln!(
            "paddock: {internal} change(s) inside git directories are not offered here (git's own files are never applied as files)"
        );
    }
    let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
    let total = reviewable.len();
    for (i, item) in reviewable.iter().enumerate() {
        show(item);
        match ask(item, i, total)? {
            Answer::Accept => accepted.push(OsString::from_vec(item.raw.clone())),
            Answer::Reject => {
                rejected.push(OsString::from_vec(item.raw.clone()));
                if let Some(from) = &item.from_raw {
                    rejected.push(OsString::from_vec(from.clone()));
                }
            }
            Answer::Skip => {}
            Answer::Quit => break,
        }
    }
    let mut code = 0;
    if !accepted.is_empty() {
        eprintln!("paddock: applying {} accepted change(s)", accepted.len());
        code = apply_selected(t, &accepted, false, false)?;
    }
    if !rejected.is_empty() {
        // A lock that cannot even be taken counts as held: the layer is left alone.
        match crate::review::lock_if_stopped(t).ok().flatten() {
            Some(lock) => {
                eprintln!("paddock: dropping {} rejected change(s)", rejected.len());
                let c = t.helper("discard", &["--settle"], &rejected)?;
                drop(lock);
                code = code.max(c);
            }
            None => eprintln!(
                "paddock: {name} is running: the rejected changes stay in its layer (`paddock discard {name} PATH…` once it stopped)"
            ),
        }
    }
    if accepted.is_empty() && rejected.is_empty() {
        eprintln!("paddock: nothing applied or dropped");
    }
    Ok(code)
}

//! `paddock prune`: removes stopped sandboxes, every one or those the filters pick (a
//! workspace, a time since last use; filters combine).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use paddock_core::{SandboxName, SandboxRecord, SandboxState};

use crate::commands::open;
use crate::error::usage;

/// Which stopped sandboxes `prune` removes; `Default` picks every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only sandboxes whose workspace is this directory or lies inside it.
    pub workspace: Option<PathBuf>,
    /// Only sandboxes last used at least this many seconds ago.
    pub older_than: Option<i64>,
}

impl Filter {
    /// Whether the sandbox `rec`, in `state`, is pruned at `now` (Unix seconds): never a
    /// running one.
    pub fn picks(&self, rec: &SandboxRecord, state: SandboxState, now: i64) -> bool {
        state != SandboxState::Running
            && self
                .workspace
                .as_deref()
                .is_none_or(|w| rec.spec.workspace.as_path().starts_with(w))
            && self
                .older_than
                .is_none_or(|age| now.saturating_sub(last_used(rec)) >= age)
    }
}

/// When a sandbox was last used: its last start, or its creation when it never started.
pub fn last_used(rec: &SandboxRecord) -> i64 {
    rec.started_at
        .map_or(rec.created_at, |s| s.max(rec.created_at))
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected a whole number with a unit s, m, h, d or w (e.g. 30m, 12h, 7d)"
)]
pub struct DurationError(String);

/// Parses `30m`, `12h`, `7d` (also `s` and `w`) into seconds.
pub fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let bad = || DurationError(s.to_owned());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let unit: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)
}

/// The filter of `--workspace DIR` and `--older-than DURATION`. DIR is resolved as `run`
/// resolves a workspace, and taken as given when it no longer exists (its sandboxes may
/// outlive it).
pub fn filter(workspace: Option<&Path>, older_than: Option<&str>) -> Result<Filter> {
    let workspace = match workspace {
        None => None,
        Some(w) => Some(match std::fs::canonicalize(w) {
            Ok(c) => c,
            Err(_) if w.is_absolute() => w.to_owned(),
            Err(_) => std::env::current_dir()
                .context("cannot read the current directory")?
                .join(w),
        }),
    };
    let older_than = older_than
        .map(parse_duration)
        .transpose()
        .map_err(|e| usage(format!("--older-than: {e}")))?;
    Ok(Filter {
        workspace,
        older_than,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `paddock prune [--workspace DIR] [--older-than DURATION] [--force]`.
pub fn prune(filter: &Filter, force: bool) -> Result<i32> {
    let (dirs, store) = open()?;
    let now = now();
    let picked: Vec<SandboxName> = store
        .list()?
        .into_iter()
        .filter(|r| filter.picks(r, crate::lifecycle::state(&dirs, r), now))
        .map(|r| r.spec.name)
        .collect();
    // Changes waiting for review are work not yet looked at: never pruned with the sandbox.
    let (kept, doomed): (Vec<SandboxName>, Vec<SandboxName>) = picked
        .into_iter()
        .partition(|n| crate::review::pending(&dirs.sandbox(n)));
    for n in &kept {
        eprintln!(
            "paddock: kept {n}: it holds changes waiting for review (`paddock apply {n}` or `paddock discard {n}`, then prune)"
        );
    }
    let listed = doomed
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if doomed.is_empty() {
        if filter == &Filter::default() {
            println!("nothing to prune");
        } else {
            println!("nothing to prune: no stopped sandbox matches");
        }
    } else if !force {
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "prune would remove {} stopped sandbox(es) ({listed}); pass --force to do it",
                doomed.len(),
            )));
        }
        eprint!(
            "remove {} stopped sandbox(es) and their installed packages ({listed})? [y/N] ",
            doomed.len(),
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(1);
        }
    }
    for name in doomed {
        // One that started meanwhile is refused by its lock and kept.
        match crate::commands::remove_sandbox(&dirs, &store, &name) {
            Ok(()) => {
                crate::commands::forget_secrets(&dirs, &name);
                println!("{name}");
            }
            Err(e) => eprintln!("paddock: kept {name}: {e:#}"),
        }
    }
    // Leftovers of removals that were interrupted.
    if let Ok(entries) = std::fs::read_dir(dirs.sandboxes()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".rm-") {
                let _ = paddock_confine::user::remove_tree(&e.path());
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(workspace: &str, created_at: i64, started_at: Option<i64>) -> SandboxRecord {
        SandboxRecord {
            spec: serde_json::from_value(serde_json::json!({
                "name": "s", "backend": "ns", "image": "default", "workspace": workspace,
                "mounts": [], "limits": {"cpus": null, "memory": null, "pids": null},
                "env": [], "user": "agent", "no_new_privs": false, "network": "proxy",
            }))
            .unwrap(),
            state: SandboxState::Stopped,
            created_at,
            started_at,
            supervisor_pid: None,
            last_exit: None,
            last_cause: None,
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<i64>)] = &[
            ("30m", Some(1800)),
            ("12h", Some(43_200)),
            ("7d", Some(604_800)),
            ("2w", Some(1_209_600)),
            ("45s", Some(45)),
            ("0s", Some(0)),
            ("7", None),
            ("d", None),
            ("1.5h", None),
            ("-3d", None),
            ("3 days", None),
            ("99999999999999999999d", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).ok(), *want, "{s}");
        }
    }

    #[test]
    fn filters_combine() {
        const NOW: i64 = 1_000_000;
        const DAY: i64 = 86_400;
        let old_here = record("/home/u/project", NOW - 10 * DAY, Some(NOW - 8 * DAY));
        // Created long ago, started an hour ago: last used an hour ago.
        let used_here = record("/home/u/project/sub", NOW - 10 * DAY, Some(NOW - 3600));
        let old_elsewhere = record("/home/u/projector", NOW - 10 * DAY, None);
        let week = Filter {
            older_than: Some(7 * DAY),
            ..Filter::default()
        };
        let here = Filter {
            workspace: Some("/home/u/project".into()),
            ..Filter::default()
        };
        let both = Filter {
            workspace: here.workspace.clone(),
            older_than: week.older_than,
        };
        let stopped = SandboxState::Stopped;
        let table = [
            (&Filter::default(), [true, true, true]),
            (&week, [true, false, true]),
            (&here, [true, true, false]),
            (&both, [true, false, false]),
        ];
        for (filter, want) in table {
            let got =
                [&old_here, &used_here, &old_elsewhere].map(|r| filter.picks(r, stopped, NOW));
            assert_eq!(got, want, "{filter:?}");
        }
        // Never a running one, nor (with a filter) a created one that does not match.
        assert!(!Filter::default().picks(&old_here, SandboxState::Running, NOW));
        assert!(!both.picks(&used_here, SandboxState::Created, NOW));
        assert!(Filter::default().picks(&used_here, SandboxState::Created, NOW));
    }
}

//! `paddock inspect NAME [--json]`: everything known about a sandbox, as lines to read (times
//! in local time with their age) or as JSON for programs (its keys are a stable interface).

use std::path::Path;

use anyhow::Result;
use paddock_core::{Network, SandboxRecord, SandboxState};
use paddock_policy::net::Scope;

use crate::commands::{open, parse_name, record};
use crate::lifecycle::{Main, log_file, read_main, state};

/// What `inspect` shows besides the record.
struct Extra<'a> {
    state: SandboxState,
    main: &'a Main,
    directory: &'a Path,
    log: &'a Path,
    trust_report: &'a Path,
    /// The sandbox's network preset, when one was applied.
    preset: Option<String>,
    /// Review mode: its layer holds changes not yet applied.
    review_pending: bool,
}

/// `paddock inspect NAME`.
pub fn inspect(name: &str, json: bool) -> Result<i32> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    let rec = record(&store, &name)?;
    let state = state(&dirs, &rec);
    let main = read_main(&dirs, &name);
    let dir = dirs.sandbox(&name);
    let log = log_file(&dirs, &name);
    let trust_report = dir.join("trust-report.txt");
    if json {
        let v = serde_json::json!({
            "name": rec.spec.name,
            "state": state,
            "backend": rec.spec.backend,
            "image": rec.spec.image,
            "workspace": rec.spec.workspace,
            "mounts": rec.spec.mounts,
            "limits": rec.spec.limits,
            "user": rec.spec.user,
            "network": rec.spec.network,
            "upstream_proxy": rec.spec.upstream_proxy.as_ref().map(ToString::to_string),
            "host_ca": rec.spec.host_ca,
            "review": rec.spec.review,
            "review_pending": rec.spec.review && crate::review::pending(&dir),
            "docker": rec.spec.docker,
            "ports": rec.spec.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "git_config_protected": !rec.spec.allow_git_config,
            "env": rec.spec.env,
            "created_at": rec.created_at,
            "started_at": rec.started_at,
            "supervisor_pid": if state == SandboxState::Running { rec.supervisor_pid } else { None },
            "last_exit": rec.last_exit,
            "last_cause": rec.last_cause,
            "background_command": main.argv,
            "directory": dir,
            "log": log,
            "trust_report": trust_report,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    // The preset is shown where the rules can be read; presets that cannot be read leave it
    // out rather than failing the whole view.
    let preset = store
        .preset_of(&Scope::Sandbox(name.to_string()))
        .ok()
        .flatten();
    let extra = Extra {
        state,
        main: &main,
        directory: &dir,
        log: &log,
        trust_report: &trust_report,
        preset,
        review_pending: crate::review::pending(&dir),
    };
    print!("{}", render(&rec, &extra, now(), &local_time));
    Ok(0)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The readable view: one `label value` line per fact, times as `local (age)`.
fn render(rec: &SandboxRecord, x: &Extra, now: i64, local: &dyn Fn(i64) -> String) -> String {
    let spec = &rec.spec;
    let when = |t: i64| format!("{} ({})", local(t), ago(now.saturating_sub(t)));
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let state = match (x.state, rec.supervisor_pid) {
        (SandboxState::Running, Some(pid)) => format!("running (supervisor pid {pid})"),
        (s, _) => s.as_str().to_owned(),
    };
    let l = &spec.limits;
    let limits = [
        format!(
            "cpus {}",
            l.cpus.map_or("no limit".into(), |c| c.to_string())
        ),
        format!(
            "memory {}",
            l.memory.map_or("no limit".into(), |m| m.to_string())
        ),
        format!(
            "processes {}",
            l.pids.map_or("no limit".into(), |p| p.to_string())
        ),
        format!(
            "disk {}",
            l.disk.map_or("no limit".into(), |d| d.to_string())
        ),
    ]
    .join(", ");
    let network = match (spec.network, &x.preset) {
        (Network::None, _) => "none (--no-network: loopback only)".to_owned(),
        (Network::Proxy, Some(p)) => format!("through the proxy, preset {p}"),
        (Network::Proxy, None) => "through the proxy".to_owned(),
    };
    let user = match spec.user {
        paddock_policy::User::Agent => "agent".to_owned(),
        paddock_policy::User::Root => "root".to_owned(),
        paddock_policy::User::Uid(u) => format!("uid {u}"),
    };
    let last_exit = match (rec.last_exit, &rec.last_cause) {
        (None, _) => "-".to_owned(),
        (Some(e), None) => e.to_string(),
        (Some(e), Some(c)) => format!("{e} ({c})"),
    };
    let rows: Vec<(&str, String)> = vec![
        ("name", spec.name.to_string()),
        ("state", state),
        ("backend", spec.backend.clone()),
        ("image", spec.image.clone()),
        ("workspace", spec.workspace.to_string()),
        (
            "mounts",
            list(
                spec.mounts
                    .iter()
                    .map(|m| {
                        let mode = if m.read_only { "ro" } else { "rw" };
                        if m.host == m.sandbox {
                            format!("{} ({mode})", m.host)
                        } else {
                            format!("{} -> {} ({mode})", m.host, m.sandbox)
                        }
                    })
                    .collect(),
            ),
        ),
        ("created", when(rec.created_at)),
        ("started", rec.started_at.map_or("never".into(), when)),
        ("last exit", last_exit),
        ("limits", limits),
        ("user", user),
        ("network", network),
        (
            "upstream proxy",
            spec.upstream_proxy
                .as_ref()
                .map_or("none".into(), ToString::to_string),
        ),
        (
            "review",
            match (spec.review, x.review_pending) {
                (false, _) => "off: changes reach the workspace as they are made".into(),
                (true, false) => "on: changes wait in the sandbox's layer; none now".into(),
                (true, true) => format!(
                    "on: changes wait in the sandbox's layer (`paddock diff {}`)",
                    spec.name
                ),
            },
        ),
        (
            "host CAs",
            if spec.host_ca {
                "trusted inside (those the host added)".into()
            } else {
                "not trusted inside (--no-host-ca)".into()
            },
        ),
        (
            "ports",
            list(
                spec.ports
                    .iter()
                    .map(|p| {
                        let auto = if p.auto { " (agent preset)" } else { "" };
                        format!("{p}{auto}")
                    })
                    .collect(),
            ),
        ),
        (
            "git config",
            if spec.allow_git_config {
                "writable inside (--dangerously-allow-git-config)".into()
            } else {
                "read-only inside".into()
            },
        ),
        (
            "environment",
            list(spec.env.iter().map(|e| e.name.clone()).collect()),
        ),
        ("background command", x.main.argv.join(" ")),
        ("directory", x.directory.display().to_string()),
        ("log", x.log.display().to_string()),
        ("trust report", x.trust_report.display().to_string()),
    ];
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{label:<19} {value}\n"));
        if label == "network" && spec.docker {
            out.push_str(&format!(
                "{:<19} its own Docker Engine (images and volumes in its layer)\n",
                "docker"
            ));
        }
    }
    out
}

/// How long ago something was, for a person: `40 s ago`, `3 min ago`, `5 h ago`, `12 days ago`.
fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 48 * 3600 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// `t` (Unix seconds) in the local time zone as `YYYY-MM-DD HH:MM`; the Unix seconds when the
/// time zone cannot convert it.
pub(crate) fn local_time(t: i64) -> String {
    // SAFETY: an all-zero `tm` is a valid value of the plain C struct (its zone pointer null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let time: libc::time_t = t;
    // SAFETY: localtime_r reads only `time` (and, the first time, TZ and the zone files) and
    // writes only into `tm`, which lives for the call.
    let ok = unsafe { !libc::localtime_r(&time, &mut tm).is_null() };
    if !ok {
        return t.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let cases: &[(i64, &str)] = &[
            (-5, "0 s ago"),
            (0, "0 s ago"),
            (59, "59 s ago"),
            (180, "3 min ago"),
            (3599, "59 min ago"),
            (7200, "2 h ago"),
            (47 * 3600, "47 h ago"),
            (12 * 86_400 + 5, "12 days ago"),
        ];
        for (secs, want) in cases {
            assert_eq!(ago(*secs), *want, "{secs}");
        }
    }

    #[test]
    fn the_readable_view() {
        let rec = SandboxRecord {
            spec: serde_json::from_value(serde_json::json!({
                "name": "work", "backend": "ns", "image": "default", "workspace": "/home/u/proj",
                "mounts": [
                    {"host": "/home/u/.codex", "sandbox": "/home/u/.codex", "read_only": true},
                    {"host": "/srv/data", "sandbox": "/data", "read_only": false},
                ],
                "limits": {"cpus": 1500, "memory": 4294967296u64, "pids": 4096, "disk": null},
                "env": [{"name": "FOO", "value": "secret-ish"}], "user": "agent",
                "no_new_privs": false, "network": "proxy",
                "ports": [{"addr": "127.0.0.1", "host": 3000, "sandbox": 3000}],
            }))
            .unwrap(),
            state: SandboxState::Stopped,
            created_at: 1_000_000,
            started_at: Some(1_000_000 + 3600),
            supervisor_pid: None,
            last_exit: Some(137),
            last_cause: Some("memory limit: 4G".into()),
        };
        let main = Main {
            argv: vec!["sleep".into(), "infinity".into()],
            rm: false,
            tty: false,
            cwd: None,
        };
        let x = Extra {
            state: SandboxState::Stopped,
            main: &main,
            directory: Path::new("/state/sandboxes/work"),
            log: Path::new("/state/sandboxes/work/output.log"),
            trust_report: Path::new("/state/sandboxes/work/trust-report.txt"),
            preset: Some("balanced".into()),
            review_pending: false,
        };
        let got = render(&rec, &x, 1_000_000 + 3600 + 180, &|t| format!("T{t}"));
        assert_eq!(
            got,
            "\
name                work
state               stopped
backend             ns
image               default
workspace           /home/u/proj
mounts              /home/u/.codex (ro), /srv/data -> /data (rw)
created             T1000000 (1 h ago)
started             T1003600 (3 min ago)
last exit           137 (memory limit: 4G)
limits              cpus 1.5, memory 4G, processes 4096, disk no limit
user                agent
network             through the proxy, preset balanced
upstream proxy      none
review              off: changes reach the workspace as they are made
host CAs            trusted inside (those the host added)
ports               127.0.0.1:3000 -> 3000
git config          read-only inside
environment         FOO
background command  sleep infinity
directory           /state/sandboxes/work
log                 /state/sandboxes/work/output.log
trust report        /state/sandboxes/work/trust-report.txt
"
        );
    }

    #[test]
    fn local_times_read_as_dates() {
        // 2026-11-25 12:00 UTC: the 24th, 25th or 26th in every time zone.
        let t = local_time(1_795_608_000);
        assert!(t.starts_with("2026-11-2"), "{t}");
        assert_eq!(t.len(), "2026-11-25 12:00".len(), "{t}");
    }
}

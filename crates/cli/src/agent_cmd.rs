//! `paddock agent`: the agent cache's installations.

use anyhow::{Context, Result};
use paddock_engine::agents::{self, Agent, Installed};

use crate::cli::AgentCmd;
use crate::error::usage;

/// `paddock agent …`.
pub fn agent(cmd: AgentCmd) -> Result<i32> {
    let cache = agents::cache_dir();
    match cmd {
        AgentCmd::Ls { json } => {
            let rows: Vec<(agents::Agent, Option<Installed>)> = agents::agents()
                .into_iter()
                .filter(|a| a.package.is_some())
                .map(|a| {
                    let i = agents::installed(&cache, &a.name);
                    (a, i)
                })
                .collect();
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(a, i)| {
                        serde_json::json!({
                            "agent": a.name,
                            "package": a.package,
                            "installed": i,
                            "dir": i.as_ref().map(|i| i.dir.display().to_string()),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!(
                "{:<8} {:<28} {:<14} {:<10} INSTALLED",
                "AGENT", "PACKAGE", "VERSION", "NODE"
            );
            for (a, i) in rows {
                let package = a.package.unwrap_or_default();
                match i {
                    Some(i) => println!(
                        "{:<8} {:<28} {:<14} {:<10} {}",
                        a.name,
                        package,
                        i.version,
                        i.node,
                        crate::inspect::local_time(i.installed_at)
                    ),
                    None => println!(
                        "{:<8} {:<28} {:<14} {:<10} on first `paddock run {}`",
                        a.name, package, "-", "-", a.name
                    ),
                }
            }
            println!("\ncache: {}", cache.display());
            Ok(0)
        }
        AgentCmd::Update { name, backend } => {
            let agent = known(&name)?;
            paddock_engine::Engine::open()?.ensure_installed(
                &agent,
                &backend,
                true,
                &crate::error::Terminal,
            )?;
            Ok(0)
        }
        AgentCmd::Rm { name } => {
            let agent = known(&name)?;
            let own = cache.join(&agent.name);
            if own.exists() {
                paddock_confine::user::remove_tree(&own)
                    .with_context(|| format!("cannot remove {}", own.display()))?;
                println!(
                    "removed {} from the agent cache (the next run installs it again)",
                    agent.name
                );
            } else {
                println!("{} is not installed", agent.name);
            }
            Ok(0)
        }
    }
}

fn known(name: &str) -> Result<Agent> {
    agents::find(name)
        .filter(|a| a.package.is_some())
        .ok_or_else(|| {
            let names: Vec<String> = agents::agents()
                .into_iter()
                .filter(|a| a.package.is_some())
                .map(|a| a.name)
                .collect();
            usage(format!(
                "unknown agent {name:?}: choose {}",
                names.join(", ")
            ))
        })
}

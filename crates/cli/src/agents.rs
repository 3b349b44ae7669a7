//! Agent presets (`paddock run claude`): data in `agents.toml`.

use serde::Deserialize;

/// One agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Its name on the command line.
    pub name: String,
    /// npm package to install on first use.
    pub package: Option<String>,
    /// The program.
    pub command: String,
    /// Secrets it uses.
    pub services: Vec<String>,
    /// Its configuration directory, relative to the home directory.
    pub config: Option<String>,
    /// Arguments before the user's own.
    #[serde(default)]
    pub args: Vec<String>,
    /// Ports published for it (its login callbacks), where the host port is free.
    #[serde(default)]
    pub ports: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    agent: Vec<Agent>,
}

/// Every preset.
pub fn agents() -> Vec<Agent> {
    toml::from_str::<Table>(include_str!("agents.toml"))
        .map(|t| t.agent)
        .unwrap_or_default()
}

/// The preset called `name`.
pub fn find(name: &str) -> Option<Agent> {
    agents().into_iter().find(|a| a.name == name)
}

/// The command that runs `agent` with `user_args`: installs its package into the sandbox's
/// layer when the program is missing (as root, through the proxy), then becomes the program.
pub fn argv(agent: &Agent, user_args: &[String]) -> Vec<String> {
    let mut argv = vec!["sh".to_owned(), "-c".to_owned()];
    let script = match &agent.package {
        Some(pkg) => format!(
            "command -v {cmd} >/dev/null 2>&1 || {{ echo \"paddock: installing {pkg} into this sandbox (first run)\" >&2; \
             sudo -E npm install --global --no-fund --no-audit --loglevel=error {pkg} >&2 || \
             {{ echo \"paddock: npm could not install {pkg}; is the registry allowed? (paddock policy log --denied)\" >&2; exit 127; }}; }}; \
             exec {cmd} \"$@\"",
            cmd = agent.command
        ),
        None => format!("exec {} \"$@\"", agent.command),
    };
    argv.push(script);
    argv.push(agent.name.clone());
    argv.extend(agent.args.iter().cloned());
    argv.extend(user_args.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presets_parse_and_name_their_secrets() {
        let all = agents();
        assert!(all.len() >= 4);
        for name in ["claude", "codex", "gemini", "shell"] {
            let a = find(name).unwrap();
            for s in &a.services {
                assert!(paddock_secrets::find_service(s).is_some(), "{s}");
            }
        }
        let argv = argv(&find("claude").unwrap(), &["--help".into()]);
        assert_eq!(argv[0], "sh");
        assert!(argv[2].contains("npm install --global") && argv[2].contains("exec claude"));
        assert_eq!(argv[3..], ["claude".to_owned(), "--help".into()]);
        assert_eq!(
            super::argv(&find("shell").unwrap(), &[])[2],
            "exec bash \"$@\""
        );
    }
}

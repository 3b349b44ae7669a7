//! Agent presets (`paddock run claude`): data in `agents.toml`, and the agent cache.
//!
//! An agent's CLI and the Node.js it needs are installed once, in a sandbox of their own
//! through the proxy (npm runs the packages' install scripts: never on the host), into a
//! directory of the agent cache. Every sandbox that runs the agent sees that directory
//! read-only at [`INSIDE`]: a second sandbox, or a second run, starts the agent without a
//! download. `paddock agent update NAME` installs the newest version beside the old one and
//! switches to it; sandboxes running the old one keep it until they stop.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Its name on the command line.
    pub name: String,
    /// npm package to install.
    pub package: Option<String>,
    /// The Node.js major version it runs on.
    pub node: Option<String>,
    /// The program.
    pub command: String,
    /// Secrets it uses.
    pub services: Vec<String>,
    /// Its configuration and login directory, relative to the home directory.
    pub config: Option<String>,
    /// The variable that tells the agent where its configuration directory is.
    pub config_env: Option<String>,
    /// Arguments before the user's own.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set for it (`NAME=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Ports published for it (its login callbacks), where the host port is free.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Its sandbox gets a Docker Engine of its own (as `--docker`).
    #[serde(default)]
    pub docker: bool,
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

/// Where an agent's installation is seen inside a sandbox.
pub const INSIDE: &str = "/opt/paddock/agent";

/// The home directory of the agent user inside.
const AGENT_HOME: &str = "/home/agent";

/// The agent cache: `PADDOCK_CACHE_DIR`, else `/var/cache/paddock` for root and
/// `$XDG_CACHE_HOME/paddock` (or `~/.cache/paddock`) for a user; agents in `agents/`. Outside
/// the state directory, whose contents are never shared into a sandbox.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = match var("PADDOCK_CACHE_DIR") {
        Some(d) => d,
        None if rustix::process::geteuid().is_root() => PathBuf::from("/var/cache/paddock"),
        None => var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("paddock"),
    };
    base.join("agents")
}

/// What the cache records about an installation (`agent.json`, written by Paddock on the host
/// after the install sandbox ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The agent.
    pub agent: String,
    /// Its npm package.
    pub package: String,
    /// The package's version.
    pub version: String,
    /// The Node.js version it runs on.
    pub node: String,
    /// When it was installed (seconds since the epoch).
    pub installed_at: i64,
    /// Its directory on the host (not stored: where it was found).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The installation `agent` uses now, if any: `agents/NAME/current` names its directory.
pub fn installed(cache: &Path, agent: &str) -> Option<Installed> {
    let current = std::fs::read_link(cache.join(agent).join("current")).ok()?;
    let dir = cache.join(agent).join(current);
    let text = std::fs::read_to_string(dir.join("agent.json")).ok()?;
    let mut i: Installed = serde_json::from_str(&text).ok()?;
    i.dir = dir;
    Some(i)
}

/// A version string as npm prints one; anything else read from an install is refused (it is
/// written inside the install sandbox).
pub fn plausible_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

/// How npm's failures read, and what each means: the first pattern (an extended regular
/// expression over npm's log) that matches gives the message.
pub const DIAGNOSES: &[(&str, &str)] = &[
    (
        "EBADENGINE|notsup|Unsupported engine",
        "PACKAGE does not run on Node.js NODE (the preset's runtime): its \"engines\" field asks for another; this Paddock's preset needs an update",
    ),
    (
        "SELF_SIGNED_CERT|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|CERT_HAS_EXPIRED|ERR_TLS|unable to verify the first certificate|certificate",
        "TLS: the certificate of the registry is not trusted inside the sandbox. On a network that inspects TLS, its CA must be in the trust store of the host (`paddock doctor` lists the host CAs sandboxes trust)",
    ),
    (
        "E403|statusCode=403|403 Forbidden",
        "the egress proxy denied a request: `paddock policy log --denied --sandbox SANDBOX` names the host; `paddock policy allow HOST` allows it",
    ),
    (
        "EAI_AGAIN|ENOTFOUND|statusCode=502|cannot resolve",
        "the name of a registry could not be resolved or reached from this host (the proxy resolves names for the sandbox): check the host's DNS and network, and `paddock policy log --sandbox SANDBOX`",
    ),
    (
        "ETIMEDOUT|ESOCKETTIMEDOUT|ECONNRESET|network timeout|timed out",
        "the registry did not answer in time: check the host's network, or try again",
    ),
];

/// The script the install sandbox runs (bash, in the empty directory `prefix`, which becomes
/// the installation): Node.js `node` and npm from the npm registry, then `package` with npm's
/// own progress, refused by npm when its engines field does not fit that Node.js. On failure it
/// names the cause from npm's log, with `sandbox` in the advice.
pub fn install_script(agent: &Agent, sandbox: &str) -> Option<String> {
    let package = agent.package.as_deref()?;
    let node = agent.node.as_deref().unwrap_or("22");
    let mut diagnose = String::new();
    for (pattern, message) in DIAGNOSES {
        let message = message
            .replace("PACKAGE", package)
            .replace("NODE", node)
            .replace("SANDBOX", sandbox)
            .replace('\'', "");
        diagnose.push_str(&format!(
            "    grep -Eq '{pattern}' \"$log\" && {{ say '{message}'; say \"npm's log: $log\"; exit 127; }}\n"
        ));
    }
    Some(format!(
        r#"set -u -o pipefail
P="$PWD"
say() {{ printf 'paddock: %s\n' "$*" >&2; }}
npm_flags="--no-fund --no-audit --no-update-notifier --fetch-retries=2 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 --fetch-timeout=60000"
diagnose() {{
    log=$(ls -t "$HOME"/.npm/_logs/*-debug-0.log 2>/dev/null | head -1)
    [ -n "$log" ] || {{ say "$1 failed (npm left no log)"; exit 127; }}
{diagnose}    say "$1 failed; npm's log: $log"
    tail -n 15 "$log" >&2
    exit 127
}}
case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) say "no Node.js from the npm registry for $(uname -m)"; exit 127 ;;
esac
say "installing Node.js {node} and npm (from the npm registry)"
npm install $npm_flags --prefix "$P/runtime" "node-linux-$arch@{node}" npm@10 >&2 || diagnose "installing Node.js {node}"
mkdir -p "$P/bin"
ln -sf "../runtime/node_modules/node-linux-$arch/bin/node" "$P/bin/node"
ln -sf ../runtime/node_modules/npm/bin/npm-cli.js "$P/bin/npm"
ln -sf ../runtime/node_modules/npm/bin/npx-cli.js "$P/bin/npx"
export PATH="$P/bin:$PATH"
say "Node.js $(node --version), npm $(npm --version); installing {package} (npm's progress follows)"
npm install --global --engine-strict $npm_flags --prefix "$P" {package} >&2 || diagnose "installing {package}"
command -v {command} >/dev/null || {{ say "{package} installed no {command} program"; exit 127; }}
NODE_PATH="$P/lib/node_modules" node -p 'JSON.stringify({{version: require("{package}/package.json").version, node: process.versions.node}})' > "$P/.installed"
"#,
        command = agent.command,
    ))
}

/// The command that runs `agent` with `user_args` from its installation at [`INSIDE`], its
/// configuration directory named where the agent reads it from a variable.
pub fn argv(agent: &Agent, user_args: &[String]) -> Vec<String> {
    let mut script = String::new();
    if agent.package.is_some() {
        script.push_str(&format!("export PATH=\"{INSIDE}/bin:$PATH\"; "));
    }
    if let (Some(var), Some(dir)) = (&agent.config_env, &agent.config) {
        script.push_str(&format!(
            "export {var}=\"{AGENT_HOME}/{dir}\"; mkdir -p \"${var}\"; "
        ));
    }
    for var in &agent.env {
        if let Some((k, v)) = var.split_once('=') {
            script.push_str(&format!("export {k}='{}'; ", v.replace('\'', "")));
        }
    }
    script.push_str(&format!("exec {} \"$@\"", agent.command));
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script, agent.name.clone()];
    argv.extend(agent.args.iter().cloned());
    argv.extend(user_args.iter().cloned());
    argv
}

/// Where `--agent-config` shares the host's configuration directory of `agent`: (host, inside).
pub fn config_share(agent: &Agent, host_home: &Path) -> Option<(PathBuf, PathBuf)> {
    let dir = agent.config.as_deref()?;
    Some((host_home.join(dir), Path::new(AGENT_HOME).join(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_can_ask_for_a_docker_engine() {
        let t: Table = toml::from_str(
            "[[agent]]\nname = \"d\"\ncommand = \"bash\"\nservices = []\ndocker = true\n\n[[agent]]\nname = \"e\"\ncommand = \"bash\"\nservices = []\n",
        )
        .unwrap();
        assert!(t.agent[0].docker);
        assert!(!t.agent[1].docker);
        // None of the built-in presets does: their sandboxes run on every backend.
        assert!(agents().iter().all(|a| !a.docker));
    }

    #[test]
    fn the_presets_parse_and_name_their_secrets_and_runtimes() {
        let all = agents();
        assert!(all.len() >= 4);
        for name in ["claude", "codex", "gemini", "shell"] {
            let a = find(name).unwrap();
            for s in &a.services {
                assert!(paddock_secrets::find_service(s).is_some(), "{s}");
            }
            assert_eq!(a.package.is_some(), a.node.is_some(), "{name}");
        }
        let argv = argv(&find("claude").unwrap(), &["--help".into()]);
        assert_eq!(
            argv[2],
            "export PATH=\"/opt/paddock/agent/bin:$PATH\"; export CLAUDE_CONFIG_DIR=\"/home/agent/.claude\"; mkdir -p \"$CLAUDE_CONFIG_DIR\"; exec claude \"$@\""
        );
        assert_eq!(argv[3..], ["claude".to_owned(), "--help".into()]);
        assert_eq!(
            super::argv(&find("shell").unwrap(), &[])[2],
            "exec bash \"$@\""
        );
        assert!(install_script(&find("shell").unwrap(), "x").is_none());
        assert!(
            super::argv(&find("gemini").unwrap(), &[])[2]
                .contains("export NO_BROWSER='true'; exec gemini")
        );
    }

    #[test]
    fn versions_read_from_an_install_are_checked() {
        for ok in ["2.1.332", "0.61.0-preview.1", "1.0.0+build"] {
            assert!(plausible_version(ok), "{ok}");
        }
        for bad in ["", "v1", "1.0;rm", "1 0", &"9".repeat(65)] {
            assert!(!plausible_version(bad), "{bad}");
        }
    }

    /// The diagnosis part of the install script, run by a real shell over npm logs as they
    /// read for each failure.
    #[test]
    fn a_failed_install_names_its_cause() {
        let agent = find("gemini").unwrap();
        let script = install_script(&agent, "agent-install-gemini").unwrap();
        let start = script.find("diagnose() {").unwrap();
        let end = script[start..].find("\n}\n").unwrap() + start + 3;
        let function = &script[start..end];
        let home = tempfile::tempdir().unwrap();
        let logs = home.path().join(".npm/_logs");
        std::fs::create_dir_all(&logs).unwrap();
        let cases = [
            (
                "npm error code EBADENGINE\nnpm error engine Unsupported engine",
                "does not run on Node.js 22",
            ),
            (
                "npm error code SELF_SIGNED_CERT_IN_CHAIN\nnpm error errno SELF_SIGNED_CERT_IN_CHAIN",
                "TLS: the certificate of the registry is not trusted",
            ),
            (
                "npm error code E403\nnpm error 403 Forbidden - GET https://registry.test/x",
                "policy log --denied --sandbox agent-install-gemini",
            ),
            (
                "npm error errno EAI_AGAIN\nnpm error request to https://registry.test failed",
                "could not be resolved",
            ),
            (
                "npm error code ETIMEDOUT\nnpm error network timeout at: https://registry.test",
                "did not answer in time",
            ),
            (
                "npm error code E500\nnpm error 500 Internal",
                "installing x failed; npm's log",
            ),
        ];
        for (log, want) in cases {
            std::fs::write(logs.join("2026-12-02T00_00_00_000Z-debug-0.log"), log).unwrap();
            let o = std::process::Command::new("bash")
                .args(["-c", &format!("say() {{ printf 'paddock: %s\\n' \"$*\" >&2; }}\n{function}\ndiagnose 'installing x'")])
                .env("HOME", home.path())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(127), "{err}");
            assert!(err.contains(want), "{log:?}: {err}");
        }
    }
}

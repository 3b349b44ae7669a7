//! Package registries the host's own package managers are configured to use.
//!
//! The `balanced` network preset lets a sandbox reach the registries its package managers need.
//! Which registries those are is a property of the machine, not of Paddock: a corporate host
//! points pip, npm, cargo and apt at internal mirrors, and a sandbox on that host must reach the
//! mirrors, not the public defaults. So nothing here names a public registry. Everything is read,
//! at the time the preset is applied, from the host's configuration files, environment, cargo's
//! own index cache and, when nothing is configured, from the tools themselves (pip and npm report
//! their built-in defaults).
//!
//! Sources, per package manager:
//!
//! - pip: `PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`, `PIP_TRUSTED_HOST`, `PIP_FIND_LINKS`, and the
//!   `index-url`, `extra-index-url`, `trusted-host` and `find-links` keys under `[global]`,
//!   `[install]` and `[download]` of every pip configuration file; pip's built-in index when no
//!   `index-url` is set anywhere.
//! - npm: `npm_config_registry` (any case), `registry=` and `@scope:registry=` in the user and
//!   global `npmrc`; npm's own answer when no unscoped registry is set.
//! - cargo: `[source.*] registry` and `[registries.*] index` in `$CARGO_HOME/config.toml` (and
//!   the legacy `config`), `CARGO_REGISTRIES_<NAME>_INDEX`, and the registries cargo has already
//!   used, read from the names of its index cache directories and their `config.json`.
//! - apt: one-line `sources.list` entries and deb822 `.sources` stanzas.
//!
//! Only `http` and `https` URLs count. Credentials in a URL are never kept, and anything that is
//! not a plausible host name (including IPv6 literals) is skipped with a debug message.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, io, thread};

/// How long a package manager may take to report its default registry.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// pip configuration sections whose keys apply to installing packages.
const PIP_SECTIONS: &[&str] = &["global", "install", "download"];

/// One registry host found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryHost {
    /// The host name, lower case, without a trailing dot.
    pub host: String,
    /// The port, when the configuration names one other than its scheme's default.
    pub port: Option<u16>,
    /// Where the host was found, e.g. `pip: index-url in /etc/pip.conf`.
    pub source: String,
}

/// Where to look for package manager configuration (so tests can point at temporary
/// directories).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The user's home directory. Files under it are skipped when it is not absolute.
    pub home: PathBuf,
    /// The environment the package managers would see.
    pub env: HashMap<String, String>,
    /// The system configuration directory, normally `/etc`.
    pub etc: PathBuf,
    /// Whether to ask pip and npm for their built-in defaults when nothing is configured.
    pub run_tools: bool,
}

impl HostConfig {
    /// The real machine: this process's environment, `$HOME`, `/etc`, and asking the tools.
    pub fn from_env() -> HostConfig {
        let env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let home = env.get("HOME").map(PathBuf::from).unwrap_or_default();
        HostConfig {
            home,
            env,
            etc: PathBuf::from("/etc"),
            run_tools: true,
        }
    }

    /// A path under the home directory, or `None` when the home directory is unknown.
    fn home_path(&self, rel: &str) -> Option<PathBuf> {
        self.home.is_absolute().then(|| self.home.join(rel))
    }

    /// An environment variable, ignoring empty values.
    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Environment variables whose name matches `name` ignoring ASCII case (npm's rule), in a
    /// stable order.
    fn vars_ignore_case(&self, name: &str) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .env
            .iter()
            .filter(|(k, v)| k.eq_ignore_ascii_case(name) && !v.trim().is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.sort_unstable();
        out
    }
}

/// All registry hosts, deduplicated by host and port (the first source found is kept), sorted
/// by host and then port.
pub fn discover(cfg: &HostConfig) -> Vec<RegistryHost> {
    let mut found = Found::default();
    discover_pip(cfg, &mut found);
    discover_npm(cfg, &mut found);
    discover_cargo(cfg, &mut found);
    discover_apt(cfg, &mut found);
    found.finish()
}

/// Hosts collected so far, in discovery order.
#[derive(Debug, Default)]
struct Found {
    hosts: Vec<RegistryHost>,
}

impl Found {
    /// Adds the host of an `http(s)` URL; anything else is skipped.
    fn add_url(&mut self, url: &str, source: &str) {
        match url_host_port(url) {
            Some((host, port)) => self.push(host, port, source),
            None => {
                tracing::debug!(url = %redact(url), source, "not an http(s) registry URL; skipped")
            }
        }
    }

    /// Adds a bare `host[:port]`, as pip's `trusted-host` takes it.
    fn add_authority(&mut self, authority: &str, source: &str) {
        match authority_host_port(authority) {
            Some((host, port)) => self.push(host, port, source),
            None => {
                let shown = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                tracing::debug!(authority = shown, source, "not a plausible host; skipped");
            }
        }
    }

    fn push(&mut self, host: String, port: Option<u16>, source: &str) {
        self.hosts.push(RegistryHost {
            host,
            port,
            source: source.to_owned(),
        });
    }

    /// Deduplicates (keeping the first source) and sorts.
    fn finish(self) -> Vec<RegistryHost> {
        let mut seen = HashSet::new();
        let mut out: Vec<RegistryHost> = self
            .hosts
            .into_iter()
            .filter(|h| seen.insert((h.host.clone(), h.port)))
            .collect();
        out.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// URLs and host names

/// Host and port of an `http`/`https` URL, also behind a `sparse+` (cargo) or `mirror+` (apt)
/// prefix. Userinfo is dropped, and so is a port that is the scheme's default.
fn url_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme = scheme
        .strip_prefix("sparse+")
        .or_else(|| scheme.strip_prefix("mirror+"))
        .unwrap_or(&scheme);
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, port) = authority_host_port(&rest[..end])?;
    // The scheme's own port is the same as none, so `https://h:443` and `https://h` are one host.
    let default_port = if scheme == "https" { 443 } else { 80 };
    Some((host, port.filter(|p| *p != default_port)))
}

/// Host and port of `[userinfo@]host[:port]`, when the host is a plausible name or IPv4 address.
fn authority_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.starts_with('[') {
        return None; // IPv6 literal: not a host name
    }
    let (host, port) = match hostport.split_once(':') {
        Some((h, "")) => (h, None),
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (hostport, None),
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    plausible_host(host).then(|| (host.to_owned(), port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|n| *n != 0)
}

/// A lower-case DNS name (letters, digits, hyphens, dots; labels of 1 to 63 bytes not starting
/// or ending with '-') or a dotted IPv4 address.
fn plausible_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && (!last_numeric || host.parse::<Ipv4Addr>().is_ok())
}

/// A URL with any userinfo replaced, safe to log.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, hostport)) => format!("{scheme}://***@{hostport}{}", &rest[end..]),
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Files and tools

/// The contents of a file, or `None` when it does not exist or cannot be read.
fn read_optional(path: &Path) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot read; skipped");
            None
        }
    }
}

/// Entries of a directory whose names end with `suffix`, sorted by name.
fn dir_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix) && !n.starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

/// Runs a package manager with the configured environment and returns its standard output
/// when it exits successfully within [`TOOL_TIMEOUT`].
fn run_tool(cfg: &HostConfig, program: &str, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&cfg.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if cfg.home.is_absolute() {
        cmd.env("HOME", &cfg.home);
        if cfg.home.is_dir() {
            cmd.current_dir(&cfg.home); // no project configuration from our working directory
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(program, error = %e, "cannot run; skipped");
            return None;
        }
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < TOOL_TIMEOUT => {
                thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                tracing::debug!(program, "timed out; skipped");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => {
                tracing::debug!(program, error = %e, "cannot wait; skipped");
                return None;
            }
        }
    }
    let output = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(program, error = %e, "cannot read output; skipped");
            return None;
        }
    };
    if !output.status.success() {
        tracing::debug!(program, status = %output.status, "failed; skipped");
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

// ---------------------------------------------------------------------------------------------
// pip

/// Python snippet that prints pip's built-in index URL and the host its files are served from.
const PIP_DEFAULT_INDEX: &str = "from pip._internal.models.index import PyPI; \
     print(PyPI.url, getattr(PyPI, 'file_storage_domain', ''))";

fn discover_pip(cfg: &HostConfig, found: &mut Found) {
    let mut index_configured = pip_env(cfg, found);
    for path in pip_config_files(cfg) {
        if let Some(text) = read_optional(&path) {
            index_configured |= pip_config(&text, &path, found);
        }
    }
    if !index_configured && cfg.run_tools {
        pip_default(cfg, found);
    }
}

/// pip's environment variables; true when they set the main index.
fn pip_env(cfg: &HostConfig, found: &mut Found) -> bool {
    let mut index = false;
    for (var, key) in [
        ("PIP_INDEX_URL", "index-url"),
        ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
        ("PIP_TRUSTED_HOST", "trusted-host"),
        ("PIP_FIND_LINKS", "find-links"),
    ] {
        if let Some(value) = cfg.var(var) {
            index |= pip_value(key, value, &format!("pip: {var}"), found);
        }
    }
    index
}

/// Every file pip may read its configuration from (reading extra ones is harmless).
fn pip_config_files(cfg: &HostConfig) -> Vec<PathBuf> {
    let mut files = vec![cfg.etc.join("pip.conf"), cfg.etc.join("xdg/pip/pip.conf")];
    match cfg.var("XDG_CONFIG_HOME") {
        Some(xdg) => files.push(Path::new(xdg).join("pip/pip.conf")),
        None => files.extend(cfg.home_path(".config/pip/pip.conf")),
    }
    files.extend(cfg.home_path(".pip/pip.conf"));
    if let Some(file) = cfg.var("PIP_CONFIG_FILE") {
        files.push(PathBuf::from(file));
    }
    files
}

/// One pip configuration file; true when it sets the main index.
fn pip_config(text: &str, path: &Path, found: &mut Found) -> bool {
    let mut index = false;
    for (key, value) in ini_values(text, PIP_SECTIONS) {
        let source = format!("pip: {key} in {}", path.display());
        index |= pip_value(&key, &value, &source, found);
    }
    index
}

/// One pip setting (values are whitespace separated); true when it sets the main index.
fn pip_value(key: &str, value: &str, source: &str, found: &mut Found) -> bool {
    match key {
        "index-url" | "extra-index-url" => {
            value
                .split_whitespace()
                .for_each(|u| found.add_url(u, source));
            key == "index-url"
        }
        "find-links" => {
            value
                .split_whitespace()
                .filter(|u| u.contains("://"))
                .for_each(|u| found.add_url(u, source));
            false
        }
        "trusted-host" => {
            value
                .split_whitespace()
                .for_each(|h| found.add_authority(h, source));
            false
        }
        _ => false,
    }
}

/// Asks pip for its built-in index and file host.
fn pip_default(cfg: &HostConfig, found: &mut Found) {
    let Some(out) = run_tool(cfg, "python3", &["-c", PIP_DEFAULT_INDEX]) else {
        return;
    };
    let mut words = out.split_whitespace();
    if let Some(url) = words.next() {
        found.add_url(url, "pip: default index (python3 -c pip)");
    }
    if let Some(files) = words.next() {
        found.add_authority(files, "pip: default file host (python3 -c pip)");
    }
}

/// `(key, value)` pairs of an INI file within the named sections, keys lower case with `_` read
/// as `-` (pip's normalisation); indented continuation lines are joined to the value with a
/// newline.
fn ini_values(text: &str, sections: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_section = false;
    let mut continuing = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if indented && continuing {
            if let Some((_, value)) = out.last_mut() {
                value.push('\n');
                value.push_str(trimmed);
            }
            continue;
        }
        continuing = false;
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            in_section = sections.iter().any(|s| s.eq_ignore_ascii_case(name.trim()));
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some(at) = trimmed.find(['=', ':']) {
            let key = trimmed[..at].trim().to_ascii_lowercase().replace('_', "-");
            out.push((key, trimmed[at + 1..].trim().to_owned()));
            continuing = true;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// npm

fn discover_npm(cfg: &HostConfig, found: &mut Found) {
    let mut registry_configured = false;
    for (var, value) in cfg.vars_ignore_case("npm_config_registry") {
        found.add_url(value, &format!("npm: {var}"));
        registry_configured = true;
    }
    for path in npmrc_files(cfg) {
        if let Some(text) = read_optional(&path) {
            registry_configured |= npmrc(cfg, &text, &path, found);
        }
    }
    if !registry_configured && cfg.run_tools {
        npm_default(cfg, found);
    }
}

/// The user and global npmrc files.
fn npmrc_files(cfg: &HostConfig) -> Vec<PathBuf> {
    let pick = |var: &str| {
        cfg.vars_ignore_case(var)
            .first()
            .map(|(_, v)| PathBuf::from(v))
    };
    let mut files = Vec::new();
    files.extend(pick("npm_config_userconfig").or_else(|| cfg.home_path(".npmrc")));
    files.push(pick("npm_config_globalconfig").unwrap_or_else(|| cfg.etc.join("npmrc")));
    files
}

/// One npmrc file; true when it sets the unscoped registry.
fn npmrc(cfg: &HostConfig, text: &str, path: &Path, found: &mut Found) -> bool {
    let mut registry = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(['#', ';']) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let scoped = key.starts_with('@') && key.ends_with(":registry");
        if key != "registry" && !scoped {
            continue;
        }
        let value = expand_env(cfg, unquote(value.trim()));
        found.add_url(&value, &format!("npm: {key} in {}", path.display()));
        registry |= !scoped;
    }
    registry
}

/// Asks npm for its effective registry.
fn npm_default(cfg: &HostConfig, found: &mut Found) {
    if let Some(out) = run_tool(cfg, "npm", &["config", "get", "registry"])
        && let Some(url) = out.split_whitespace().next()
    {
        found.add_url(url, "npm: default registry (npm config get registry)");
    }
}

fn unquote(value: &str) -> &str {
    ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value)
}

/// npm's `${VAR}` expansion (unset variables become empty).
fn expand_env(cfg: &HostConfig, value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + len].trim_end_matches('?');
        out.push_str(cfg.env.get(name).map_or("", String::as_str));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// cargo

fn discover_cargo(cfg: &HostConfig, found: &mut Found) {
    let Some(cargo_home) = cargo_home(cfg) else {
        return;
    };
    for name in ["config.toml", "config"] {
        let path = cargo_home.join(name);
        if let Some(text) = read_optional(&path) {
            cargo_config(&text, &path, found);
        }
    }
    cargo_env(cfg, found);
    cargo_index_cache(&cargo_home.join("registry/index"), found);
}

fn cargo_home(cfg: &HostConfig) -> Option<PathBuf> {
    cfg.var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| cfg.home_path(".cargo"))
}

/// `[source.*] registry`, `[registries.*] index` and `[registry] index` of one cargo
/// configuration file. A `replace-with` names one of these sources or registries, which are all
/// read anyway.
fn cargo_config(text: &str, path: &Path, found: &mut Found) {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "not valid TOML; skipped");
            return;
        }
    };
    let named_urls = |section: &str, key: &str, found: &mut Found| {
        let Some(entries) = table.get(section).and_then(toml::Value::as_table) else {
            return;
        };
        for (name, entry) in entries {
            if let Some(url) = entry.get(key).and_then(toml::Value::as_str) {
                let source = format!("cargo: {section}.{name}.{key} in {}", path.display());
                found.add_url(url, &source);
            }
        }
    };
    named_urls("source", "registry", found);
    named_urls("registries", "index", found);
    if let Some(url) = table
        .get("registry")
        .and_then(|r| r.get("index"))
        .and_then(toml::Value::as_str)
    {
        found.add_url(url, &format!("cargo: registry.index in {}", path.display()));
    }
}

/// `CARGO_REGISTRIES_<NAME>_INDEX` variables.
fn cargo_env(cfg: &HostConfig, found: &mut Found) {
    let mut vars: Vec<(&String, &String)> = cfg
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("CARGO_REGISTRIES_") && k.ends_with("_INDEX"))
        .collect();
    vars.sort_unstable();
    for (var, url) in vars {
        found.add_url(url, &format!("cargo: {var}"));
    }
}

/// Registries cargo has used: its index cache directories are named `HOST-HASH`, and a sparse
/// index keeps the registry's `config.json` (with the download and API URLs) inside.
fn cargo_index_cache(index_dir: &Path, found: &mut Found) {
    let Ok(entries) = fs::read_dir(index_dir) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Some(host) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(cache_dir_host)
        else {
            continue;
        };
        found.add_authority(host, &format!("cargo: index cache {}", dir.display()));
        cargo_index_config_json(&dir.join("config.json"), found);
    }
}

/// The host part of a cargo cache directory name `HOST-HASH` (the hash is hexadecimal).
fn cache_dir_host(name: &str) -> Option<&str> {
    let (host, hash) = name.rsplit_once('-')?;
    let is_hash = !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit());
    is_hash.then_some(host)
}

fn cargo_index_config_json(path: &Path, found: &mut Found) {
    let Some(text) = read_optional(path) else {
        return;
    };
    let json: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "not valid JSON; skipped");
            return;
        }
    };
    for key in ["dl", "api"] {
        if let Some(url) = json.get(key).and_then(serde_json::Value::as_str) {
            found.add_url(url, &format!("cargo: {key} in {}", path.display()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// apt

fn discover_apt(cfg: &HostConfig, found: &mut Found) {
    let apt = cfg.etc.join("apt");
    let mut one_line = vec![apt.join("sources.list")];
    one_line.extend(dir_files(&apt.join("sources.list.d"), ".list"));
    for path in one_line {
        if let Some(text) = read_optional(&path) {
            apt_one_line(&text, &path, found);
        }
    }
    for path in dir_files(&apt.join("sources.list.d"), ".sources") {
        if let Some(text) = read_optional(&path) {
            apt_deb822(&text, &path, found);
        }
    }
}

/// One-line format: `deb [options] URI suite [components]` (also `deb-src`).
fn apt_one_line(text: &str, path: &Path, found: &mut Found) {
    let source = format!("apt: {}", path.display());
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("deb" | "deb-src")) {
            continue;
        }
        let mut uri = words.next();
        if uri.is_some_and(|w| w.starts_with('[')) {
            // Skip the options, which may contain spaces: up to the word ending with ']'.
            let mut word = uri;
            while word.is_some_and(|w| !w.ends_with(']')) {
                word = words.next();
            }
            uri = words.next();
        }
        if let Some(uri) = uri {
            found.add_url(uri, &source);
        }
    }
}

/// deb822 format: stanzas separated by blank lines, each with a `URIs:` field listing one or more
/// URIs; stanzas with `Enabled: no` are skipped.
fn apt_deb822(text: &str, path: &Path, found: &mut Found) {
    let source = format!("apt: {}", path.display());
    for stanza in deb822_stanzas(text) {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if field("Enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("no")) {
            continue;
        }
        if let Some(uris) = field("URIs") {
            uris.split_whitespace()
                .for_each(|u| found.add_url(u, &source));
        }
    }
}

/// The fields of each deb822 stanza; continuation lines (starting with whitespace) are joined to
/// the previous field, comment lines are ignored.
fn deb822_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                stanzas.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            current.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        stanzas.push(current);
    }
    stanzas
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A temporary directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "paddock-registries-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Writes `text` to `rel`, creating parent directories.
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            path
        }

        /// A configuration rooted here: `home/`, `etc/`, the given environment, no tools.
        fn cfg(&self, env: &[(&str, &str)]) -> HostConfig {
            HostConfig {
                home: self.0.join("home"),
                env: env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                etc: self.0.join("etc"),
                run_tools: false,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `host` or `host:port` of each result.
    fn names(found: &[RegistryHost]) -> Vec<String> {
        found
            .iter()
            .map(|h| match h.port {
                Some(p) => format!("{}:{p}", h.host),
                None => h.host.clone(),
            })
            .collect()
    }

    #[test]
    fn url_parsing() {
        let hp = url_host_port;
        assert_eq!(
            hp("https://Mirror.Corp.Test/simple/"),
            Some(("mirror.corp.test".into(), None))
        );
        assert_eq!(
            hp("http://mirror.corp.test:8080"),
            Some(("mirror.corp.test".into(), Some(8080)))
        );
        assert_eq!(
            hp("https://user:s3cret@mirror.corp.test:8443/x"),
            Some(("mirror.corp.test".into(), Some(8443)))
        );
        assert_eq!(
            hp("sparse+https://crates.corp.test/index/"),
            Some(("crates.corp.test".into(), None))
        );
        assert_eq!(
            hp("mirror+http://apt.corp.test/list"),
            Some(("apt.corp.test".into(), None))
        );
        assert_eq!(
            hp("https://mirror.corp.test.?q"),
            Some(("mirror.corp.test".into(), None))
        );
        assert_eq!(
            hp("https://10.1.2.3:3128/"),
            Some(("10.1.2.3".into(), Some(3128)))
        );
        assert_eq!(
            hp("https://mirror.corp.test:/"),
            Some(("mirror.corp.test".into(), None))
        );
        assert_eq!(
            hp("HTTPS://mirror.corp.test:443/"),
            Some(("mirror.corp.test".into(), None))
        );
        assert_eq!(
            hp("http://mirror.corp.test:443/"),
            Some(("mirror.corp.test".into(), Some(443)))
        );
        for bad in [
            "file:///srv/wheels",
            "mirror+file:/etc/apt/mirrors.list",
            "cdrom:[Debian]/",
            "ssh://git@git.corp.test/index",
            "https://[fd00::1]/",
            "https://bad_host.corp.test/",
            "https://-bad.corp.test/",
            "https://mirror.corp.test:0/",
            "https://mirror.corp.test:99999/",
            "https://1.2.3.999/",
            "https://%6dirror.corp.test/",
            "https:///path",
            "/srv/wheels",
        ] {
            assert_eq!(hp(bad), None, "{bad}");
        }
    }

    #[test]
    fn redact_drops_userinfo() {
        assert_eq!(
            redact("file://u:pw@mirror.corp.test/x"),
            "file://***@mirror.corp.test/x"
        );
        assert_eq!(
            redact("https://mirror.corp.test/"),
            "https://mirror.corp.test/"
        );
    }

    #[test]
    fn pip_env_and_files() {
        let s = Scratch::new("pip");
        s.write(
            "etc/pip.conf",
            concat!(
                "[global]\n",
                "index-url = https://pypi.corp.test/simple\n",
                "extra-index-url =\n",
                "    https://extra1.corp.test/simple\n",
                "    https://extra2.corp.test:8443/simple\n",
                "\n",
                "[freeze]\n",
                "index-url = https://ignored.corp.test/\n",
            ),
        );
        s.write(
            "home/.config/pip/pip.conf",
            "# comment\n[install]\ntrusted_host = trusted.corp.test:8080 other.corp.test\n",
        );
        s.write(
            "home/.pip/pip.conf",
            "[download]\nindex-url: https://legacy.corp.test/\n",
        );
        let custom = s.write(
            "custom.conf",
            "[global]\nfind-links = https://links.corp.test/ /srv/wheels\n",
        );
        let cfg = s.cfg(&[
            ("PIP_INDEX_URL", "https://env.corp.test/simple"),
            (
                "PIP_EXTRA_INDEX_URL",
                "https://envx1.corp.test/ https://envx2.corp.test/",
            ),
            ("PIP_CONFIG_FILE", custom.to_str().unwrap()),
        ]);
        let found = discover(&cfg);
        assert_eq!(
            names(&found),
            [
                "env.corp.test",
                "envx1.corp.test",
                "envx2.corp.test",
                "extra1.corp.test",
                "extra2.corp.test:8443",
                "legacy.corp.test",
                "links.corp.test",
                "other.corp.test",
                "pypi.corp.test",
                "trusted.corp.test:8080",
            ]
        );
        let pypi = found.iter().find(|h| h.host == "pypi.corp.test").unwrap();
        assert_eq!(
            pypi.source,
            format!("pip: index-url in {}", s.0.join("etc/pip.conf").display())
        );
        let env = found.iter().find(|h| h.host == "env.corp.test").unwrap();
        assert_eq!(env.source, "pip: PIP_INDEX_URL");
    }

    #[test]
    fn pip_xdg_config_home() {
        let s = Scratch::new("pipxdg");
        s.write(
            "xdg/pip/pip.conf",
            "[global]\nindex-url = https://xdg.corp.test/\n",
        );
        s.write(
            "home/.config/pip/pip.conf",
            "[global]\nindex-url = https://notread.corp.test/\n",
        );
        let xdg = s.0.join("xdg");
        let cfg = s.cfg(&[("XDG_CONFIG_HOME", xdg.to_str().unwrap())]);
        assert_eq!(names(&discover(&cfg)), ["xdg.corp.test"]);
    }

    #[test]
    fn npm_files_and_env() {
        let s = Scratch::new("npm");
        s.write(
            "home/.npmrc",
            concat!(
                "registry=https://npm.corp.test/repository/npm/\n",
                "@corp:registry = \"https://scoped.corp.test:4873/\"\n",
                "//npm.corp.test/:_authToken=${TOKEN}\n",
                "# registry=https://comment.corp.test/\n",
                "fund=false\n",
            ),
        );
        s.write("etc/npmrc", "registry=https://${NPM_MIRROR}/\n");
        let cfg = s.cfg(&[
            ("npm_config_registry", "https://env.corp.test/"),
            ("NPM_MIRROR", "global.corp.test"),
        ]);
        let found = discover(&cfg);
        assert_eq!(
            names(&found),
            [
                "env.corp.test",
                "global.corp.test",
                "npm.corp.test",
                "scoped.corp.test:4873"
            ]
        );
        let env = found.iter().find(|h| h.host == "env.corp.test").unwrap();
        assert_eq!(env.source, "npm: npm_config_registry");
        let scoped = found.iter().find(|h| h.host == "scoped.corp.test").unwrap();
        assert!(
            scoped.source.starts_with("npm: @corp:registry in "),
            "{}",
            scoped.source
        );
    }

    #[test]
    fn npm_userconfig_override() {
        let s = Scratch::new("npmuser");
        let rc = s.write("elsewhere/npmrc", "registry=https://user.corp.test/\n");
        s.write("home/.npmrc", "registry=https://notread.corp.test/\n");
        let cfg = s.cfg(&[("NPM_CONFIG_USERCONFIG", rc.to_str().unwrap())]);
        assert_eq!(names(&discover(&cfg)), ["user.corp.test"]);
    }

    #[test]
    fn cargo_config_and_cache() {
        let s = Scratch::new("cargo");
        s.write(
            "home/.cargo/config.toml",
            concat!(
                "[source.crates-io]\n",
                "replace-with = \"corp\"\n",
                "\n",
                "[source.corp]\n",
                "registry = \"sparse+https://Crates.Corp.Test/api/index/\"\n",
                "\n",
                "[source.vendored]\n",
                "directory = \"vendor\"\n",
                "\n",
                "[registries.internal]\n",
                "index = \"https://git.corp.test/index.git\"\n",
            ),
        );
        s.write(
            "home/.cargo/config",
            "[registries.legacy]\nindex = \"sparse+http://legacy.corp.test:8080/\"\n",
        );
        s.write(
            "home/.cargo/registry/index/cache.corp.test-0123456789abcdef/config.json",
            r#"{"dl": "https://dl.corp.test:443/crates/{crate}", "api": "https://api.corp.test"}"#,
        );
        fs::create_dir_all(s.0.join("home/.cargo/registry/index/nohash.corp.test-zz")).unwrap();
        fs::create_dir_all(s.0.join("home/.cargo/registry/index/git.corp.test-fedcba9876543210"))
            .unwrap();
        let cfg = s.cfg(&[(
            "CARGO_REGISTRIES_OTHER_INDEX",
            "sparse+https://env.corp.test/",
        )]);
        let found = discover(&cfg);
        assert_eq!(
            names(&found),
            [
                "api.corp.test",
                "cache.corp.test",
                "crates.corp.test",
                "dl.corp.test",
                "env.corp.test",
                "git.corp.test",
                "legacy.corp.test:8080",
            ]
        );
        let corp = found.iter().find(|h| h.host == "crates.corp.test").unwrap();
        assert!(
            corp.source.starts_with("cargo: source.corp.registry in "),
            "{}",
            corp.source
        );
        // Found in config.toml first, so that source is kept over the cache directory.
        let git = found.iter().find(|h| h.host == "git.corp.test").unwrap();
        assert!(
            git.source
                .starts_with("cargo: registries.internal.index in "),
            "{}",
            git.source
        );
    }

    #[test]
    fn cargo_home_override() {
        let s = Scratch::new("cargohome");
        s.write(
            "home/.cargo/config.toml",
            "[registries.a]\nindex = \"https://notread.corp.test/\"\n",
        );
        s.write(
            "ch/config.toml",
            "[registries.a]\nindex = \"https://home.corp.test/\"\n",
        );
        fs::create_dir_all(s.0.join("ch/registry/index/cached.corp.test-00ff")).unwrap();
        let ch = s.0.join("ch");
        let cfg = s.cfg(&[("CARGO_HOME", ch.to_str().unwrap())]);
        assert_eq!(
            names(&discover(&cfg)),
            ["cached.corp.test", "home.corp.test"]
        );
    }

    #[test]
    fn cargo_bad_toml_is_skipped() {
        let s = Scratch::new("cargobad");
        s.write("home/.cargo/config.toml", "[registries.a\nindex = ");
        assert!(discover(&s.cfg(&[])).is_empty());
    }

    #[test]
    fn apt_one_line_and_deb822() {
        let s = Scratch::new("apt");
        s.write(
            "etc/apt/sources.list",
            concat!(
                "deb http://deb.corp.test/debian bookworm main\n",
                "# deb http://comment.corp.test/debian bookworm main\n",
                "deb-src [ arch=amd64 signed-by=/k.gpg ] https://src.corp.test:8443/debian bookworm main\n",
                "deb cdrom:[Debian GNU/Linux]/ bookworm main\n",
                "deb file:/srv/repo ./\n",
            ),
        );
        s.write(
            "etc/apt/sources.list.d/extra.list",
            concat!(
                "deb [arch=amd64] mirror+https://list.corp.test/mirrors.txt stable main # trailing\n",
                "deb mirror+file:/etc/apt/mirrors/x.list stable main\n",
            ),
        );
        s.write(
            "etc/apt/sources.list.d/corp.sources",
            concat!(
                "Types: deb\n",
                "# URIs: http://commented.corp.test/\n",
                "URIs: http://one.corp.test/debian https://two.corp.test/debian\n",
                "  http://three.corp.test/debian\n",
                "Suites: bookworm\n",
                "Components: main\n",
                "\n",
                "Types: deb\n",
                "Enabled: no\n",
                "URIs: http://disabled.corp.test/debian\n",
                "Suites: bookworm\n",
                "\n",
                "types: deb\n",
                "uris: https://user:pw@lower.corp.test/\n",
            ),
        );
        s.write(
            "etc/apt/sources.list.d/off.sources.disabled",
            "URIs: http://off.corp.test/\n",
        );
        let found = discover(&s.cfg(&[]));
        assert_eq!(
            names(&found),
            [
                "deb.corp.test",
                "list.corp.test",
                "lower.corp.test",
                "one.corp.test",
                "src.corp.test:8443",
                "three.corp.test",
                "two.corp.test",
            ]
        );
        assert!(
            found
                .iter()
                .all(|h| !h.host.contains("pw") && !h.source.contains("pw"))
        );
    }

    #[test]
    fn dedup_keeps_first_source() {
        let s = Scratch::new("dedup");
        s.write(
            "etc/pip.conf",
            "[global]\nindex-url = https://all.corp.test/pypi/simple\n",
        );
        s.write("home/.npmrc", "registry=https://all.corp.test/npm/\n");
        s.write(
            "etc/apt/sources.list",
            concat!(
                "deb https://all.corp.test/debian bookworm main\n",
                "deb https://all.corp.test:8443/debian bookworm main\n",
            ),
        );
        let found = discover(&s.cfg(&[]));
        assert_eq!(names(&found), ["all.corp.test", "all.corp.test:8443"]);
        assert!(
            found[0].source.starts_with("pip: index-url in "),
            "{}",
            found[0].source
        );
    }

    #[test]
    fn userinfo_is_never_kept() {
        let s = Scratch::new("userinfo");
        s.write(
            "etc/pip.conf",
            "[global]\nindex-url = https://alice:hunter2@pypi.corp.test/simple\n",
        );
        let found = discover(&s.cfg(&[]));
        assert_eq!(names(&found), ["pypi.corp.test"]);
        assert!(!format!("{found:?}").contains("hunter2"));
    }

    #[test]
    fn nothing_configured_without_tools_finds_nothing() {
        let _lock = tools_lock();
        let s = Scratch::new("empty");
        // PATH points at tools that would report hosts, but run_tools is false.
        write_fake_tools(&s);
        let bin = s.0.join("bin");
        let cfg = s.cfg(&[("PATH", bin.to_str().unwrap())]);
        assert!(discover(&cfg).is_empty());
    }

    #[test]
    fn missing_home_is_not_relative() {
        let s = Scratch::new("nohome");
        s.write(".npmrc", "registry=https://relative.corp.test/\n");
        let mut cfg = s.cfg(&[]);
        cfg.home = PathBuf::new();
        assert!(discover(&cfg).is_empty());
    }

    /// Serialises the tests that write and run fake tools: a fork in one test while another
    /// still holds a script open for writing would make its exec fail with ETXTBSY.
    fn tools_lock() -> std::sync::MutexGuard<'static, ()> {
        static TOOLS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        TOOLS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fake `python3` and `npm` in `bin/` that print made-up defaults.
    fn write_fake_tools(s: &Scratch) {
        use std::os::unix::fs::PermissionsExt;
        let python = s.write(
            "bin/python3",
            "#!/bin/sh\necho 'https://default-pypi.corp.test/ files.corp.test'\n",
        );
        let npm = s.write(
            "bin/npm",
            "#!/bin/sh\necho https://default-npm.corp.test/\n",
        );
        for tool in [python, npm] {
            fs::set_permissions(tool, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn tools_report_defaults_when_nothing_configured() {
        let _lock = tools_lock();
        let s = Scratch::new("tools");
        write_fake_tools(&s);
        let bin = s.0.join("bin");
        let mut cfg = s.cfg(&[("PATH", bin.to_str().unwrap())]);
        cfg.run_tools = true;
        let found = discover(&cfg);
        assert_eq!(
            names(&found),
            [
                "default-npm.corp.test",
                "default-pypi.corp.test",
                "files.corp.test"
            ]
        );
    }

    #[test]
    fn tools_not_asked_when_configured() {
        let _lock = tools_lock();
        let s = Scratch::new("toolsconf");
        write_fake_tools(&s);
        s.write(
            "etc/pip.conf",
            "[global]\nindex-url = https://pypi.corp.test/\n",
        );
        s.write("home/.npmrc", "registry=https://npm.corp.test/\n");
        let bin = s.0.join("bin");
        let mut cfg = s.cfg(&[("PATH", bin.to_str().unwrap())]);
        cfg.run_tools = true;
        assert_eq!(names(&discover(&cfg)), ["npm.corp.test", "pypi.corp.test"]);
    }

    #[test]
    fn pip_extra_index_still_asks_for_default() {
        let _lock = tools_lock();
        let s = Scratch::new("toolsextra");
        write_fake_tools(&s);
        s.write(
            "etc/pip.conf",
            "[global]\nextra-index-url = https://extra.corp.test/\n",
        );
        let bin = s.0.join("bin");
        let mut cfg = s.cfg(&[("PATH", bin.to_str().unwrap())]);
        cfg.run_tools = true;
        let found = discover(&cfg);
        assert!(names(&found).contains(&"default-pypi.corp.test".to_owned()));
        assert!(names(&found).contains(&"extra.corp.test".to_owned()));
    }

    #[test]
    fn failing_or_missing_tools_are_skipped() {
        let _lock = tools_lock();
        let s = Scratch::new("toolsfail");
        use std::os::unix::fs::PermissionsExt;
        let python = s.write(
            "bin/python3",
            "#!/bin/sh\necho https://bad.corp.test/\nexit 1\n",
        );
        fs::set_permissions(python, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = s.0.join("bin");
        let mut cfg = s.cfg(&[("PATH", bin.to_str().unwrap())]);
        cfg.run_tools = true;
        assert!(discover(&cfg).is_empty());
    }
}

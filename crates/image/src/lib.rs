//! Image builds: a Debian root filesystem made with `mmdebstrap` from the Debian sources the
//! host's apt is configured with (so mirrors and proxies the host uses work), an `agent` user
//! with passwordless sudo, and ownership shifted into the sandbox id range so the tree is
//! root-owned inside a sandbox and owned by nobody real on the host.
#![forbid(unsafe_code)]

pub mod docker;
mod shift;
mod sources;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use paddock_confine::user::remove_tree;
use paddock_core::{IdMap, ImageInfo, ImageStore, ImageStoreError};
pub use sources::{AptSource, debian_sources, host_suite};

/// Packages in the default image.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "git",
    "curl",
    "ca-certificates",
    "python3",
    "python3-pip",
    "python3-venv",
    "nodejs",
    "npm",
    "sudo",
    "procps",
    "less",
    "xz-utils",
];

/// Version of the tree layout written into `image.json`: 2 added apt's proxy setting, sudo's
/// kept proxy and trust-store variables and the package lists.
pub const LAYOUT_VERSION: u32 = 2;

/// Where every sandbox's egress proxy listens, inside (`paddock_core::PROXY_PORT`).
const PROXY_URL: &str = "http://127.0.0.1:3128/";

/// The variables `sudo` keeps: the proxy settings every sandbox gets, and the trust-store
/// pointers a sandbox gets when it trusts more than the image does.
const SUDO_KEEPS: &str = "http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY \
                          SSL_CERT_FILE NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE \
                          GIT_SSL_CAINFO";

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// the image exists
    #[error("image {0} already exists; use --force to rebuild it")]
    Exists(String),
    /// mmdebstrap is missing and could not be installed
    #[error(
        "mmdebstrap is not installed and could not be installed automatically: {0}; install it with `apt-get install mmdebstrap`"
    )]
    NoMmdebstrap(String),
    /// no usable apt sources
    #[error(
        "no Debian apt source for {suite} in the host's apt configuration (/etc/apt/sources.list and sources.list.d); pass --mirror URL"
    )]
    NoSources {
        /// The suite looked for.
        suite: String,
    },
    /// mmdebstrap failed
    #[error("mmdebstrap failed ({status}); its last lines:\n{tail}")]
    Mmdebstrap {
        /// Exit status.
        status: String,
        /// The end of its output.
        tail: String,
    },
    /// user mode cannot be used
    #[error(transparent)]
    UserMode(#[from] paddock_confine::user::UserModeError),
    /// store error
    #[error(transparent)]
    Store(#[from] ImageStoreError),
    /// filesystem error
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Image name.
    pub name: String,
    /// Debian suite.
    pub suite: String,
    /// Mirror override (else the host's apt sources).
    pub mirror: Option<String>,
    /// Packages.
    pub packages: Vec<String>,
    /// Replace an existing image.
    pub force: bool,
    /// Id mapping for the tree.
    pub idmap: IdMap,
    /// Show progress.
    pub progress: bool,
    /// Add Docker's engine and its settings ([`docker`]).
    pub docker: bool,
}

impl BuildOptions {
    /// The default image.
    pub fn default_image(name: &str) -> BuildOptions {
        BuildOptions {
            name: name.to_owned(),
            suite: host_suite(),
            mirror: None,
            packages: DEFAULT_PACKAGES.iter().map(|s| (*s).to_owned()).collect(),
            force: false,
            idmap: paddock_confine::user::current_idmap().unwrap_or_default(),
            progress: true,
            docker: false,
        }
    }
}

/// A package name that is not a Debian package name.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a Debian package name (lower-case letters, digits and + - . only, starting with a letter or digit)"
)]
pub struct BadPackage(pub String);

/// The packages named in a packages file: whitespace- or comma-separated, `#` to the end of a
/// line is a comment.
pub fn packages_in(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `base` plus `extra`, each once, sorted after the base; every name checked (it goes to
/// mmdebstrap's command line).
pub fn package_list(base: &[String], extra: &[String]) -> Result<Vec<String>, BadPackage> {
    let mut all = base.to_vec();
    let mut added: Vec<String> = Vec::new();
    for p in extra.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let ok = p.len() >= 2
            && p.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && p.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
            });
        if !ok {
            return Err(BadPackage(p.to_owned()));
        }
        if !all.iter().any(|a| a == p) && !added.iter().any(|a| a == p) {
            added.push(p.to_owned());
        }
    }
    added.sort();
    all.extend(added);
    Ok(all)
}

/// Why the image `old` differs from what `opts` would build, or `None` when it is the same.
pub fn changes(old: &ImageInfo, opts: &BuildOptions) -> Option<String> {
    if old.version != LAYOUT_VERSION {
        return Some(format!(
            "the image was built by an older Paddock (layout {}, now {LAYOUT_VERSION})",
            old.version
        ));
    }
    if old.suite != opts.suite {
        return Some(format!(
            "the suite changed ({} to {})",
            old.suite, opts.suite
        ));
    }
    if old.docker != opts.docker {
        return Some(if opts.docker {
            "Docker's engine is added".to_owned()
        } else {
            "Docker's engine is left out".to_owned()
        });
    }
    let added: Vec<&str> = opts
        .packages
        .iter()
        .filter(|p| !old.packages.contains(p))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = old
        .packages
        .iter()
        .filter(|p| !opts.packages.contains(p))
        .map(String::as_str)
        .collect();
    if added.is_empty() && removed.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("+{}", added.join(" +")));
    }
    if !removed.is_empty() {
        parts.push(format!("-{}", removed.join(" -")));
    }
    Some(format!("the package list changed ({})", parts.join(" ")))
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn spinner(enabled: bool, msg: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg.to_owned());
    pb
}

/// Installs mmdebstrap from the host's apt when it is missing (as root only).
fn ensure_mmdebstrap(progress: bool) -> Result<(), BuildError> {
    if have("mmdebstrap") {
        return Ok(());
    }
    if paddock_confine::user::is_user_mode() {
        return Err(BuildError::NoMmdebstrap(
            "an ordinary user cannot install packages; run `sudo paddock system setup --user $USER` once".into(),
        ));
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err(BuildError::NoMmdebstrap("this host has no apt-get".into()));
    }
    let pb = spinner(progress, "installing mmdebstrap with apt-get");
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "mmdebstrap",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BuildError::NoMmdebstrap(e.to_string()))?;
    pb.finish_and_clear();
    if status.success() && have("mmdebstrap") {
        Ok(())
    } else {
        Err(BuildError::NoMmdebstrap(format!(
            "apt-get install mmdebstrap: {status}"
        )))
    }
}

/// Builds an image into `store`. The image appears only when complete.
pub fn build(store: &ImageStore, opts: &BuildOptions) -> Result<ImageInfo, BuildError> {
    let final_dir = store.path(&opts.name)?;
    if final_dir.exists() && !opts.force {
        return Err(BuildError::Exists(opts.name.clone()));
    }
    if paddock_confine::user::is_user_mode() && opts.idmap.user.is_none() {
        // The image's ids must be this user's: find out why they are not known.
        paddock_confine::user::current_user_ids()?;
    }
    ensure_mmdebstrap(opts.progress)?;
    let sources: Vec<String> = match &opts.mirror {
        Some(m) => vec![format!("deb {m} {} main", opts.suite)],
        None => debian_sources(&opts.suite)
            .iter()
            .map(AptSource::line)
            .collect(),
    };
    if sources.is_empty() {
        return Err(BuildError::NoSources {
            suite: opts.suite.clone(),
        });
    }
    fs::create_dir_all(store.dir()).map_err(io("cannot create the image store"))?;
    let tmp = store
        .dir()
        .join(format!(".build-{}-{}", opts.name, std::process::id()));
    if tmp.exists() {
        remove_tree(&tmp).map_err(io("cannot clear an old build directory"))?;
    }
    fs::create_dir_all(&tmp).map_err(io("cannot create the build directory"))?;
    let result = build_in(&tmp, opts, &sources);
    let info = match result {
        Ok(i) => i,
        Err(e) => {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
    };
    if final_dir.exists() {
        store.remove(&opts.name, remove_tree)?;
    }
    fs::rename(&tmp, &final_dir).map_err(io("cannot move the finished image into place"))?;
    Ok(info)
}

/// The size in bytes of the user mode tree at `root`, measured by `du` as the root of the
/// tree's user namespace (the user alone cannot read the directories its root keeps private).
fn mapped_size(root: &Path, ids: &paddock_core::UserIds) -> Result<u64, BuildError> {
    let mut du = Command::new("du");
    du.args(["--summarize", "--bytes", "--one-file-system", "--"])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let out = paddock_confine::user::spawn_mapped(&mut du, ids)?
        .wait_with_output()
        .map_err(io("cannot measure the image"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            io("cannot measure the image")(std::io::Error::other(format!("du: {}", out.status)))
        })
}

/// The shell commands mmdebstrap runs on the finished tree (`$1`): the agent user with
/// passwordless sudo; sudo keeping the proxy and trust-store variables; apt using the proxy
/// even where they are gone (a root login shell); a plain `/etc/hosts`; no resolver (names are
/// the proxy's to resolve).
fn customize_hooks() -> Vec<String> {
    let keeps = SUDO_KEEPS.split_whitespace().collect::<Vec<_>>().join(" ");
    vec![
        "chroot \"$1\" useradd --create-home --uid 1000 --user-group --shell /bin/bash agent".into(),
        "echo 'agent ALL=(ALL:ALL) NOPASSWD: ALL' > \"$1/etc/sudoers.d/agent\" && chmod 0440 \"$1/etc/sudoers.d/agent\"".into(),
        format!(
            "echo 'Defaults env_keep += \"{keeps}\"' > \"$1/etc/sudoers.d/paddock-env\" && chmod 0440 \"$1/etc/sudoers.d/paddock-env\""
        ),
        format!(
            "printf 'Acquire::http::Proxy \"{PROXY_URL}\";\\nAcquire::https::Proxy \"{PROXY_URL}\";\\n' > \"$1/etc/apt/apt.conf.d/90paddock-proxy\""
        ),
        "printf '127.0.0.1 localhost\\n::1 localhost ip6-localhost ip6-loopback\\n' > \"$1/etc/hosts\"".into(),
        "rm -f \"$1/etc/resolv.conf\" && touch \"$1/etc/resolv.conf\"".into(),
    ]
}

fn build_in(tmp: &Path, opts: &BuildOptions, sources: &[String]) -> Result<ImageInfo, BuildError> {
    let rootfs = tmp.join("rootfs");
    let pb = spinner(
        opts.progress,
        &format!(
            "building image {} (Debian {}) with mmdebstrap",
            opts.name, opts.suite
        ),
    );
    // As an ordinary user, mmdebstrap runs as root of a user namespace that maps the user's
    // subordinate ids the way the sandboxes will (`paddock_core::UserIds`): the tree comes out
    // owned by the ids it has inside a sandbox, the agent's files by the user.
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--include={}", opts.packages.join(",")))
        // The package lists stay, compressed (about a fifth of their size), so that
        // `sudo apt-get install` works at once; `apt-get update` refreshes them through the
        // proxy.
        .arg("--skip=cleanup/apt/lists")
        .arg("--aptopt=Acquire::GzipIndexes \"true\"")
        .arg("--aptopt=Acquire::CompressionTypes::Order:: \"gz\"")
        .args(
            customize_hooks()
                .iter()
                .chain(opts.docker.then(docker::customize_hooks).iter().flatten())
                .map(|h| format!("--customize-hook={h}")),
        )
        .arg(&opts.suite)
        .arg(&rootfs)
        .args(sources)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match &opts.idmap.user {
        Some(ids) => paddock_confine::user::spawn_mapped(&mut cmd, ids)?,
        None => cmd.spawn().map_err(io("cannot start mmdebstrap"))?,
    };
    let mut tail: Vec<String> = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(msg) = line.strip_prefix("I: ") {
                pb.set_message(format!("image {}: {msg}", opts.name));
            }
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(io("waiting for mmdebstrap"))?;
    pb.finish_and_clear();
    if !status.success() {
        return Err(BuildError::Mmdebstrap {
            status: status.to_string(),
            tail: tail.join("\n"),
        });
    }
    let size = match opts.idmap.user {
        Some(ids) => mapped_size(&rootfs, &ids)?,
        None => shift::shift_tree(&rootfs, opts.idmap.base, opts.progress)
            .map_err(io("cannot shift the image's ownership"))?,
    };
    let info = ImageInfo {
        name: opts.name.clone(),
        suite: opts.suite.clone(),
        packages: opts.packages.clone(),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        size,
        idmap: opts.idmap,
        version: LAYOUT_VERSION,
        docker: opts.docker,
    };
    let json = serde_json::to_string_pretty(&info).unwrap_or_default();
    fs::write(tmp.join("image.json"), json).map_err(io("cannot write image.json"))?;
    Ok(info)
}

/// Runs one customize hook on the tree `root`, as mmdebstrap does (`$1` is the tree); it must
/// succeed.
#[cfg(test)]
fn run_hook(hook: &str, root: &Path) {
    let o = Command::new("sh")
        .args(["-c", hook, "sh"])
        .arg(root)
        .output()
        .expect("sh runs");
    assert!(o.status.success(), "{hook}: {o:?}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn extra_packages_are_read_checked_and_added_once() {
        let text = "# tools\njq ripgrep # search\n\nbuild-essential,libssl-dev\n jq\n";
        assert_eq!(
            packages_in(text),
            ["jq", "ripgrep", "build-essential", "libssl-dev", "jq"]
        );
        let base = strings(&["bash", "git"]);
        assert_eq!(
            package_list(&base, &strings(&["ripgrep", "git", "jq", "ripgrep", "g++"])).unwrap(),
            ["bash", "git", "g++", "jq", "ripgrep"]
        );
        for bad in ["Jq", "-jq", "j", "jq;rm", "a b", "jq=1.6"] {
            let e = package_list(&base, &strings(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a Debian package name"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_image_is_rebuilt_only_when_what_it_holds_changes() {
        let opts = BuildOptions {
            packages: strings(&["bash", "git", "jq"]),
            suite: "bookworm".into(),
            ..BuildOptions::default_image("x")
        };
        let info = |packages: &[&str], suite: &str, version| ImageInfo {
            name: "x".into(),
            suite: suite.into(),
            packages: strings(packages),
            created_at: 0,
            size: 0,
            idmap: IdMap::default(),
            version,
            docker: false,
        };
        let same = info(&["bash", "git", "jq"], "bookworm", LAYOUT_VERSION);
        assert_eq!(changes(&same, &opts), None);
        assert_eq!(
            changes(
                &info(&["bash", "git", "tree"], "bookworm", LAYOUT_VERSION),
                &opts
            )
            .unwrap(),
            "the package list changed (+jq -tree)"
        );
        assert!(
            changes(
                &info(&["bash", "git", "jq"], "trixie", LAYOUT_VERSION),
                &opts
            )
            .unwrap()
            .contains("suite changed")
        );
        assert!(
            changes(&info(&["bash", "git", "jq"], "bookworm", 1), &opts)
                .unwrap()
                .contains("older Paddock")
        );
    }

    #[test]
    fn the_hooks_keep_the_proxy_for_sudo_and_apt() {
        let root = tempfile::tempdir().unwrap();
        for d in ["etc/sudoers.d", "etc/apt/apt.conf.d"] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        for hook in customize_hooks().iter().filter(|h| !h.contains("chroot")) {
            run_hook(hook, root.path());
        }
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("etc/sudoers.d/paddock-env"),
            "Defaults env_keep += \"http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY SSL_CERT_FILE NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO\"\n"
        );
        assert_eq!(
            read("etc/apt/apt.conf.d/90paddock-proxy"),
            "Acquire::http::Proxy \"http://127.0.0.1:3128/\";\nAcquire::https::Proxy \"http://127.0.0.1:3128/\";\n"
        );
        assert_eq!(read("etc/resolv.conf"), "");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(root.path().join("etc/sudoers.d/paddock-env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);
    }
}

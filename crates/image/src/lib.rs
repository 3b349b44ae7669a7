//! Image builds: a Debian root filesystem made with `mmdebstrap` from the Debian sources the
//! host's apt is configured with (so mirrors and proxies the host uses work), an `agent` user
//! with passwordless sudo, and ownership shifted into the sandbox id range so the tree is
//! root-owned inside a sandbox and owned by nobody real on the host.
#![forbid(unsafe_code)]

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

/// Version of the tree layout written into `image.json`.
pub const LAYOUT_VERSION: u32 = 1;

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
        }
    }
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
        .arg("--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --user-group --shell /bin/bash agent")
        .arg("--customize-hook=echo 'agent ALL=(ALL:ALL) NOPASSWD: ALL' > \"$1/etc/sudoers.d/agent\" && chmod 0440 \"$1/etc/sudoers.d/agent\"")
        .arg("--customize-hook=printf '127.0.0.1 localhost\\n::1 localhost ip6-localhost ip6-loopback\\n' > \"$1/etc/hosts\"")
        .arg("--customize-hook=rm -f \"$1/etc/resolv.conf\" && touch \"$1/etc/resolv.conf\"")
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
    };
    let json = serde_json::to_string_pretty(&info).unwrap_or_default();
    fs::write(tmp.join("image.json"), json).map_err(io("cannot write image.json"))?;
    Ok(info)
}

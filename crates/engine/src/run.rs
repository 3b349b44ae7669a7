//! Running a sandbox as `paddock run` and `create` do: the request checked, the sandbox
//! recorded with its rules, then its command run attached, started in the background, or only
//! recorded.

use std::path::{Path, PathBuf};

use paddock_core::{Dirs, Launch, Network, SandboxName, SandboxSpec, Stdio};
use paddock_policy::net::{Rule, Scope};
use paddock_policy::{AbsPath, Mount};

use crate::create::{
    AUTO_NOTE, RunRequest, Validated, generated_name, moved_workspace, note_is_new, spec_for,
    validate,
};
use crate::remove::Removal;
use crate::sandboxes::running;
use crate::{Engine, EngineError, Reporter, Result, invalid};

/// What a run does once the sandbox is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Start it and wait for its command, with this process's streams (`run`); `tty`: in a
    /// terminal of its own, this process's being one.
    Attached {
        /// Whether the command gets a terminal.
        tty: bool,
    },
    /// Start it in the background (`run -d`).
    Detached,
    /// Only record it (`create`).
    Create,
}

/// What Paddock adds to a run it makes itself (an agent's install sandbox).
#[derive(Debug, Default)]
pub(crate) struct Internal {
    /// No report of what the run changed in the workspace (Paddock's own directory).
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// The sandbox.
    pub name: SandboxName,
    /// How its command ended, when it ran attached.
    pub outcome: Option<paddock_supervisor::Outcome>,
}

impl Engine {
    /// Makes (or reuses) the sandbox `args` asks for and, as `mode` says, runs its command
    /// attached, starts it in the background, or only records it.
    pub fn run(&self, args: &RunRequest, mode: Mode, report: &dyn Reporter) -> Result<RunOutcome> {
        self.run_with(args, mode, Internal::default(), report)
    }

    pub(crate) fn run_with(
        &self,
        args: &RunRequest,
        mode: Mode,
        internal: Internal,
        report: &dyn Reporter,
    ) -> Result<RunOutcome> {
        if mode == Mode::Create && args.rm {
            return Err(invalid("--rm makes no sense with create"));
        }
        let mut v = validate(args, report)?;
        // An agent runs in one sandbox per workspace unless --name or --rm says otherwise (and
        // from the agent cache, installed below once the other checks are done).
        if v.name.is_none()
            && !args.rm
            && let Some(agent) = &v.agent
        {
            v.name = Some(crate::agent_install::sandbox_name(
                &agent.name,
                &v.workspace,
            ));
        }
        let (dirs, store) = (&self.dirs, &self.store);
        let existing = match &v.name {
            Some(n) => store.get(n)?,
            None => None,
        };
        // A sandbox made on the subdirectory itself (before roots were shared) keeps it.
        if let Some(old) = &existing
            && v.cwd.as_ref() == Some(&old.spec.workspace)
        {
            v.workspace = old.spec.workspace.clone();
            v.cwd = None;
            v.git_note = None;
        }
        if let Some(note) = &v.git_note {
            report.note(note);
        }
        if mode == Mode::Create
            && let Some(old) = &existing
        {
            return Err(EngineError::Conflict(format!(
                "a sandbox named {} already exists (`paddock start {}` starts it)",
                old.spec.name, old.spec.name
            )));
        }
        // A sandbox keeps its workspace: its layer and its agent's state belong to that project.
        if let Some(old) = &existing
            && old.spec.workspace != v.workspace
        {
            return Err(invalid(moved_workspace(
                &old.spec.name,
                &old.spec.workspace,
                &v.workspace,
            )));
        }
        // A sandbox keeps its backend: its disk and packages live there.
        let requested = match (&existing, args.backend()) {
            (Some(old), "auto") => old.spec.backend.clone(),
            (_, b) => b.to_owned(),
        };
        let (backend, why) = paddock_supervisor::select(&requested)?;
        // Which backend `auto` picked for a new sandbox, and why: on a terminal, once per user and
        // host until the choice or its reason changes (`paddock ls` shows the backend afterwards,
        // `paddock doctor` the reason).
        if existing.is_none() && requested == "auto" && report.interactive() {
            let note = format!("backend {}: {why}", backend.id());
            if note_is_new(&dirs.home().join(AUTO_NOTE), &note) {
                report.note(&format!(
                    "{note} (said once; `paddock doctor` says it again)"
                ));
            }
        }
        if let Some(old) = &existing
            && old.spec.backend != backend.id()
        {
            return Err(invalid(format!(
                "sandbox {} runs on the {} backend (its installed packages live there); `paddock rm {}` first to move it to {}",
                old.spec.name,
                old.spec.backend,
                old.spec.name,
                backend.id()
            )));
        }
        let name = v
            .name
            .clone()
            .unwrap_or_else(|| generated_name(&v.workspace));
        let mut spec = spec_for(&v, name.clone(), backend.id(), args.image(), args.no_sudo);
        // Review mode stays with a sandbox: its layer may hold changes not yet applied, which a
        // run on the workspace itself would hide.
        spec.review |= existing.as_ref().is_some_and(|old| old.spec.review);
        // So does its Docker Engine: its images live in the layer, and so does its image.
        spec.docker |= existing.as_ref().is_some_and(|old| old.spec.docker);
        if spec.docker {
            backend
                .docker()
                .map_err(|why| invalid(format!("--docker: {why}")))?;
            // An image that has the engine is used as it is; any other gets its `-docker` twin.
            let has_engine = paddock_core::ImageStore::new(dirs.images())
                .get(&spec.image)
                .is_ok_and(|i| i.docker);
            if !has_engine {
                spec.image = paddock_image::docker::image_name(&spec.image);
            }
            paddock_core::check_image_name(&spec.image).map_err(|e| invalid(e.to_string()))?;
        }
        // Limits: the flags, else this host's defaults (a share of its memory and free disk, so
        // that no sandbox can take the host's), as every other setting of a reused sandbox comes
        // from this command's flags. The disk belongs to the layer: a reused sandbox keeps its
        // size (a layer made without one cannot be given one in place).
        let mut defaults = backend.default_limits(dirs.home());
        if let Some(old) = &existing {
            defaults.disk = old.spec.limits.disk;
        }
        spec.limits = spec.limits.or(&defaults);
        backend
            .check_limits(&spec.limits)
            .map_err(|e| invalid(e.to_string()))?;
        // After every check that needs no image, so that bad input never waits for a build.
        let (image, rootfs) = self.image(&spec.image, report)?;
        if spec.docker && !image.docker {
            return Err(invalid(format!(
                "--docker: image {} has no Docker engine; `paddock image build {} --docker` adds it, or leave --image out",
                image.name, image.name
            )));
        }
        // Likewise the agent's install, the first time.
        if let Some(agent) = v.agent.as_ref().filter(|a| a.package.is_some())
            && !v.no_network
        {
            let installed = self.ensure_installed(agent, args.backend(), false, report)?;
            spec.mounts.push(Mount {
                host: AbsPath::try_from(installed.dir).map_err(|e| invalid(e.to_string()))?,
                sandbox: AbsPath::try_from(PathBuf::from(crate::agents::INSIDE))
                    .map_err(|e| invalid(e.to_string()))?,
                read_only: true,
            });
        }
        let created = existing.is_none();
        let tty = mode == Mode::Attached { tty: true };
        let attached = matches!(mode, Mode::Attached { .. });
        // Caught before the sandbox is recorded: a stop signal from here on ends the start cleanly.
        let signals = match attached {
            true => Some(paddock_supervisor::catch_signals(tty)?),
            false => None,
        };
        if let Some(old) = &existing {
            if old.spec.image != spec.image {
                return Err(invalid(format!(
                    "sandbox {name} uses image {}; `paddock rm {name}` first to change its image",
                    old.spec.image
                )));
            }
            // Its settings are not replaced under a running sandbox.
            if running(dirs, &name) {
                return Err(EngineError::Conflict(format!(
                    "sandbox {name} is running; `paddock exec {name} -- …` runs more commands in it, `paddock stop {name}` stops it"
                )));
            }
            store.update_spec(&spec)?;
        } else {
            store.insert(&spec)?;
        }
        if !args.no_network {
            let rules = store;
            let scope = Scope::Sandbox(name.to_string());
            let had = rules.preset_of(&scope)?;
            let preset = match (&args.policy, &had) {
                (Some(p), _) => Some(p.as_str()),
                (None, None) => Some(paddock_store::presets::DEFAULT),
                // The preset it has, now ending in an ask.
                (None, Some(p)) if args.ask_unlisted => Some(p.as_str()),
                (None, Some(_)) => None,
            };
            if let Some(p) = preset {
                crate::policy::apply_preset(dirs, rules, &scope, p, false, args.ask_unlisted)?;
            }
            let have = rules.rules_for(name.as_str())?;
            let fresh: Vec<Rule> = v
                .allow
                .iter()
                .filter(|r| !have.iter().any(|h| h.scope == scope && h.rule == **r))
                .cloned()
                .collect();
            rules.add(&scope, &fresh, "run")?;
        }
        if let Some(agent) = &v.agent {
            agent_hints(dirs, agent, &name, &v, report);
        }
        let argv = match &v.agent {
            Some(agent) => crate::agents::argv(agent, &args.command),
            None if args.command.is_empty() && !attached => crate::background::KEEP_ALIVE
                .iter()
                .map(|s| s.to_string())
                .collect(),
            None if args.command.is_empty() => vec!["bash".to_owned()],
            None => args.command.clone(),
        };
        if !attached {
            crate::background::write_main(
                dirs,
                &name,
                &crate::background::Main {
                    argv,
                    rm: args.rm,
                    tty: args.tty || v.agent.is_some(),
                    cwd: v.cwd.as_ref().map(ToString::to_string),
                },
            )?;
            if mode == Mode::Detached {
                self.start_detached(&name)?;
            }
            return Ok(RunOutcome {
                name,
                outcome: None,
            });
        }
        let uid = spec.user.uid();
        let launch = Launch {
            argv,
            env: paddock_supervisor::environment(
                std::env::vars(),
                &spec.env,
                uid,
                tty,
                name.as_str(),
                spec.network == Network::Proxy,
            ),
            cwd: v.cwd.as_ref().unwrap_or(&spec.workspace).to_string(),
            uid,
            stdio: Stdio::for_this_terminal(tty),
        };
        let started = std::time::SystemTime::now();
        let spec = SandboxSpec {
            discard_layer: args.rm,
            ..spec
        };
        let signals = match signals {
            Some(s) => s,
            None => paddock_supervisor::catch_signals(tty)?,
        };
        let result = paddock_supervisor::run_attached(
            dirs,
            store,
            &spec,
            backend.as_ref(),
            &image,
            rootfs,
            &launch,
            signals,
        );
        // What the run changed that the host may later run: shown now, kept for `paddock trust`.
        if !internal.quiet {
            crate::trust::report(dirs, &spec, started, true, report);
        }
        // A failed first start of a sandbox with a generated name leaves nothing behind; a sandbox
        // the user named is never removed by a failure (its layer may hold the agent's work).
        let remove_after = args.rm || (created && v.name.is_none() && result.is_err());
        if !remove_after && result.is_err() && v.name.is_some() {
            report.note(&format!(
                "sandbox {name} is kept as it was (`paddock rm {name}` removes it)"
            ));
        }
        if remove_after {
            let how = match result {
                Ok(_) => Removal::AfterRun,
                Err(_) => Removal::Full,
            };
            let _ = self.remove(&name, how);
        }
        let outcome = match result {
            Ok(o) => o,
            // A stop signal during the start (timeout, Ctrl-C) is what ended it, whatever failed.
            Err(e) => match e.signal() {
                Some(signal) if remove_after => {
                    return Err(EngineError::Interrupted {
                        message: format!("{e}; nothing was kept"),
                        signal,
                    });
                }
                Some(signal) => {
                    return Err(EngineError::Interrupted {
                        message: e.to_string(),
                        signal,
                    });
                }
                None => return Err(e.into()),
            },
        };
        Ok(RunOutcome {
            name,
            outcome: Some(outcome),
        })
    }
}

/// What an agent preset needs that is missing: its secrets, its network, its configuration.
fn agent_hints(
    dirs: &Dirs,
    agent: &crate::agents::Agent,
    name: &SandboxName,
    v: &Validated,
    report: &dyn Reporter,
) {
    if v.no_network && agent.package.is_some() {
        report.note(&format!(
            "{} is installed from the npm registry on first use; with --no-network that cannot happen (and an installed one is not used)",
            agent.name
        ));
    }
    let have = paddock_secrets::SecretStore::at_default(dirs.home())
        .for_sandbox(name.as_str())
        .unwrap_or_default();
    for svc in &agent.services {
        if !have
            .iter()
            .any(|e| e.service.as_deref() == Some(svc.as_str()))
        {
            report.note(&format!(
                "no {svc} secret stored; `paddock secret set {svc}` keeps it on the host (or log in inside the sandbox)"
            ));
        }
    }
    if let (Some(home), true) = (std::env::var_os("HOME"), !v.agent_config)
        && let Some((dir, inside)) = crate::agents::config_share(agent, Path::new(&home))
        && dir.is_dir()
    {
        report.note(&format!(
            "{} (your {} settings and login) is not shared; --agent-config shares it at {} (else the sandbox keeps its own)",
            dir.display(),
            agent.name,
            inside.display()
        ));
    }
}

//! A review-mode sandbox's changes over the API: list them with their diffs, apply them to the
//! workspace, or discard them. Each runs the command line's own `paddock diff`, `apply` or
//! `discard` (which run the review helper confined to the sandbox's layer), so a change is
//! checked, listed and written exactly as there.

use std::ffi::OsString;
use std::process::Stdio;

use axum::extract::{Path, State};
use paddock_engine::files::workspace_path;
use paddock_engine::{EngineError, invalid};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{ApiState, NamePath, blocking, name_of, problem};
use crate::{Json, Problem, ProblemCode};

/// The routes, to merge into the API's router.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(changes))
        .routes(routes!(apply))
        .routes(routes!(discard))
}

/// The most a diff may hold in an answer (the changes' list, and the patch text apart).
pub const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;

/// What waits for review.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changes {
    /// Each change, risky ones first, as `paddock diff --json` prints it: `path` (escaped
    /// text, with `path_escaped`), `kind` (added, modified, deleted, renamed with `from`,
    /// mode, type_changed, special), `old` and `new` entries, `binary`, `risk` (why the host
    /// may run or follow it), `conflict` (the host changed it meanwhile) and `git_internal`.
    #[schema(value_type = Vec<Object>)]
    pub changes: serde_json::Value,
    /// The unified diff of them all, as `paddock diff` prints it (each change's notes as `#`
    /// lines before it; bytes a terminal would act on are escaped).
    pub patch: String,
    /// Whether the patch was cut at 16 MiB.
    pub patch_truncated: bool,
}

/// Which changes to apply, and how.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApplyBody {
    /// Only the changes under these paths, relative to the workspace root (all when empty).
    pub paths: Vec<String>,
    /// Overwrite files the host changed meanwhile with the sandbox's version.
    pub force: bool,
    /// Merge text files the host changed meanwhile (three-way) where the merge is clean.
    pub merge: bool,
}

/// Which changes to discard.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DiscardBody {
    /// Only the changes under these paths, relative to the workspace root (all when empty).
    pub paths: Vec<String>,
}

/// What an apply or a discard did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewResult {
    /// Whether every selected change was applied (or discarded); when not, `notes` says which
    /// were refused and why (a conflict, a path with no change), and they still wait.
    pub complete: bool,
    /// What it did and refused, line by line.
    pub notes: Vec<String>,
}

/// How `paddock diff`, `apply` or `discard` ended.
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr: String,
}

impl Ran {
    /// Its lines for a person, without the `paddock: ` each begins with.
    fn notes(&self) -> Vec<String> {
        let out = String::from_utf8_lossy(&self.stdout);
        out.lines()
            .chain(self.stderr.lines())
            .map(|l| l.strip_prefix("paddock: ").unwrap_or(l).to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The problem a failure is answered with: a refusal (status 2: not in review mode,
    /// running, its workspace gone) is a conflict, anything else the server's.
    fn failure(&self) -> Problem {
        let detail = self.notes().join("; ");
        match self.code {
            Some(2) => Problem::new(ProblemCode::Conflict, detail),
            _ => Problem::internal(detail),
        }
    }
}

impl ApiState {
    /// Runs `paddock OP NAME ARGS… -- PATHS…` for a review-mode sandbox, checked first: which
    /// sandbox (an unknown one is 404 whatever the request), then `check`, then the paths.
    async fn review_command(
        &self,
        name: &str,
        op: &'static str,
        args: Vec<&'static str>,
        paths: Vec<String>,
        check: Result<(), EngineError>,
    ) -> Result<Ran, Problem> {
        let name = name_of(name)?;
        let raw = name.as_str().to_owned();
        let (home, _) = blocking(self, move |e, _| {
            let rec = e.record(&name)?;
            if !rec.spec.review {
                return Err(EngineError::Conflict(format!(
                    "sandbox {name} is not in review mode: its changes are in the workspace already"
                )));
            }
            Ok(e.dirs().home().to_owned())
        })
        .await?;
        check.map_err(|e| problem(&e))?;
        let rel = paths
            .iter()
            .map(|p| workspace_path(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| problem(&e))?;
        let exe = std::env::current_exe()
            .map_err(|e| Problem::internal(format!("cannot find the paddock executable: {e}")))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg(op).arg(raw).args(args).arg("--");
        cmd.args(rel.iter().map(|r| OsString::from(r.as_path())));
        // From the root, so that a relative path is taken from the workspace, never from the
        // server's own directory.
        cmd.current_dir("/")
            .env("PADDOCK_HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Problem::internal(format!("cannot run paddock {op}: {e}")))?;
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(o) = out.as_mut() {
                o.take(MAX_DIFF_BYTES as u64 + 1)
                    .read_to_end(&mut buf)
                    .await?;
            }
            std::io::Result::Ok(buf)
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(e) = err.as_mut() {
                e.take(1024 * 1024).read_to_end(&mut buf).await?;
            }
            std::io::Result::Ok(buf)
        };
        let (stdout, stderr) = tokio::try_join!(read_out, read_err)
            .map_err(|e| Problem::internal(format!("cannot read paddock {op}: {e}")))?;
        let stdout_truncated = stdout.len() > MAX_DIFF_BYTES;
        if stdout_truncated {
            // Not read to its end: it must not wait on a full pipe.
            let _ = child.start_kill();
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Problem::internal(format!("cannot wait for paddock {op}: {e}")))?;
        let mut stdout = stdout;
        stdout.truncate(MAX_DIFF_BYTES);
        Ok(Ran {
            code: if stdout_truncated {
                Some(0)
            } else {
                status.code()
            },
            stdout,
            stdout_truncated,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// The changes of a review-mode sandbox that wait for review, with their diff.
    pub async fn changes(&self, name: &str) -> Result<Changes, Problem> {
        let listed = self
            .review_command(name, "diff", vec!["--json"], Vec::new(), Ok(()))
            .await?;
        if listed.code != Some(0) {
            return Err(listed.failure());
        }
        if listed.stdout_truncated {
            return Err(Problem::internal(
                "the list of changes is larger than 16 MiB; `paddock diff --stat` on the host shows it",
            ));
        }
        let changes: serde_json::Value = serde_json::from_slice(&listed.stdout)
            .map_err(|e| Problem::internal(format!("paddock diff --json printed no JSON: {e}")))?;
        let patch = self
            .review_command(name, "diff", Vec::new(), Vec::new(), Ok(()))
            .await?;
        if patch.code != Some(0) {
            return Err(patch.failure());
        }
        Ok(Changes {
            changes,
            patch: String::from_utf8_lossy(&patch.stdout).into_owned(),
            patch_truncated: patch.stdout_truncated,
        })
    }

    /// Applies changes of a review-mode sandbox to its workspace.
    pub async fn apply(&self, name: &str, body: ApplyBody) -> Result<ReviewResult, Problem> {
        let check = match body.force && body.merge {
            true => Err(invalid("give force or merge, not both")),
            false => Ok(()),
        };
        let mut args = Vec::new();
        if body.force {
            args.push("--force");
        }
        if body.merge {
            args.push("--merge");
        }
        let ran = self
            .review_command(name, "apply", args, body.paths, check)
            .await?;
        reviewed(&ran)
    }

    /// Discards changes of a stopped review-mode sandbox.
    pub async fn discard(&self, name: &str, body: DiscardBody) -> Result<ReviewResult, Problem> {
        let ran = self
            .review_command(name, "discard", vec!["--force"], body.paths, Ok(()))
            .await?;
        reviewed(&ran)
    }
}

/// An apply or discard's answer: status 0 did all, 1 refused some, others failed.
fn reviewed(ran: &Ran) -> Result<ReviewResult, Problem> {
    match ran.code {
        Some(0) | Some(1) => Ok(ReviewResult {
            complete: ran.code == Some(0),
            notes: ran.notes(),
        }),
        _ => Err(ran.failure()),
    }
}

/// The changes a review-mode sandbox made that wait for the user's review, each with its
/// diff against the workspace as it is now: risky ones (files the host may run, such as git
/// hooks and CI files) first, conflicts (files the host changed meanwhile) marked. 409 for a
/// sandbox not in review mode.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/changes",
    tag = "review",
    params(NamePath),
    responses(
        (status = 200, body = Changes),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn changes(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Changes>, Problem> {
    Ok(Json(state.changes(&name).await?))
}

/// Writes a review-mode sandbox's changes (all, or those under `paths`) to the workspace, each
/// file whole or not at all. A file the host changed meanwhile is refused unless `force` or a
/// clean `merge`; what is refused still waits, and `complete` is false.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/changes/apply",
    tag = "review",
    params(NamePath),
    request_body = ApplyBody,
    responses(
        (status = 200, body = ReviewResult),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn apply(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<ApplyBody>,
) -> Result<Json<ReviewResult>, Problem> {
    Ok(Json(state.apply(&name, body).await?))
}

/// Drops a stopped review-mode sandbox's changes (all, or those under `paths`); the workspace
/// is not touched. 409 while the sandbox runs.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/changes/discard",
    tag = "review",
    params(NamePath),
    request_body = DiscardBody,
    responses(
        (status = 200, body = ReviewResult),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn discard(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<DiscardBody>,
) -> Result<Json<ReviewResult>, Problem> {
    Ok(Json(state.discard(&name, body).await?))
}

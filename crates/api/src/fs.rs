//! A running sandbox's own file system, by absolute paths as the sandbox sees them: its image,
//! its layer (installed packages, /etc, /home), its workspace with a review-mode sandbox's
//! pending changes. Each operation is a command run inside the sandbox through the same exec
//! as `POST …/exec` (as root unless another `user` is asked), so it reaches exactly what the
//! sandbox reaches and nothing of the host: a symlink resolves in the sandbox's own root, as
//! any of its programs would resolve it. `find`, `cat`, `head` and `sh` of the image do the
//! work (every Debian image has them).

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use base64::Engine as _;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{
    ApiState, Encoding, ExecBody, ExecResult, FileEntry, FileList, MAX_FILE_BYTES, NamePath,
};
use crate::{Json, Problem, body_limit};

/// The routes, to merge into the API's router.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(fs_list))
        .routes(routes!(fs_stat))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(fs_read, fs_write))
                .layer(body_limit(MAX_FILE_BYTES)),
        )
}

/// The most entries a listing returns.
const MAX_ENTRIES: usize = 10_000;

/// `find -printf`'s format for one entry: type, size, mode, time, link target, path, each
/// ended by a NUL (no byte of a path can end a field early).
const ENTRY_FORMAT: &str = "%y\\0%s\\0%m\\0%T@\\0%l\\0%p\\0";

/// A path of the sandbox's file system.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsQuery {
    /// An absolute path inside the sandbox.
    #[param(pattern = "^/")]
    pub path: String,
    /// Whose rights the operation has inside: `root` (default), `agent` or a uid.
    pub user: Option<String>,
}

/// A file to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsReadQuery {
    /// An absolute path inside the sandbox.
    #[param(pattern = "^/")]
    pub path: String,
    /// Whose rights the operation has inside: `root` (default), `agent` or a uid.
    pub user: Option<String>,
    /// Refuse a file larger than this (default and most: 16 MiB).
    #[param(maximum = 16777216)]
    pub max_bytes: Option<u64>,
}

/// A file to write.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FsWriteQuery {
    /// An absolute path inside the sandbox.
    #[param(pattern = "^/")]
    pub path: String,
    /// Whose rights the operation has inside (and who owns a new file): `root` (default),
    /// `agent` or a uid.
    pub user: Option<String>,
    /// Permission bits in octal (e.g. `755`).
    #[param(pattern = "^[0-7]{1,4}$")]
    pub mode: Option<String>,
    /// Make missing directories (default true).
    pub parents: Option<bool>,
}

/// The largest file read in one request (an exec's output cap).
const MAX_READ: u64 = crate::sandboxes::MAX_OUTPUT_CAP as u64;

fn absolute(path: &str) -> Result<(), Problem> {
    if !path.starts_with('/') || path.contains('\0') || path.len() > 4096 {
        return Err(Problem::unprocessable(format!(
            "path {path:?}: give an absolute path inside the sandbox (at most 4096 bytes)"
        )));
    }
    Ok(())
}

/// The problem a failed command inside is answered with: its own message, 404 for a missing
/// path, 422 for the rest (not a directory, not a regular file, no permission).
fn failed(r: &ExecResult) -> Problem {
    let said = base64::engine::general_purpose::STANDARD
        .decode(&r.stderr)
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let said = said.strip_prefix("find: ").unwrap_or(&said).to_owned();
    if said.contains("No such file or directory") {
        Problem::new(crate::ProblemCode::NotFound, said)
    } else if r.timed_out {
        Problem::internal("the sandbox did not answer within 60 s")
    } else {
        Problem::unprocessable(said)
    }
}

/// Entries as `find -printf ENTRY_FORMAT` wrote them; the last may be cut (a capped output).
fn entries(out: &[u8]) -> Vec<FileEntry> {
    let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    fields
        .chunks_exact(6)
        .filter_map(|f| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let kind = match f[0] {
                b"f" => "file",
                b"d" => "dir",
                b"l" => "symlink",
                _ => "other",
            };
            Some(FileEntry {
                path: text(f[5]),
                kind: kind.to_owned(),
                size: text(f[1]).parse().ok()?,
                mode: u32::from_str_radix(&text(f[2]), 8).ok()?,
                modified: text(f[3]).split('.').next()?.parse().ok()?,
                target: (kind == "symlink").then(|| text(f[4])),
            })
        })
        .collect()
}

impl ApiState {
    /// Sandbox `name` exists (an unknown one is 404 whatever the request), and `path` is an
    /// absolute path.
    async fn fs_checked(&self, name: &str, path: &str) -> Result<(), Problem> {
        let sandbox = crate::sandboxes::name_of(name)?;
        crate::sandboxes::blocking(self, move |e, _| e.record(&sandbox).map(|_| ())).await?;
        absolute(path)
    }

    /// Runs `command` in running sandbox `name` as `user` (root by default), its output as
    /// bytes, within 60 s.
    async fn inside(
        &self,
        name: &str,
        user: Option<String>,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
        cap: usize,
    ) -> Result<(ExecResult, Vec<u8>), Problem> {
        let body = ExecBody {
            command,
            user: Some(user.unwrap_or_else(|| "root".into())),
            workdir: Some("/".into()),
            stdin_base64: stdin.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            timeout_ms: Some(60_000),
            max_output_bytes: Some(cap),
            encoding: Encoding::Base64,
            ..ExecBody::default()
        };
        let r = self.exec(name, body).await?;
        let out = base64::engine::general_purpose::STANDARD
            .decode(&r.stdout)
            .map_err(|e| Problem::internal(format!("the exec's output: {e}")))?;
        Ok((r, out))
    }

    /// What is at `path` inside the sandbox (a symlink itself, not followed).
    pub async fn fs_stat(
        &self,
        name: &str,
        path: &str,
        user: Option<String>,
    ) -> Result<FileEntry, Problem> {
        self.fs_checked(name, path).await?;
        let command = ["find", path, "-maxdepth", "0", "-printf", ENTRY_FORMAT];
        let (r, out) = self
            .inside(
                name,
                user,
                command.map(str::to_owned).to_vec(),
                None,
                64 * 1024,
            )
            .await?;
        if r.exit_code != Some(0) {
            return Err(failed(&r));
        }
        entries(&out)
            .pop()
            .ok_or_else(|| Problem::internal(format!("find printed no entry for {path}")))
    }

    /// The entries of directory `path` inside the sandbox (a symlink to one is followed there),
    /// sorted by path.
    pub async fn fs_list(
        &self,
        name: &str,
        path: &str,
        user: Option<String>,
    ) -> Result<FileList, Problem> {
        self.fs_checked(name, path).await?;
        let script = r#"if [ ! -e "$1" ]; then echo "$1: No such file or directory" >&2; exit 4; fi
[ -d "$1" ] || { echo "$1: not a directory" >&2; exit 3; }
exec find -H "$1" -mindepth 1 -maxdepth 1 -printf "$2""#;
        let command = ["sh", "-c", script, "sh", path, ENTRY_FORMAT];
        let cap = crate::sandboxes::MAX_OUTPUT_CAP;
        let (r, out) = self
            .inside(name, user, command.map(str::to_owned).to_vec(), None, cap)
            .await?;
        if r.exit_code != Some(0) {
            return Err(failed(&r));
        }
        let mut entries = entries(&out);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let truncated = r.stdout_truncated || entries.len() > MAX_ENTRIES;
        entries.truncate(MAX_ENTRIES);
        Ok(FileList { entries, truncated })
    }

    /// A regular file's bytes inside the sandbox, when it has at most `max` bytes.
    pub async fn fs_read(
        &self,
        name: &str,
        path: &str,
        user: Option<String>,
        max: u64,
    ) -> Result<Vec<u8>, Problem> {
        self.fs_checked(name, path).await?;
        if max > MAX_READ {
            return Err(Problem::unprocessable(format!(
                "max_bytes: at most {MAX_READ}"
            )));
        }
        // One byte more than allowed tells a file that is too large; `head` stops there.
        let script = r#"if [ ! -e "$1" ]; then echo "$1: No such file or directory" >&2; exit 4; fi
[ -f "$1" ] || { echo "$1: not a regular file" >&2; exit 3; }
exec head -c "$2" -- "$1""#;
        let command = vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            path.into(),
            (max + 1).to_string(),
        ];
        let cap = (max as usize + 1).min(crate::sandboxes::MAX_OUTPUT_CAP);
        let (r, out) = self.inside(name, user, command, None, cap).await?;
        if r.exit_code != Some(0) {
            return Err(failed(&r));
        }
        if out.len() as u64 > max || r.stdout_truncated {
            return Err(Problem::payload_too_large(format!(
                "{path} is larger than {max} bytes (max_bytes)"
            )));
        }
        Ok(out)
    }

    /// Writes a file inside the sandbox whole (to a temporary file beside it, renamed over it).
    pub async fn fs_write(
        &self,
        name: &str,
        path: &str,
        user: Option<String>,
        data: Vec<u8>,
        mode: Option<Result<u32, Problem>>,
        parents: bool,
    ) -> Result<FileEntry, Problem> {
        self.fs_checked(name, path).await?;
        let mode = mode.transpose()?;
        if data.len() > crate::sandboxes::MAX_OUTPUT_CAP {
            return Err(Problem::payload_too_large("at most 16 MiB in one write"));
        }
        if path.ends_with('/') {
            return Err(Problem::unprocessable(format!(
                "path {path:?}: name a file"
            )));
        }
        let script = r#"set -e
dir=$(dirname -- "$1")
if [ "$3" = 1 ]; then mkdir -p -- "$dir"; fi
tmp=$(mktemp -- "$dir/.paddock-write.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
if [ -n "$2" ]; then chmod -- "$2" "$tmp"; elif [ -e "$1" ]; then chmod --reference="$1" -- "$tmp"; else chmod 644 -- "$tmp"; fi
mv -f -- "$tmp" "$1"
trap - EXIT
exec find "$1" -maxdepth 0 -printf "$4""#;
        let command = vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            path.into(),
            mode.map(|m| format!("{m:o}")).unwrap_or_default(),
            if parents { "1" } else { "0" }.into(),
            ENTRY_FORMAT.into(),
        ];
        // The script ends by printing what it wrote, as `fs_stat` would.
        let (r, out) = self
            .inside(name, user, command, Some(data), 64 * 1024)
            .await?;
        if r.exit_code != Some(0) {
            return Err(failed(&r));
        }
        entries(&out)
            .pop()
            .ok_or_else(|| Problem::internal(format!("find printed no entry for {path}")))
    }
}

/// The entries of a directory of the running sandbox's own file system (its image, its
/// layer, its workspace as it sees it), by an absolute path inside: at most 10,000, sorted.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/fs/list",
    tag = "files",
    params(NamePath, FsQuery),
    responses(
        (status = 200, body = FileList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fs_list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<FsQuery>,
) -> Result<Json<FileList>, Problem> {
    Ok(Json(state.fs_list(&name, &q.path, q.user).await?))
}

/// What is at an absolute path of the running sandbox's own file system (a symlink itself).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/fs/stat",
    tag = "files",
    params(NamePath, FsQuery),
    responses(
        (status = 200, body = FileEntry),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fs_stat(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<FsQuery>,
) -> Result<Json<FileEntry>, Problem> {
    Ok(Json(state.fs_stat(&name, &q.path, q.user).await?))
}

/// A regular file of the running sandbox's own file system, as its bytes.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/fs/content",
    tag = "files",
    params(NamePath, FsReadQuery),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fs_read(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<FsReadQuery>,
) -> Result<axum::response::Response, Problem> {
    let max = q.max_bytes.unwrap_or(MAX_READ);
    let bytes = state.fs_read(&name, &q.path, q.user, max).await?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// Writes a file of the running sandbox's own file system whole from the request's bytes (at
/// most 16 MiB): a temporary file beside it renamed over it; its mode, or the replaced file's,
/// or 644.
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{name}/fs/content",
    tag = "files",
    params(NamePath, FsWriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, body = FileEntry),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fs_write(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<FsWriteQuery>,
    body: axum::body::Bytes,
) -> Result<Json<FileEntry>, Problem> {
    let mode = q.mode.as_deref().map(|m| {
        u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                Problem::unprocessable("mode: give permission bits in octal, e.g. 644 or 755")
            })
    });
    Ok(Json(
        state
            .fs_write(
                &name,
                &q.path,
                q.user,
                body.to_vec(),
                mode,
                q.parents.unwrap_or(true),
            )
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_output_is_parsed_field_by_field() {
        let out = b"f\x0012\x00644\x001700000000.5\x00\x00/etc/a\nb\x00\
l\x000\x00777\x001700000001.0\x00/x\x00/etc/link\x00\
d\x004096\x00755\x001700000002.25\x00\x00/etc/dir\x00\
f\x001\x00";
        let e = entries(out);
        assert_eq!(e.len(), 3, "the cut last record is dropped");
        assert_eq!(
            (
                e[0].path.as_str(),
                e[0].kind.as_str(),
                e[0].size,
                e[0].mode,
                e[0].modified
            ),
            ("/etc/a\nb", "file", 12, 0o644, 1_700_000_000)
        );
        assert_eq!(e[0].target, None);
        assert_eq!(
            (e[1].kind.as_str(), e[1].target.as_deref()),
            ("symlink", Some("/x"))
        );
        assert_eq!((e[2].kind.as_str(), e[2].mode), ("dir", 0o755));
    }

    #[test]
    fn only_absolute_paths() {
        assert!(absolute("/etc/hosts").is_ok());
        for bad in ["etc", "", "a/../b", "/a\0b"] {
            assert!(absolute(bad).is_err(), "{bad:?}");
        }
        assert!(absolute(&format!("/{}", "a".repeat(5000))).is_err());
    }
}

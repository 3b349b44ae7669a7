//! `paddock mcp`: Paddock's sandboxes as tools of a Model Context Protocol server (the official
//! Rust SDK, `rmcp`), for an agent that runs outside a sandbox and sends its commands into one.
//! Every tool is the HTTP API's operation of the same name ([`ApiState`]), so a tool call is
//! checked and carried out exactly as the API and the command line do it. A failed operation is
//! a tool result marked as an error, with the reason, so the agent can read it and try again.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

use crate::Problem;
use crate::sandboxes::{ApiState, ExecBody};

/// What every tool's description may lean on: what a sandbox is and is not.
const INSTRUCTIONS: &str = "Paddock runs commands in sandboxes on the user's machine. A \
sandbox sees one host folder, its workspace, read-write at the same path, and nothing else of \
the host: no other files, no credentials, no host processes. Its network goes through Paddock's \
proxy, which allows only the hosts its rules allow (by default the package registries and the \
coding agents' APIs) and logs every request. Inside, the command has full freedom: root with \
sudo, apt, pip, npm. Make a sandbox with sandbox_create, run commands with sandbox_exec (it \
keeps its files between commands), and delete it with sandbox_delete when done.";

/// The MCP server: the sandboxes' operations as tools.
#[derive(Debug, Clone)]
pub struct Tools {
    state: ApiState,
    tool_router: ToolRouter<Tools>,
}

/// `sandbox_create`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// The host folder the sandbox works on: an absolute path. Only this folder of the host is
    /// visible inside (read-write, at the same path).
    pub workspace: String,
    /// A name for the sandbox (lowercase letters, digits, '-'); generated when not given.
    pub name: Option<String>,
    /// `auto` (default), `ns` (namespaces), `gvisor` (a user-space kernel) or `vm` (a virtual
    /// machine).
    pub backend: Option<String>,
    /// More hosts the sandbox may reach (e.g. `api.example.com`, `*.example.com`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The network preset: `balanced` (default), `strict` or `open`.
    pub policy: Option<String>,
    /// No network at all.
    #[serde(default)]
    pub no_network: bool,
    /// Review mode: the sandbox's changes to the workspace wait for the user's approval
    /// instead of reaching the host folder.
    #[serde(default)]
    pub review: bool,
    /// A Docker Engine of the sandbox's own inside (`docker`, `docker compose`; never the
    /// host's); the `vm` backend runs it.
    #[serde(default)]
    pub docker: bool,
}

/// `sandbox_exec`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// Program and arguments, e.g. `["bash", "-lc", "make test"]`.
    pub command: Vec<String>,
    /// Text for the command's standard input.
    pub stdin: Option<String>,
    /// Where it starts: an absolute path inside (the workspace when not given).
    pub workdir: Option<String>,
    /// Milliseconds before it is stopped (no limit when not given).
    pub timeout_ms: Option<u64>,
    /// Bytes kept of each of stdout and stderr (default 1 MiB, at most 16 MiB).
    pub max_output_bytes: Option<usize>,
}

/// A sandbox named.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// The sandbox's name.
    pub sandbox: String,
}

/// `sandbox_delete`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// Stop it first if it runs, and drop changes that wait for review.
    #[serde(default)]
    pub force: bool,
}

/// `sandbox_list`'s arguments.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only the running ones.
    #[serde(default)]
    pub running: bool,
}

/// `file_read`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileReadArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// The file, relative to the workspace root (e.g. `src/main.rs`).
    pub path: String,
    /// Refuse a file larger than this many bytes (default 1 MiB, at most 64 MiB).
    pub max_bytes: Option<u64>,
}

/// `file_write`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWriteArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// The file, relative to the workspace root; missing directories are made.
    pub path: String,
    /// The whole new content, as text (or base64 with `base64: true`).
    pub content: String,
    /// `content` is base64 (for bytes that are not text).
    #[serde(default)]
    pub base64: bool,
}

/// `file_list`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileListArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// The directory, relative to the workspace root (the root when not given).
    #[serde(default)]
    pub path: String,
}

/// `policy_check`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    /// `https://host/…`, `http://host[:port]/path`, or a bare `host[:port]`.
    pub url: String,
    /// With this sandbox's rules (the global rules alone when not given).
    pub sandbox: Option<String>,
    /// The HTTP method of a plain-HTTP request (GET when not given).
    pub method: Option<String>,
}

/// `sandbox_diff`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// The sandbox's name (a review-mode one).
    pub sandbox: String,
    /// Bytes kept of the unified diff (default 256 KiB, at most 16 MiB).
    pub max_patch_bytes: Option<usize>,
}

/// A tool's answer: the value as structured content, or the problem as an error result.
fn answer<T: serde::Serialize>(result: Result<T, Problem>) -> Result<CallToolResult, ErrorData> {
    match result {
        Ok(value) => Ok(CallToolResult::structured(
            serde_json::to_value(value)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?,
        )),
        Err(p) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "{} ({}): {}",
            p.title,
            serde_json::to_value(p.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            p.detail
        ))])),
    }
}

#[tool_router]
impl Tools {
    /// The tools on the state directory `state`'s sandboxes.
    pub fn new(state: ApiState) -> Tools {
        Tools {
            state,
            tool_router: Self::tool_router() + Self::file_router(),
        }
    }

    #[tool(
        description = "Make a sandbox on a host folder and start it. Inside, commands run with full \
                       freedom (root, sudo, package installs), but see only that folder of the host \
                       (read-write at the same path); other files, credentials and host processes \
                       are out of reach, and the network reaches only allowed hosts through \
                       Paddock's logging proxy. Returns the sandbox (its name is what the other \
                       tools take)."
    )]
    async fn sandbox_create(
        &self,
        Parameters(args): Parameters<CreateArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = paddock_engine::RunRequest {
            workspace: Some(args.workspace.into()),
            name: args.name,
            backend: args.backend,
            allow: args.allow,
            policy: args.policy,
            no_network: args.no_network,
            review: args.review,
            docker: args.docker,
            ..Default::default()
        };
        answer(self.state.create(req, true).await)
    }

    #[tool(
        description = "Run a command in a running sandbox and wait for it: returns its exit code, \
                       stdout and stderr (each capped), whether it timed out, and Paddock's notes \
                       (such as changes to files the host runs, like git hooks or CI configuration). \
                       The command runs isolated from the host as described for sandbox_create; \
                       files it writes stay for the next command."
    )]
    async fn sandbox_exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let body = ExecBody {
            command: args.command,
            stdin: args.stdin,
            workdir: args.workdir,
            timeout_ms: args.timeout_ms,
            max_output_bytes: args.max_output_bytes,
            ..Default::default()
        };
        answer(self.state.exec(&args.sandbox, body).await)
    }

    #[tool(description = "List the sandboxes with their state, workspace, backend and limits.")]
    async fn sandbox_list(
        &self,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            self.state
                .list(args.running)
                .await
                .map(|sandboxes| serde_json::json!({ "sandboxes": sandboxes })),
        )
    }

    #[tool(description = "Stop a running sandbox; its files stay and sandbox_start runs it again.")]
    async fn sandbox_stop(
        &self,
        Parameters(args): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(self.state.stop(&args.sandbox, None).await)
    }

    #[tool(description = "Start a stopped sandbox again.")]
    async fn sandbox_start(
        &self,
        Parameters(args): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(self.state.start(&args.sandbox).await)
    }

    #[tool(
        description = "Delete a sandbox and everything it made outside its workspace. The \
                       workspace's files on the host are kept. A running sandbox needs force."
    )]
    async fn sandbox_delete(
        &self,
        Parameters(args): Parameters<DeleteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            self.state
                .delete(&args.sandbox, args.force)
                .await
                .map(|notes| serde_json::json!({ "deleted": args.sandbox, "notes": notes })),
        )
    }
}

#[tool_router(router = file_router)]
impl Tools {
    #[tool(
        description = "Read a file of a sandbox's workspace (the host folder it works on), by a path \
                       relative to the workspace root. Text comes back as text, other bytes as \
                       base64. Symlinks are never followed, so nothing outside the workspace is \
                       read."
    )]
    async fn file_read(
        &self,
        Parameters(args): Parameters<FileReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        use base64::Engine as _;
        let max = args.max_bytes.unwrap_or(1024 * 1024);
        let read = self.state.file_read(&args.sandbox, &args.path, max).await;
        answer(read.map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => serde_json::json!({ "path": args.path, "content": text, "base64": false }),
            Err(e) => serde_json::json!({
                "path": args.path,
                "content": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                "base64": true,
            }),
        }))
    }

    #[tool(
        description = "Write a file of a sandbox's workspace whole (made or replaced), by a path \
                       relative to the workspace root; missing directories are made. The change \
                       is on the host at once, as if the sandbox wrote it. Symlinks are never \
                       followed."
    )]
    async fn file_write(
        &self,
        Parameters(args): Parameters<FileWriteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        use base64::Engine as _;
        let data = if args.base64 {
            match base64::engine::general_purpose::STANDARD.decode(&args.content) {
                Ok(d) => d,
                Err(e) => {
                    return answer::<()>(Err(Problem::unprocessable(format!("content: {e}"))));
                }
            }
        } else {
            args.content.into_bytes()
        };
        answer(
            self.state
                .file_write(&args.sandbox, &args.path, data, None, true)
                .await,
        )
    }

    #[tool(
        description = "Check whether a sandbox may reach a URL: what Paddock's egress proxy would \
                       decide, and which rule decides. Sandboxes reach only the hosts their rules \
                       allow; the user adds rules (`paddock policy allow`)."
    )]
    async fn policy_check(
        &self,
        Parameters(args): Parameters<CheckArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(self.state.check(args.url, args.sandbox, args.method).await)
    }

    #[tool(
        description = "List a directory of a sandbox's workspace (the root when no path is given): \
                       each entry's path, kind (file, dir, symlink), size, mode and time."
    )]
    async fn file_list(
        &self,
        Parameters(args): Parameters<FileListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(self.state.file_list(&args.sandbox, &args.path).await)
    }

    #[tool(
        description = "Show what a review-mode sandbox changed in its workspace, which waits for \
                       the user's approval: each change (risky ones first: files the host may \
                       run, such as git hooks or CI configuration; files the host changed \
                       meanwhile marked as conflicts) and their unified diff. The changes reach \
                       the host folder only when the user applies them (`paddock apply` or \
                       `paddock review`); no tool here applies them."
    )]
    async fn sandbox_diff(
        &self,
        Parameters(args): Parameters<DiffArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let cap = args.max_patch_bytes.unwrap_or(256 * 1024);
        if cap > crate::review::MAX_DIFF_BYTES {
            return answer::<()>(Err(Problem::unprocessable(
                "max_patch_bytes: at most 16 MiB",
            )));
        }
        let mut changes = self.state.changes(&args.sandbox).await;
        if let Ok(c) = &mut changes
            && c.patch.len() > cap
        {
            let mut end = cap;
            while !c.patch.is_char_boundary(end) {
                end -= 1;
            }
            c.patch.truncate(end);
            c.patch_truncated = true;
        }
        answer(changes)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("paddock", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// Serves the tools on `transport` (stdin and stdout: `(tokio::io::stdin(), stdout)`) until
/// the client closes it.
pub async fn serve<R, W>(state: ApiState, transport: (R, W)) -> Result<(), std::io::Error>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let running = Tools::new(state)
        .serve(transport)
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// Where `paddock serve` serves the same tools over MCP's streamable HTTP transport.
pub const HTTP_PATH: &str = "/v1/mcp";

/// The tools as MCP's streamable HTTP transport (a tower service for `paddock serve` to mount
/// at [`HTTP_PATH`]; behind its unix socket's peer check, or its token on TCP). Sessions live
/// in memory; requests whose `Host` is not a loopback name are refused (DNS rebinding).
pub fn http_service(
    state: ApiState,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    Tools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    StreamableHttpService::new(
        move || Ok(Tools::new(state.clone())),
        std::sync::Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    )
}

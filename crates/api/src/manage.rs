//! Changing a sandbox that exists: reset to its image, its limits, its published ports. Each is
//! the engine's operation, the one `paddock reset`, `update` and `ports` run.

use axum::extract::{Path, Query, State};
use paddock_engine::manage::{LimitsChange, Updated};
use paddock_engine::sandboxes::Summary;
use paddock_policy::PortMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{ApiState, NamePath, SandboxAnswer, blocking, name_of, tokio_stream_from};
use crate::{Json, Problem};

/// The routes, to merge into the API's router.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(reset))
        .routes(routes!(update_limits))
        .routes(routes!(ports_list, ports_publish))
        .routes(routes!(ports_unpublish))
        .routes(routes!(logs))
}

/// One published port.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Port {
    /// The host address listened on.
    pub address: String,
    /// The host port.
    pub host_port: u16,
    /// The port on the sandbox's own loopback it leads to.
    pub sandbox_port: u16,
    /// Published by an agent preset (skipped with a warning when it cannot be bound).
    pub auto: bool,
}

impl From<&PortMap> for Port {
    fn from(m: &PortMap) -> Port {
        Port {
            address: m.addr.to_string(),
            host_port: m.host,
            sandbox_port: m.sandbox,
            auto: m.auto,
        }
    }
}

/// A sandbox's published ports.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ports {
    /// Each host port and where it leads.
    pub ports: Vec<Port>,
}

fn ports_of(maps: &[PortMap]) -> Ports {
    Ports {
        ports: maps.iter().map(Port::from).collect(),
    }
}

/// Ports to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// As `paddock ports --publish` takes it: `[ADDR:][HOST_PORT:]SANDBOX_PORT`, or a range
    /// (`8000-8002`, `9000-9002:8000-8002`). The host side is 127.0.0.1 unless an address is
    /// given.
    pub publish: String,
}

/// A host port in a route's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PortPath {
    /// The sandbox's name.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub name: String,
    /// The host port.
    #[param(minimum = 1, maximum = 65535)]
    pub host_port: u16,
}

/// Whether a reset may drop changes that wait for review.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResetQuery {
    /// Drop the changes of a review-mode sandbox that wait for review (else the reset is
    /// refused with 409 while there are any).
    #[serde(default)]
    pub force: bool,
}

/// The operations, for the HTTP routes and the MCP tools alike.
impl ApiState {
    /// Empties a stopped sandbox's writable layer: back to its image.
    pub async fn reset(&self, name: &str, force: bool) -> Result<SandboxAnswer, Problem> {
        let name = name_of(name)?;
        let (sandbox, notes) = blocking(self, move |e, report| {
            e.reset(&name, force)?;
            let sandbox: Summary = e.summary(&name)?;
            report.note(&format!("{name} reset to image {}", sandbox.image));
            Ok(sandbox)
        })
        .await?;
        Ok(SandboxAnswer { sandbox, notes })
    }

    /// Records new limits, applied now where the backend can.
    pub async fn update_limits(
        &self,
        name: &str,
        change: LimitsChange,
    ) -> Result<Updated, Problem> {
        let name = name_of(name)?;
        let (updated, _) = blocking(self, move |e, _| {
            // Which sandbox first: an unknown one is 404 whatever the request.
            e.record(&name)?;
            let new = change.parse()?;
            e.update(&name, &new)
        })
        .await?;
        Ok(updated)
    }

    /// The published ports.
    pub async fn ports(&self, name: &str) -> Result<Ports, Problem> {
        let name = name_of(name)?;
        let (maps, _) = blocking(self, move |e, _| e.ports(&name)).await?;
        Ok(ports_of(&maps))
    }

    /// Publishes ports (opened now if the sandbox runs).
    pub async fn publish(&self, name: &str, spec: String) -> Result<Ports, Problem> {
        let name = name_of(name)?;
        let (maps, _) = blocking(self, move |e, _| {
            e.record(&name)?;
            let maps = paddock_policy::parse_ports(&spec)
                .map_err(|err| paddock_engine::invalid(format!("publish: {err}")))?;
            e.publish(&name, &maps)
        })
        .await?;
        Ok(ports_of(&maps))
    }

    /// Stops publishing a host port.
    pub async fn unpublish(&self, name: &str, host_port: u16) -> Result<Ports, Problem> {
        let name = name_of(name)?;
        let (maps, _) = blocking(self, move |e, _| e.unpublish(&name, &[host_port])).await?;
        Ok(ports_of(&maps))
    }
}

/// Resets a stopped sandbox to its clean image: its writable layer (installed packages, files
/// outside the workspace) is emptied; the workspace is not touched. Refused (409) while it
/// runs, and for a review-mode sandbox whose changes wait for review unless `force`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/reset",
    tag = "sandboxes",
    params(NamePath, ResetQuery),
    responses(
        (status = 200, body = SandboxAnswer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn reset(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ResetQuery>,
) -> Result<Json<SandboxAnswer>, Problem> {
    Ok(Json(state.reset(&name, q.force).await?))
}

/// Changes a sandbox's limits, as `paddock update` does: CPU, memory and processes apply at
/// once to a running ns or gvisor sandbox (its cgroups) and otherwise at its next start; a disk
/// size grows a stopped sandbox's layer (409 while it runs; it never shrinks). What is not
/// given stays.
#[utoipa::path(
    patch,
    path = "/v1/sandboxes/{name}/limits",
    tag = "sandboxes",
    params(NamePath),
    request_body = LimitsChange,
    responses(
        (status = 200, body = Updated),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_limits(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(change): Json<LimitsChange>,
) -> Result<Json<Updated>, Problem> {
    Ok(Json(state.update_limits(&name, change).await?))
}

/// A sandbox's published ports: host ports forwarded to ports on the sandbox's own loopback.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/ports",
    tag = "sandboxes",
    params(NamePath),
    responses(
        (status = 200, body = Ports),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ports_list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Ports>, Problem> {
    Ok(Json(state.ports(&name).await?))
}

/// Publishes ports: kept with the sandbox, and forwarded at once if it runs. A host port that
/// is taken, or already published, is refused (422, 409) with the ports before it kept.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{name}/ports",
    tag = "sandboxes",
    params(NamePath),
    request_body = Publish,
    responses(
        (status = 200, body = Ports),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ports_publish(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<Publish>,
) -> Result<Json<Ports>, Problem> {
    Ok(Json(state.publish(&name, body.publish).await?))
}

/// Stops publishing a host port (closed at once if the sandbox runs).
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{name}/ports/{host_port}",
    tag = "sandboxes",
    params(PortPath),
    responses(
        (status = 200, body = Ports),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ports_unpublish(
    State(state): State<ApiState>,
    Path(p): Path<PortPath>,
) -> Result<Json<Ports>, Problem> {
    Ok(Json(state.unpublish(&p.name, p.host_port).await?))
}

/// How much of a log, and whether to follow it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Keep sending what is written while the sandbox runs (the answer ends when it stops).
    #[serde(default)]
    pub follow: bool,
    /// Only the last this many bytes of what is there now.
    pub tail_bytes: Option<u64>,
}

/// How often a followed log is read for more.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The output of a sandbox started in the background (its command's output and its
/// supervisor's messages), as `paddock logs` prints it: what is there now, and with `follow`
/// what comes while it runs, as a chunked body. Empty for a sandbox that never ran in the
/// background.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{name}/logs",
    tag = "sandboxes",
    params(NamePath, LogsQuery),
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn logs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<axum::response::Response, Problem> {
    use std::io::{Read, Seek, SeekFrom};

    use axum::response::IntoResponse;
    let name = name_of(&name)?;
    let ((path, dirs), _) = blocking(&state, move |e, _| {
        e.record(&name)?;
        Ok((
            paddock_engine::background::log_file(e.dirs(), &name),
            (e.dirs().clone(), name),
        ))
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let Ok(mut f) = std::fs::File::open(&path) else {
            return;
        };
        if let Some(tail) = q.tail_bytes {
            let len = f.metadata().map_or(0, |m| m.len());
            if f.seek(SeekFrom::Start(len.saturating_sub(tail))).is_err() {
                return;
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if n > 0 {
                let chunk = axum::body::Bytes::copy_from_slice(&buf[..n]);
                if tx.blocking_send(Ok(chunk)).is_err() {
                    // The client left.
                    return;
                }
                continue;
            }
            let (dirs, name) = &dirs;
            if !q.follow || !paddock_engine::sandboxes::running(dirs, name) || tx.is_closed() {
                // What came between the last read and the stop.
                let mut rest = Vec::new();
                if f.read_to_end(&mut rest).is_ok() && !rest.is_empty() {
                    let _ = tx.blocking_send(Ok(rest.into()));
                }
                return;
            }
            std::thread::sleep(LOG_POLL);
        }
    });
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(tokio_stream_from(rx)),
    )
        .into_response())
}

//! The requests `ask` rules hold, and the user's answers: listed, followed as server-sent
//! events, approved and denied. Only the API's clients (the user's own uid on the unix socket,
//! or the token's holders) reach these routes; nothing inside a sandbox does.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::Event;
use paddock_engine::asks::{Answered, Approval};
use paddock_store::AskRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::events::follow;
use crate::sandboxes::{ApiState, blocking};
use crate::{Json, Problem};

/// The routes, to merge into the API's router.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(pending))
        .routes(routes!(pending_stream))
        .routes(routes!(approve))
        .routes(routes!(deny))
}

/// How often a followed list is read again.
const POLL: Duration = Duration::from_millis(200);

/// Whose requests.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PendingParams {
    /// Only this sandbox's.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
}

/// The requests waiting.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingList {
    /// Oldest first.
    pub requests: Vec<AskRow>,
}

/// The requests waiting for the user's answer (every sandbox's, or one's): what each asks to
/// reach (its method and path where the proxy saw them), how many identical requests wait on
/// it, and when it is denied unless answered.
#[utoipa::path(
    get,
    path = "/v1/policy/pending",
    tag = "policy",
    params(PendingParams),
    responses((status = 200, body = PendingList))
)]
async fn pending(
    State(state): State<ApiState>,
    Query(q): Query<PendingParams>,
) -> Result<Json<PendingList>, Problem> {
    let (requests, _) = blocking(&state, move |e, _| e.pending(q.sandbox.as_deref())).await?;
    Ok(Json(PendingList { requests }))
}

/// A request that no longer waits.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gone {
    /// Its id.
    pub id: i64,
}

/// The waiting requests as they come and go, as server-sent events: `asked` (a request, as in
/// the list; also each one waiting when the stream starts, and again when more identical
/// requests join it) and `gone` (`{"id": …}`: answered, timed out, or its sandbox stopped).
#[utoipa::path(
    get,
    path = "/v1/policy/pending/stream",
    tag = "policy",
    params(PendingParams),
    responses((status = 200, content_type = "text/event-stream", body = AskRow))
)]
async fn pending_stream(
    State(state): State<ApiState>,
    Query(q): Query<PendingParams>,
) -> Result<axum::response::Response, Problem> {
    if let Some(s) = &q.sandbox {
        crate::sandboxes::name_of(s)?;
    }
    // What was sent: each request's id and how many waited on it.
    let mut shown: BTreeMap<i64, i64> = BTreeMap::new();
    follow(&state, POLL, move |engine| {
        let now = engine.pending(q.sandbox.as_deref())?;
        let mut events = Vec::new();
        for r in &now {
            if shown.get(&r.id) != Some(&r.waiting) {
                events.extend(
                    Event::default()
                        .event("asked")
                        .id(r.id.to_string())
                        .json_data(r)
                        .ok(),
                );
            }
        }
        for id in shown.keys().filter(|id| !now.iter().any(|r| r.id == **id)) {
            events.extend(
                Event::default()
                    .event("gone")
                    .json_data(Gone { id: *id })
                    .ok(),
            );
        }
        shown = now.iter().map(|r| (r.id, r.waiting)).collect();
        Ok(events)
    })
    .await
}

/// A waiting request's id in a route's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AskId {
    /// The request's id.
    pub id: i64,
}

/// Lets a waiting request (and the identical ones waiting with it) through: `once` (the
/// default; the next identical request asks again), `for_run` or `always` (a rule: the request's
/// host and port, and its method and exact path where they were seen, unless `host_only`,
/// `path` or `method` say otherwise; `sandbox` or `global` pick its scope).
#[utoipa::path(
    post,
    path = "/v1/policy/pending/{id}/approve",
    tag = "policy",
    params(AskId),
    request_body = Approval,
    responses(
        (status = 200, body = Answered, description = "Approved, with the rule made"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No request with that id waits"),
    )
)]
async fn approve(
    State(state): State<ApiState>,
    Path(AskId { id }): Path<AskId>,
    Json(a): Json<Approval>,
) -> Result<Json<Answered>, Problem> {
    let (done, _) = blocking(&state, move |e, _| e.approve(id, &a)).await?;
    Ok(Json(done))
}

/// How a request is denied.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Denial {
    /// Also deny its host and port from now on (a rule for its sandbox).
    pub always: bool,
}

/// Denies a waiting request (and the identical ones waiting with it).
#[utoipa::path(
    post,
    path = "/v1/policy/pending/{id}/deny",
    tag = "policy",
    params(AskId),
    request_body = Denial,
    responses(
        (status = 200, body = Answered, description = "Denied, with the rule made"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "No request with that id waits"),
    )
)]
async fn deny(
    State(state): State<ApiState>,
    Path(AskId { id }): Path<AskId>,
    Json(d): Json<Denial>,
) -> Result<Json<Answered>, Problem> {
    let (done, _) = blocking(&state, move |e, _| e.deny_request(id, d.always)).await?;
    Ok(Json(done))
}

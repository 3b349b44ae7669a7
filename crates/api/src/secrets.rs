//! The secrets Paddock keeps on the host, by name only: which exist, for which sandboxes and
//! hosts, and which variables they set inside. Their values never leave the store through the
//! API (`paddock secret set` stores them, from a prompt or stdin).

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{ApiState, blocking};
use crate::{Json, Problem};

/// The routes, to merge into the API's router.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(secrets))
}

/// One secret, without its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// `global`, or `sandbox NAME`.
    pub scope: String,
    /// The built-in service it is for, if any.
    pub service: Option<String>,
    /// The hosts it is sent to (by the egress proxy, never into the sandbox).
    pub hosts: Vec<String>,
    /// The variables set inside to a placeholder the proxy replaces.
    pub env: Vec<String>,
}

/// The secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct Secrets {
    /// By name.
    pub secrets: Vec<SecretInfo>,
}

/// Which secrets to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecretsQuery {
    /// Only those a sandbox of this name gets (its own and the global ones).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
}

/// The secrets kept on the host, names only (`paddock secret ls`): their values are never
/// answered.
#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = "policy",
    params(SecretsQuery),
    responses((status = 200, body = Secrets))
)]
async fn secrets(
    State(state): State<ApiState>,
    Query(q): Query<SecretsQuery>,
) -> Result<Json<Secrets>, Problem> {
    let (secrets, _) = blocking(&state, move |e, _| e.secrets(q.sandbox.as_deref())).await?;
    Ok(Json(Secrets {
        secrets: secrets
            .into_iter()
            .map(|s| SecretInfo {
                name: s.name,
                scope: s.scope,
                service: s.service,
                hosts: s.hosts,
                env: s.env,
            })
            .collect(),
    }))
}

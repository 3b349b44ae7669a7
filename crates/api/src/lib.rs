//! Paddock's HTTP API server (`paddock serve`): the transport and its security, not the
//! operations.
//!
//! - **Where it listens** ([`ListenConfig`], [`Server`]): by default a unix socket, mode 0600,
//!   that only peers of the server's own uid may use (checked with `SO_PEERCRED` on every
//!   connection); TCP only when asked, always with a bearer token ([`Token`]), and with TLS on
//!   any address that is not loopback ([`check_tcp`]).
//! - **Errors** ([`Problem`]): RFC 9457 `application/problem+json` with a stable `code`; unknown
//!   routes, wrong methods, bodies over the cap and malformed JSON answer the same way.
//! - **Limits**: request bodies over [`DEFAULT_BODY_LIMIT`] (or a route's own cap,
//!   [`body_limit`]) are refused with 413 after at most that many bytes are read.
//! - **Routes** ([`router`], [`app`], [`api`]): `GET /v1/health` and `GET /v1/openapi.json`, the
//!   OpenAPI 3.1 document generated from the routes' `#[utoipa::path]` annotations, and the
//!   sandboxes' operations ([`sandboxes`]), each a call into `paddock-engine`.
//!
//! Adding an operation: write the handler with its annotation, register it with utoipa-axum's
//! `routes!` in [`router`], and let handlers fail with [`Problem`]:
//!
//! ```text
//! #[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
//!     request_body = CreateRequest,
//!     responses((status = 201, body = Sandbox),
//!               (status = 409, body = Problem, content_type = "application/problem+json")))]
//! async fn create(State(engine): State<Engine>, Json(req): Json<CreateRequest>)
//!     -> Result<Json<Sandbox>, Problem> { ... }
//!
//! router().routes(routes!(create))
//! ```

#![forbid(unsafe_code)]

mod asks;
mod direct;
mod events;
pub mod exec_stream;
mod fs;
mod listen;
mod manage;
pub mod mcp;
mod problem;
pub mod review;
pub mod sandboxes;
mod secrets;
mod serve;
mod tls;
mod token;
mod unix;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
pub use listen::{Endpoint, ListenConfig, ListenError, TlsFiles, check_tcp};
use problem::problem_responses;
pub use problem::{Json, PROBLEM_JSON, Problem, ProblemCode};
use serde::{Deserialize, Serialize};
pub use serve::{ServeError, Server, serve, shutdown_signal};
pub use tls::TlsError;
pub use token::{Token, TokenError};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest request body a route takes unless it sets its own cap ([`body_limit`]).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The answer of `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the server answers.
    #[schema(example = "ok")]
    pub status: String,
    /// Paddock's version.
    #[schema(example = "0.1.0")]
    pub version: String,
}

/// The document's fixed parts: title, the bearer scheme, the shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Paddock API",
        description = "Paddock's HTTP API (`paddock serve`). On the unix socket (the default) \
                       no credentials are needed: only the server's own user can connect. Over \
                       TCP (`--listen`) every request needs `Authorization: Bearer TOKEN`. \
                       Errors are `application/problem+json` (RFC 9457) with a stable `code`."
    ),
    components(schemas(Problem, ProblemCode)),
    modifiers(&BearerScheme),
    security((), ("bearer" = [])),
    tags(
        (name = "meta", description = "The server itself"),
        (name = "sandboxes", description = "Sandboxes: make, start, stop, delete, run commands in"),
        (name = "policy", description = "The egress proxy's rules, what it would decide for a URL, the requests waiting for your answer, and its audit log"),
        (name = "files", description = "A sandbox's workspace files, by paths relative to its root; symlinks are never followed"),
        (name = "review", description = "A review-mode sandbox's changes to its workspace, which wait for the user's approval: list, apply, discard")
    )
)]
struct Document;

/// Adds the `bearer` security scheme.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Required over TCP (`paddock serve --listen`): the token in the state \
                         directory's `api-token` file. Not used on the unix socket.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route of the API, each with its OpenAPI annotation. Other modules add theirs with
/// `.routes(routes!(handler))` or `.merge(their_router)`; a route that takes larger bodies sets
/// its own cap with `.layer(body_limit(bytes))` on its own router before the merge.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::with_openapi(Document::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
}

/// Every route of the API with the sandboxes' operations, on the state directory `dirs`'s
/// engine: what `paddock serve` serves.
pub fn api(dirs: paddock_core::Dirs) -> (axum::Router, utoipa::openapi::OpenApi) {
    let state = sandboxes::ApiState::new(dirs);
    let routes = all_routes().route_service(mcp::HTTP_PATH, mcp::http_service(state.clone()));
    app(routes, state)
}

/// The OpenAPI document of [`api`] (`docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = all_routes().split_for_parts().1;
    common_responses(&mut document);
    document
}

fn all_routes() -> OpenApiRouter<sandboxes::ApiState> {
    router()
        .merge(sandboxes::routes())
        .merge(manage::routes())
        .merge(events::routes())
        .merge(review::routes())
        .merge(fs::routes())
        .merge(secrets::routes())
        .merge(asks::routes())
}

/// The finished service for [`Server::run`] (with `state` given to the handlers) and its
/// OpenAPI document: 404 and 405 answers, rejections and over-cap bodies as [`Problem`]s,
/// the default body cap, and `/v1/openapi.json` serving the document.
pub fn app<S>(routes: OpenApiRouter<S>, state: S) -> (axum::Router, utoipa::openapi::OpenApi)
where
    S: Clone + Send + Sync + 'static,
{
    let (router, mut document) = routes.split_for_parts();
    common_responses(&mut document);
    let json = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let router = router
        .fallback(not_found)
        .layer(Extension(OpenApiJson(json)))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(axum::middleware::from_fn(problem_responses))
        .with_state(state);
    (router, document)
}

/// The answers every operation may give besides its own: 400 (a malformed query, path or body,
/// from the extractors) and 422 (a well-formed request with a value that is not valid) as
/// problems, and 500 (the server or a part below it failed).
fn common_responses(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    let common = [
        ("400", "The request is malformed (its query, path or body)"),
        ("422", "A value in the request is not valid"),
        ("500", "The server, or a part below it, failed"),
    ];
    for item in document.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            if op.request_body.is_some() {
                op.responses
                    .responses
                    .entry("415".to_owned())
                    .or_insert_with(|| {
                        problem("The body is not of the media type the operation takes").into()
                    });
            }
            for (status, description) in common {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description).into());
            }
        }
    }
}

/// A route's own cap on request bodies, instead of [`DEFAULT_BODY_LIMIT`]: the handler's body
/// extractor stops reading and answers 413 past `bytes`.
pub fn body_limit(bytes: usize) -> DefaultBodyLimit {
    DefaultBodyLimit::max(bytes)
}

/// The document, serialised once.
#[derive(Clone)]
struct OpenApiJson(Bytes);

/// Whether the server answers.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "meta",
    responses((status = 200, description = "The server answers", body = Health))
)]
async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi_json(Extension(OpenApiJson(json)): Extension<OpenApiJson>) -> Response {
    let mut res = json.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

#[cfg(test)]
mod app_tests;

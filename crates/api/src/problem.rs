//! Errors as the API answers them: RFC 9457 `application/problem+json` with a stable `code`.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, as a stable string a client can match on (`not_found`, `conflict`, ...);
/// the HTTP status follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// The request is malformed or a value in it is not valid (400, 422).
    Invalid,
    /// No or a wrong bearer token (401).
    Unauthorized,
    /// The caller may not do this (403).
    Forbidden,
    /// No such route or object (404).
    NotFound,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// The request conflicts with the current state, e.g. the object exists or is busy (409).
    Conflict,
    /// The request body is over the route's cap (413).
    PayloadTooLarge,
    /// The request body is not of a media type the route takes (415).
    UnsupportedMediaType,
    /// A sandbox could not be started or its command could not be run (500).
    StartFailed,
    /// A stop signal ended the operation on the server (503).
    Interrupted,
    /// A failure of the server itself (500 and other 5xx).
    Internal,
}

impl ProblemCode {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemCode::Invalid => StatusCode::BAD_REQUEST,
            ProblemCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemCode::Forbidden => StatusCode::FORBIDDEN,
            ProblemCode::NotFound => StatusCode::NOT_FOUND,
            ProblemCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemCode::Conflict => StatusCode::CONFLICT,
            ProblemCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemCode::StartFailed | ProblemCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code for an error status some layer answered with (axum's rejections, the router's
    /// 404 and 405).
    pub fn for_status(status: StatusCode) -> ProblemCode {
        match status {
            StatusCode::UNAUTHORIZED => ProblemCode::Unauthorized,
            StatusCode::FORBIDDEN => ProblemCode::Forbidden,
            StatusCode::NOT_FOUND => ProblemCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemCode::MethodNotAllowed,
            StatusCode::CONFLICT => ProblemCode::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemCode::UnsupportedMediaType,
            s if s.is_server_error() => ProblemCode::Internal,
            _ => ProblemCode::Invalid,
        }
    }
}

/// An error answer (RFC 9457). `type` is always `about:blank`, so `title` is the status's
/// phrase; clients match on `code`, people read `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "no such route",
    "code": "not_found"
}))]
pub struct Problem {
    /// Always `about:blank`: the status and `code` say what happened.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// What went wrong, for a program.
    pub code: ProblemCode,
}

impl Problem {
    /// A problem with its status from `code` (422 for [`Problem::unprocessable`]).
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem::with_status(code, code.status(), detail)
    }

    fn with_status(code: ProblemCode, status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
        }
    }

    /// 400 `invalid`.
    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::Invalid, detail)
    }

    /// 422 `invalid`: well-formed, but a value is not acceptable.
    pub fn unprocessable(detail: impl Into<String>) -> Problem {
        Problem::with_status(
            ProblemCode::Invalid,
            StatusCode::UNPROCESSABLE_ENTITY,
            detail,
        )
    }

    /// 401 `unauthorized` (answered with `WWW-Authenticate: Bearer`).
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::Unauthorized, detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::NotFound, detail)
    }

    /// 409 `conflict`.
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::Conflict, detail)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::PayloadTooLarge, detail)
    }

    /// 500 `internal`. The detail is shown to the client: keep secrets and paths out of it.
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::Internal, detail)
    }

    /// The problem for an error status another layer answered with.
    pub fn for_status(status: StatusCode) -> Problem {
        let detail = match status {
            StatusCode::NOT_FOUND => "no such route",
            StatusCode::METHOD_NOT_ALLOWED => "this route does not take this method",
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is over this route's cap",
            s if s.is_server_error() => "the server failed",
            _ => "the request was refused",
        };
        Problem::with_status(ProblemCode::for_status(status), status, detail)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (self.status(), body).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.code == ProblemCode::Unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"paddock\""),
            );
        }
        res
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Problem {
        let status = r.status();
        Problem::with_status(ProblemCode::for_status(status), status, r.body_text())
    }
}

/// A JSON request body (as `axum::Json`) whose rejections are [`Problem`]s: a body over the
/// route's cap is 413 `payload_too_large`, a malformed one 400 or 422 `invalid`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Middleware: an error answer some layer made without a problem body (the router's 404 and
/// 405, axum's extractors' rejections, a 413) becomes one, keeping its status and headers
/// (`Allow` on a 405).
pub(crate) async fn problem_responses(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let problem = Problem::for_status(status).into_response();
    let (problem_parts, body): (_, Body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

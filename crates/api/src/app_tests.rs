//! The finished service, driven request by request (tower's `oneshot`): routes, problem
//! answers, body caps, the token check.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::routing::post;
use http::{Method, Request, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// A test-only route: how many bytes of body it was given.
async fn count(body: Bytes) -> String {
    body.len().to_string()
}

/// A test-only route taking JSON.
async fn take_json(Json(v): Json<serde_json::Value>) -> String {
    v.to_string()
}

fn test_app() -> axum::Router {
    let small = OpenApiRouter::new()
        .route("/test/small", post(count))
        .layer(body_limit(16));
    let routes = router()
        .route("/test/count", post(count))
        .route("/test/json", post(take_json))
        .merge(small);
    app(routes, ()).0
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn problem(&self) -> Problem {
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            PROBLEM_JSON,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        let p: Problem = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(p.status, self.status.as_u16());
        assert_eq!(p.kind, "about:blank");
        assert_eq!(Some(p.title.as_str()), self.status.canonical_reason());
        p
    }
}

async fn send(app: axum::Router, req: Request<Body>) -> Answer {
    let res = app.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_body(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).unwrap()
}

#[tokio::test]
async fn health() {
    let a = send(test_app(), get("/v1/health")).await;
    assert_eq!(a.status, StatusCode::OK);
    let h: Health = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        h,
        Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into()
        }
    );
}

#[tokio::test]
async fn openapi_document_served() {
    let a = send(test_app(), get("/v1/openapi.json")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    let doc: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/health"]["get"].is_object(), "{doc:#}");
    assert!(doc["paths"]["/v1/openapi.json"]["get"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn unknown_route_is_a_404_problem() {
    let a = send(test_app(), get("/v1/nothing-here")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.problem(),
        Problem {
            kind: "about:blank".into(),
            title: "Not Found".into(),
            status: 404,
            detail: "no such route".into(),
            code: ProblemCode::NotFound,
        }
    );
}

#[tokio::test]
async fn wrong_method_is_a_405_problem_with_allow() {
    let req = Request::builder()
        .method(Method::DELETE)
        .uri("/v1/health")
        .body(Body::empty())
        .unwrap();
    let a = send(test_app(), req).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.problem().code, ProblemCode::MethodNotAllowed);
    let allow = a.headers[header::ALLOW].to_str().unwrap();
    assert!(allow.contains("GET"), "{allow}");
}

#[tokio::test]
async fn body_at_the_cap_is_taken_over_it_is_413() {
    let at = send(
        test_app(),
        post_body("/test/count", vec![b'x'; DEFAULT_BODY_LIMIT]),
    )
    .await;
    assert_eq!(at.status, StatusCode::OK);
    assert_eq!(at.body, DEFAULT_BODY_LIMIT.to_string().as_bytes());
    let over = send(
        test_app(),
        post_body("/test/count", vec![b'x'; DEFAULT_BODY_LIMIT + 1]),
    )
    .await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(over.problem().code, ProblemCode::PayloadTooLarge);
}

/// A body of `total` bytes in 64 KiB chunks, without a length, counting what was read.
struct Stream {
    left: usize,
    read: Arc<AtomicUsize>,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let n = self.left.min(64 * 1024);
        if n == 0 {
            return Poll::Ready(None);
        }
        self.left -= n;
        self.read.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

#[tokio::test]
async fn a_long_stream_is_refused_without_reading_it_all() {
    let read = Arc::new(AtomicUsize::new(0));
    let body = Body::new(Stream {
        left: 64 * DEFAULT_BODY_LIMIT,
        read: Arc::clone(&read),
    });
    let a = send(test_app(), post_body("/test/count", body)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.problem().code, ProblemCode::PayloadTooLarge);
    let read = read.load(Ordering::SeqCst);
    assert!(
        read <= DEFAULT_BODY_LIMIT + 64 * 1024,
        "read {read} bytes of a refused body"
    );
}

#[tokio::test]
async fn a_route_sets_its_own_cap() {
    let ok = send(test_app(), post_body("/test/small", vec![b'x'; 16])).await;
    assert_eq!(ok.status, StatusCode::OK);
    let over = send(test_app(), post_body("/test/small", vec![b'x'; 17])).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(over.problem().code, ProblemCode::PayloadTooLarge);
    // The other routes keep the default.
    let other = send(test_app(), post_body("/test/count", vec![b'x'; 17])).await;
    assert_eq!(other.status, StatusCode::OK);
}

fn json_post(body: &'static str, content_type: &str) -> Request<Body> {
    Request::post("/test/json")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn json_rejections_are_problems() {
    let ok = send(test_app(), json_post(r#"{"a":1}"#, "application/json")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, br#"{"a":1}"#);
    let bad = send(test_app(), json_post("{", "application/json")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let p = bad.problem();
    assert_eq!(p.code, ProblemCode::Invalid);
    assert!(!p.detail.is_empty());
    let kind = send(test_app(), json_post("{}", "text/plain")).await;
    assert_eq!(kind.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(kind.problem().code, ProblemCode::UnsupportedMediaType);
}

#[tokio::test]
async fn tokens_are_checked_before_routing() {
    let dir = tempfile::tempdir().unwrap();
    let token = Arc::new(Token::load_or_create(&dir.path().join("t")).unwrap());
    let right = std::fs::read_to_string(dir.path().join("t")).unwrap();
    let guarded = || {
        test_app().layer(axum::middleware::from_fn_with_state(
            Arc::clone(&token),
            crate::token::require_token,
        ))
    };
    let with = |auth: Option<String>, uri: &str| {
        let mut req = Request::get(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        req.body(Body::empty()).unwrap()
    };
    for (auth, uri) in [
        (None, "/v1/health"),
        (Some("Bearer wrong".to_owned()), "/v1/health"),
        (Some(format!("Basic {}", right.trim())), "/v1/health"),
        (None, "/v1/nothing-here"),
    ] {
        let a = send(guarded(), with(auth.clone(), uri)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?} {uri}");
        assert_eq!(a.problem().code, ProblemCode::Unauthorized);
        assert_eq!(
            a.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"paddock\""
        );
    }
    let a = send(
        guarded(),
        with(Some(format!("Bearer {}", right.trim())), "/v1/health"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

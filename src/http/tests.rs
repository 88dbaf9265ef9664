//! Tests of the assembled router, driven through `oneshot` with a real SQLite state.

use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::testing::{
    ADMIN_TOKEN, fixture, fixture_with, get as get_request, request, rules_with_tokens, send,
};
use super::{Limits, router, router_with_limits};
use crate::app::AppState;
use crate::error::{ApiError, ApiJson};
use crate::http::auth::Caller;
use crate::rules::{ChannelAccount, ChannelKind, Role, SecretRef};

#[derive(Debug, Deserialize, serde::Serialize)]
struct Greeting {
    text: String,
}

async fn echo(ApiJson(greeting): ApiJson<Greeting>) -> ApiJson<Greeting> {
    ApiJson(greeting)
}

async fn operator_only(caller: Caller) -> Result<Json<String>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(Json(caller.name))
}

async fn never_finishes() -> &'static str {
    std::future::pending::<()>().await;
    "unreachable"
}

/// Stand-ins for routes other modules contribute, so the layers are exercised on them.
fn test_routes() -> Router<AppState> {
    Router::new()
        .route("/test/echo", post(echo))
        .route("/test/operator-only", get(operator_only))
        .route("/test/slow", get(never_finishes))
}

fn error_code(answer: &super::testing::Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or("<no code>")
        .to_string()
}

#[tokio::test]
async fn healthz_answers_ok() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let answer = send(&router(fx.state, Router::new()), get_request("/healthz")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_is_ready_and_lists_disabled_accounts() {
    let mut rules = rules_with_tokens(&[]);
    rules.channels.push(ChannelAccount {
        id: "hooks".to_string(),
        kind: ChannelKind::Webhook {
            url: "https://example.com/qunfa".to_string(),
            secret: SecretRef::new("QUNFA_TEST_HTTP_SECRET_NEVER_SET"),
        },
        limits: crate::rules::Limits::default(),
        batch_size: None,
    });
    let disabled_inbound = vec![(
        "ding".to_string(),
        "environment variable `DING_SECRET` is not set".to_string(),
    )];
    let fx = fixture_with(rules, disabled_inbound, None).await;
    let answer = send(&router(fx.state, Router::new()), get_request("/readyz")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "ok");
    assert_eq!(
        body["rules"],
        serde_json::json!({"inbound": 1, "channels": 1, "operators": 1})
    );
    let disabled = body["disabled"].as_array().cloned().unwrap_or_default();
    assert_eq!(disabled.len(), 2, "{body}");
    assert_eq!(disabled[0]["kind"], "inbound");
    assert_eq!(disabled[0]["id"], "ding");
    assert!(
        disabled[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("DING_SECRET"))
    );
    assert_eq!(disabled[1]["kind"], "channel");
    assert_eq!(disabled[1]["id"], "hooks");
    assert!(
        disabled[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("QUNFA_TEST_HTTP_SECRET_NEVER_SET"))
    );
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_database_is_closed() {
    let fx = fixture(rules_with_tokens(&[])).await;
    fx.state.db.close().await;
    let answer = send(&router(fx.state, Router::new()), get_request("/readyz")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = answer.json();
    assert_eq!(body["status"], "not_ready");
    assert_ne!(body["database"], "ok");
    assert_eq!(body["rules"]["inbound"], 1);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, Router::new());
    send(&app, get_request("/healthz")).await;
    send(&app, get_request("/no/such/route/12345")).await;
    let answer = send(&app, get_request("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = answer.text();
    assert!(
        text.contains(r#"qunfa_http_requests_total{method="GET",route="/healthz",status="200"}"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        !text.contains("12345"),
        "raw paths must not become labels: {text}"
    );
    assert!(
        text.contains("qunfa_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn request_id_is_generated_or_propagated() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, Router::new());
    let generated = send(&app, get_request("/healthz")).await;
    let id = generated.header("x-request-id").unwrap_or("");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "not a UUID: {id:?}");

    let given = request(
        "GET",
        "/healthz",
        &[("x-request-id", "caller-chose-this")],
        Body::empty(),
    );
    let answer = send(&app, given).await;
    assert_eq!(answer.header("x-request-id"), Some("caller-chose-this"));

    let unreasonable = request(
        "GET",
        "/healthz",
        &[("x-request-id", "has spaces in it")],
        Body::empty(),
    );
    let answer = send(&app, unreasonable).await;
    let replaced = answer.header("x-request-id").unwrap_or("");
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced:?}");
}

#[tokio::test]
async fn oversized_bodies_get_413_json() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, test_routes());
    let big = vec![b' '; 2 << 20];
    let length = big.len().to_string();
    let declared = request(
        "POST",
        "/test/echo",
        &[
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
        Body::from(big.clone()),
    );
    let answer = send(&app, declared).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&answer), "payload_too_large");
    assert!(answer.text().contains("1 MiB"), "{}", answer.text());

    // Without a Content-Length the limit bites while the body is read.
    let streamed = request(
        "POST",
        "/test/echo",
        &[("content-type", "application/json")],
        Body::from(big),
    );
    let answer = send(&app, streamed).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&answer), "payload_too_large");
}

#[tokio::test]
async fn json_body_rejections_use_the_error_shape() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, test_routes());
    let json = [("content-type", "application/json")];

    let ok = send(
        &app,
        request(
            "POST",
            "/test/echo",
            &json,
            Body::from(r#"{"text":"你好"}"#),
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["text"], "你好");

    let broken = send(&app, request("POST", "/test/echo", &json, Body::from("{"))).await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&broken), "invalid_json");

    let mistyped = send(
        &app,
        request("POST", "/test/echo", &json, Body::from(r#"{"text":1}"#)),
    )
    .await;
    assert_eq!(mistyped.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&mistyped), "invalid_json");

    let untyped = send(&app, request("POST", "/test/echo", &[], Body::from("{}"))).await;
    assert_eq!(untyped.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&untyped), "unsupported_media_type");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, test_routes());
    let missing = send(&app, get_request("/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&missing), "not_found");

    let wrong_method = send(&app, request("DELETE", "/healthz", &[], Body::empty())).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&wrong_method), "method_not_allowed");
    assert!(
        wrong_method
            .header("allow")
            .is_some_and(|allow| allow.contains("GET"))
    );
}

#[tokio::test]
async fn slow_handlers_hit_the_deadline() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router_with_limits(fx.state, test_routes(), Limits::default());
    // Paused time jumps straight to the deadline instead of waiting 30 real seconds.
    tokio::time::pause();
    let answer = send(&app, get_request("/test/slow")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&answer), "timeout");
    assert!(answer.text().contains("30 s"), "{}", answer.text());
}

#[tokio::test]
async fn whoami_needs_a_bearer_token() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, Router::new());
    let anonymous = send(&app, get_request("/api/v1/whoami")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert_eq!(error_code(&anonymous), "unauthorized");

    let wrong = request(
        "GET",
        "/api/v1/whoami",
        &[("authorization", "Bearer not-a-real-token")],
        Body::empty(),
    );
    let answer = send(&app, wrong).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(!answer.text().contains("not-a-real-token"));

    let basic = request(
        "GET",
        "/api/v1/whoami",
        &[("authorization", "Basic dXNlcjpwYXNz")],
        Body::empty(),
    );
    assert_eq!(send(&app, basic).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_token_from_the_environment_is_an_admin() {
    let fx = fixture_with(rules_with_tokens(&[]), Vec::new(), Some(ADMIN_TOKEN)).await;
    let app = router(fx.state, test_routes());
    let bearer = format!("bearer {ADMIN_TOKEN}");
    let answer = send(
        &app,
        request(
            "GET",
            "/api/v1/whoami",
            &[("authorization", &bearer)],
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        serde_json::json!({"name": "admin-token", "role": "admin"})
    );
    let operator_only = send(
        &app,
        request(
            "GET",
            "/test/operator-only",
            &[("authorization", &bearer)],
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(operator_only.status, StatusCode::OK);
}

#[tokio::test]
async fn hashed_viewer_token_is_refused_operator_work() {
    let rules = rules_with_tokens(&[
        ("dashboard", Role::Viewer, "viewer-secret"),
        ("ci-bot", Role::Operator, "operator-secret"),
    ]);
    let fx = fixture_with(rules, Vec::new(), Some(ADMIN_TOKEN)).await;
    let app = router(fx.state, test_routes());
    let viewer = [("authorization", "Bearer viewer-secret")];

    let whoami = send(
        &app,
        request("GET", "/api/v1/whoami", &viewer, Body::empty()),
    )
    .await;
    assert_eq!(
        whoami.json(),
        serde_json::json!({"name": "dashboard", "role": "viewer"})
    );
    let refused = send(
        &app,
        request("GET", "/test/operator-only", &viewer, Body::empty()),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&refused), "forbidden");
    assert!(refused.text().contains("operator"), "{}", refused.text());

    let operator = [("authorization", "Bearer operator-secret")];
    let allowed = send(
        &app,
        request("GET", "/test/operator-only", &operator, Body::empty()),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.json(), "ci-bot");
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, Router::new());
    let answer = send(&app, get_request("/api/v1/openapi.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let document = answer.json();
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let whoami = &document["paths"]["/api/v1/whoami"]["get"];
    assert!(whoami.is_object(), "{document}");
    assert_eq!(whoami["security"], serde_json::json!([{"bearer": []}]));
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
}

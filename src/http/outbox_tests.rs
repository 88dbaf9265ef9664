//! Tests of the outbox admin API against a real outbox: jobs are enqueued, claimed and
//! completed through `delivery::store`, then read and retried over HTTP.

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;

use super::router;
use super::testing::{Answer, Fixture, fixture, request, rules_with_tokens, send};
use crate::delivery::{Completion, NewJob, Next, Outbox};
use crate::rules::Role;

const VIEWER: (&str, &str) = ("authorization", "Bearer viewer-secret");
const OPERATOR: (&str, &str) = ("authorization", "Bearer operator-secret");

/// Job ids of one sent, one dead and one failed job, plus one still queued.
struct Jobs {
    sent: i64,
    dead: i64,
    failed: i64,
    queued: i64,
}

async fn setup() -> (Fixture, Router, Jobs) {
    let rules = rules_with_tokens(&[
        ("dashboard", Role::Viewer, "viewer-secret"),
        ("ci-bot", Role::Operator, "operator-secret"),
    ]);
    let fx = fixture(rules).await;
    let outbox = Outbox::new(fx.state.db.clone());
    let now = fx.state.clock.now_ms();
    let day = std::time::Duration::from_secs(24 * 60 * 60);
    let new = |key| NewJob {
        idempotency_key: key,
        channel: "log",
        recipient: "u-1",
        payload: r#"{"text":"hi"}"#,
    };
    let enqueued = outbox
        .enqueue_all(&[new("a"), new("b"), new("c"), new("d")], now, day)
        .await
        .unwrap_or_default();
    let ids: Vec<i64> = enqueued.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4);
    let claimed = outbox
        .claim("w1", now, std::time::Duration::from_secs(60), 3)
        .await
        .unwrap_or_default();
    assert_eq!(claimed.len(), 3);
    let outcomes = [
        (Next::Sent, "delivered", "ok"),
        (Next::Dead, "retryable", "gave up after 24h: HTTP 503"),
        (Next::Failed, "recipient_invalid", "no such user u-1"),
    ];
    let batch: Vec<Completion> = claimed
        .iter()
        .zip(outcomes)
        .map(|(job, (next, outcome, detail))| Completion {
            job_id: job.id,
            attempt: job.attempt,
            worker: "w1".to_string(),
            started_at: now,
            duration_ms: 12,
            outcome,
            status: Some(200),
            detail: detail.to_string(),
            next,
            provider_ref: None,
            route: None,
            move_on: false,
        })
        .collect();
    let completed = outbox.complete(&batch, now).await;
    assert!(completed.is_ok(), "{completed:?}");
    let jobs = Jobs {
        sent: ids[0],
        dead: ids[1],
        failed: ids[2],
        queued: ids[3],
    };
    let app = router(fx.state.clone(), Router::new());
    (fx, app, jobs)
}

async fn call(app: &Router, method: &str, uri: &str, auth: (&str, &str)) -> Answer {
    send(app, request(method, uri, &[auth], Body::empty())).await
}

fn code(answer: &Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

#[tokio::test]
async fn summary_counts_jobs_by_state() {
    let (_fx, app, _) = setup().await;
    let answer = call(&app, "GET", "/api/v1/outbox", VIEWER).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["queued"], 1);
    assert_eq!(body["sent"], 1);
    assert_eq!(body["dead"], 1);
    assert_eq!(body["failed"], 1);
    assert_eq!(body["leased"], 0);
    assert!(body["lag_ms"].is_i64());

    let anonymous = send(&app, super::testing::get("/api/v1/outbox")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn dead_jobs_are_listed_with_their_reason() {
    let (_fx, app, jobs) = setup().await;
    let answer = call(&app, "GET", "/api/v1/outbox/jobs?state=dead", VIEWER).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    let listed = body["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["id"], jobs.dead);
    assert_eq!(listed[0]["state"], "dead");
    assert_eq!(listed[0]["last_error"], "gave up after 24h: HTTP 503");
    assert!(body["next_after"].is_null());
}

#[tokio::test]
async fn job_listing_pages_by_id() {
    let (_fx, app, jobs) = setup().await;
    let mut seen = Vec::new();
    let mut uri = "/api/v1/outbox/jobs?limit=3".to_string();
    for _ in 0..3 {
        let page = call(&app, "GET", &uri, VIEWER).await.json();
        seen.extend(
            page["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|job| job["id"].as_i64()),
        );
        match page["next_after"].as_i64() {
            Some(after) => uri = format!("/api/v1/outbox/jobs?limit=3&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![jobs.sent, jobs.dead, jobs.failed, jobs.queued]);
}

#[tokio::test]
async fn job_listing_rejects_bad_queries() {
    let (_fx, app, _) = setup().await;
    for uri in [
        "/api/v1/outbox/jobs?limit=0",
        "/api/v1/outbox/jobs?limit=501",
        "/api/v1/outbox/jobs?state=lost",
        "/api/v1/outbox/jobs?after=x",
    ] {
        let answer = call(&app, "GET", uri, VIEWER).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(code(&answer), "invalid_query", "{uri}");
    }
    let largest = call(&app, "GET", "/api/v1/outbox/jobs?limit=500", VIEWER).await;
    assert_eq!(largest.status, StatusCode::OK);
}

#[tokio::test]
async fn one_job_comes_with_its_attempts() {
    let (_fx, app, jobs) = setup().await;
    let answer = call(
        &app,
        "GET",
        &format!("/api/v1/outbox/jobs/{}", jobs.failed),
        VIEWER,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["job"]["state"], "failed");
    let attempts = body["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "recipient_invalid");
    assert_eq!(attempts[0]["detail"], "no such user u-1");

    let missing = call(&app, "GET", "/api/v1/outbox/jobs/999999", VIEWER).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let garbled = call(&app, "GET", "/api/v1/outbox/jobs/abc", VIEWER).await;
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&garbled), "invalid_path");
}

#[tokio::test]
async fn operators_retry_dead_and_failed_jobs_only() {
    let (_fx, app, jobs) = setup().await;
    let dead = format!("/api/v1/outbox/jobs/{}/retry", jobs.dead);

    let refused = call(&app, "POST", &dead, VIEWER).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let retried = call(&app, "POST", &dead, OPERATOR).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
    assert_eq!(retried.json()["state"], "queued");
    assert_eq!(retried.json()["id"], jobs.dead);

    let again = call(&app, "POST", &dead, OPERATOR).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(code(&again), "not_retryable");
    assert!(again.text().contains("queued"), "{}", again.text());

    let failed = format!("/api/v1/outbox/jobs/{}/retry", jobs.failed);
    assert_eq!(
        call(&app, "POST", &failed, OPERATOR).await.status,
        StatusCode::OK
    );

    let sent = format!("/api/v1/outbox/jobs/{}/retry", jobs.sent);
    assert_eq!(
        call(&app, "POST", &sent, OPERATOR).await.status,
        StatusCode::CONFLICT
    );

    let missing = call(&app, "POST", "/api/v1/outbox/jobs/999999/retry", OPERATOR).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let summary = call(&app, "GET", "/api/v1/outbox", VIEWER).await.json();
    assert_eq!(summary["queued"], 3);
    assert_eq!(summary["dead"], 0);
    assert_eq!(summary["failed"], 0);
}

#[tokio::test]
async fn outbox_endpoints_are_in_the_openapi_document() {
    let fx = fixture(rules_with_tokens(&[])).await;
    let app = router(fx.state, Router::new());
    let document = send(&app, super::testing::get("/api/v1/openapi.json"))
        .await
        .json();
    for (path, method) in [
        ("/api/v1/outbox", "get"),
        ("/api/v1/outbox/jobs", "get"),
        ("/api/v1/outbox/jobs/{id}", "get"),
        ("/api/v1/outbox/jobs/{id}/retry", "post"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let params = document["paths"]["/api/v1/outbox/jobs"]["get"]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, vec!["state", "after", "limit"]);
    assert!(document["components"]["schemas"]["JobRow"].is_object());
}

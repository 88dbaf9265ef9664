//! Fixtures for the slack, qq and standard handler tests: an application state whose rules
//! carry one extra inbound account, requests through the real router, the audit trail, and
//! a stand-in platform API that records what the reply tasks post to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::bot::test_support;
use crate::http::testing::{Answer, Fixture, fixture, request, send};
use crate::rules::{InboundAccount, InboundPlatform};

/// The fixture's manual clock, in seconds.
pub const NOW_SECS: i64 = 1_764_000_000;

/// The variable name the handler tests' accounts use for every secret; its value is
/// registered with `rules::test_secrets`, so no test touches the environment.
pub const SECRET_VAR: &str = "QUNFA_HANDLER_TEST_SECRET";
const SECRET_VALUE: &str = "handler-test-secret-0123456789";

/// The secret's value, registered as a side effect so that accounts built with
/// [`SECRET_VAR`] resolve it.
pub fn secret() -> String {
    crate::rules::test_secrets::set(SECRET_VAR, SECRET_VALUE);
    SECRET_VALUE.to_string()
}

pub async fn state_with(id: &str, platform: InboundPlatform) -> Fixture {
    secret();
    let mut rules = test_support::rules();
    rules.inbound.push(InboundAccount {
        id: id.to_string(),
        platform,
    });
    fixture(rules).await
}

pub async fn post(fixture: &Fixture, id: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let router = crate::http::router(fixture.state.clone(), crate::inbound::routes());
    let request = request(
        "POST",
        &format!("/webhooks/{id}"),
        headers,
        Body::from(body.to_vec()),
    );
    send(&router, request).await
}

/// Waits for the replies sent after the HTTP answers.
pub async fn replies_done(fixture: &Fixture) {
    fixture
        .state
        .inbound
        .finish_replies(Duration::from_secs(10))
        .await;
}

pub async fn audit_count(fixture: &Fixture) -> usize {
    fixture.state.db.grouped().flush().await.unwrap();
    crate::bot::recent_audit(&fixture.state.db, 100)
        .await
        .map(|rows| rows.len())
        .unwrap_or_default()
}

/// One request the stand-in API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A platform API on a local port that answers every POST with `answer` and records it.
pub struct FakeApi {
    pub base_url: String,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

pub async fn fake_api(answer: Value) -> FakeApi {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .fallback(record)
        .with_state((seen.clone(), answer));
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot bind the fake API: {error}"),
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => panic!("no local address: {error}"),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeApi {
        base_url: format!("http://{address}"),
        seen,
    }
}

impl FakeApi {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }
}

type Shared = (Arc<Mutex<Vec<Recorded>>>, Value);

async fn record(
    State((seen, answer)): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let recorded = Recorded {
        path: uri.path().to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    if let Ok(mut seen) = seen.lock() {
        seen.push(recorded);
    }
    axum::Json(answer)
}

//! Test fixtures for the HTTP layer: an [`AppState`] on a fresh SQLite file, rules built
//! in code, and a helper that sends one request through the full router.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::app::{AppState, Live};
use crate::channels::ChannelRegistry;
use crate::clock::{ManualClock, SharedClock};
use crate::db::{DatabaseUrl, Db};
use crate::rules::{
    ApiToken, DeliverySettings, InboundAccount, InboundPlatform, Operator, Role, Rules,
};

/// The admin token the fixture's state accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A fresh state; `_dir` owns the database file and must outlive the state.
pub struct Fixture {
    pub _dir: TempDir,
    pub state: AppState,
}

/// Rules with one shell inbound account, one operator and the given API tokens (name, role,
/// clear token: only the digest is stored).
pub fn rules_with_tokens(tokens: &[(&str, Role, &str)]) -> Rules {
    Rules {
        dir: PathBuf::from("bot-rules"),
        delivery: DeliverySettings::default(),
        inbound: vec![InboundAccount {
            id: "shell".to_string(),
            platform: InboundPlatform::Shell,
        }],
        channels: Vec::new(),
        operators: vec![Operator {
            platform: "shell".to_string(),
            user: "local".to_string(),
            role: Role::Admin,
        }],
        commands: BTreeMap::new(),
        api_tokens: tokens
            .iter()
            .map(|(name, role, token)| ApiToken {
                name: (*name).to_string(),
                role: *role,
                sha256: Sha256::digest(token.as_bytes()).into(),
            })
            .collect(),
    }
}

pub async fn fixture(rules: Rules) -> Fixture {
    fixture_with(rules, Vec::new(), None).await
}

/// A state whose live rules are `rules`, with channels built from them (so a channel whose
/// secret variable is unset comes out disabled) and the given disabled inbound accounts.
pub async fn fixture_with(
    rules: Rules,
    disabled_inbound: Vec<(String, String)>,
    admin_token: Option<&str>,
) -> Fixture {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("cannot create a temporary directory: {error}"),
    };
    let db = match Db::open(&DatabaseUrl::Sqlite(dir.path().join("t.db"))).await {
        Ok(db) => db,
        Err(error) => panic!("cannot open the test database: {error}"),
    };
    let clock: SharedClock = Arc::new(ManualClock::new(1_764_000_000_000));
    let channels = ChannelRegistry::build(&rules, &clock);
    let live = Live {
        rules: Arc::new(rules),
        channels,
        disabled_inbound,
    };
    let state = AppState::from(crate::app::AppParts {
        db,
        live: Arc::new(ArcSwap::from_pointee(live)),
        clock,
        metrics: crate::telemetry::install_metrics(),
        shell_token: Arc::new(SecretString::from("test-shell-token")),
        admin_token: admin_token.map(|token| Arc::new(SecretString::from(token))),
        inbound: Default::default(),
        delivery_wake: Default::default(),
        breakers: Default::default(),
    });
    Fixture { _dir: dir, state }
}

/// The answer to one request, body read in full.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(value) => value,
            Err(error) => panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            ),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = match axum::body::to_bytes(response.into_body(), 16 << 20).await {
        Ok(body) => body,
        Err(error) => panic!("cannot read the response body: {error}"),
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub fn get(uri: &str) -> Request<Body> {
    request("GET", uri, &[], Body::empty())
}

pub fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    match builder.body(body) {
        Ok(request) => request,
        Err(error) => panic!("bad test request: {error}"),
    }
}

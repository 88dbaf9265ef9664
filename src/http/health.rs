//! `/healthz` (the process is up) and `/readyz` (the database answers and rules are
//! loaded, plus which accounts are disabled and why). Load balancers and orchestrators
//! poll these; neither needs authentication, and neither reveals a secret.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Router, response::IntoResponse};
use serde::Serialize;

use crate::app::AppState;

/// How long `/readyz` waits for the database before calling it unreachable; short, because
/// probes have their own timeouts and a slow answer is as bad as none.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `ok`, or why the database did not answer.
    pub database: String,
    pub rules: RuleCounts,
    /// Accounts that cannot work (usually a missing secret variable). They do not make
    /// the service unready: everything else keeps running.
    pub disabled: Vec<DisabledAccount>,
}

#[derive(Debug, Serialize)]
pub struct RuleCounts {
    pub inbound: usize,
    pub channels: usize,
    pub operators: usize,
}

#[derive(Debug, Serialize)]
pub struct DisabledAccount {
    /// `inbound` or `channel`.
    pub kind: &'static str,
    pub id: String,
    pub reason: String,
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => Ok(()),
        // sqlx's messages name the failure (closed pool, refused connection, timeout), not
        // the credentials; the URL itself is never part of them.
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s",
            DATABASE_PROBE_TIMEOUT.as_secs()
        )),
    };
    let live = state.live();
    let rules = RuleCounts {
        inbound: live.rules.inbound.len(),
        channels: live.rules.channels.len(),
        operators: live.rules.operators.len(),
    };
    let inbound = live
        .disabled_inbound
        .iter()
        .map(|(id, reason)| DisabledAccount {
            kind: "inbound",
            id: id.clone(),
            reason: reason.clone(),
        });
    let channels = live
        .channels
        .disabled()
        .map(|(id, reason)| DisabledAccount {
            kind: "channel",
            id: id.to_string(),
            reason: reason.to_string(),
        });
    let disabled = inbound.chain(channels).collect();
    // Rules are loaded whenever a `Live` exists: startup refuses to serve without one and a
    // failed reload keeps the previous version.
    let (status, code, database) = match database {
        Ok(()) => ("ready", StatusCode::OK, "ok".to_string()),
        Err(reason) => {
            tracing::warn!(database.error = %reason, "not ready: the database does not answer");
            ("not_ready", StatusCode::SERVICE_UNAVAILABLE, reason)
        }
    };
    let body = Readiness {
        status,
        database,
        rules,
        disabled,
    };
    (code, Json(body))
}

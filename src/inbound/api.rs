//! `POST /webhooks/{account_id}`: finds the inbound account in the live rules, refuses
//! unknown and disabled ones, and hands the request to its platform's handler. Counts
//! every callback by platform and verdict.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::shell;
use crate::app::AppState;
use crate::rules::InboundPlatform;

/// The webhook routes, to be merged into the service router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/{account_id}", post(receive))
}

/// How a callback was judged, the `verdict` label of `qunfa_callbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    /// Authentication failed: a bad signature or token, or (for the shell) a remote peer.
    RejectedSignature,
    Malformed,
    UnknownAccount,
    Disabled,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::RejectedSignature => "rejected_signature",
            Verdict::Malformed => "malformed",
            Verdict::UnknownAccount => "unknown_account",
            Verdict::Disabled => "disabled",
        }
    }
}

/// A refused callback: the verdict for the metrics and the JSON error for the caller.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub verdict: Verdict,
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(
        verdict: Verdict,
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            verdict,
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

async fn receive(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    request: Request,
) -> Response {
    let live = state.live();
    let Some(account) = live.rules.inbound_account(&account_id) else {
        count("unknown", Verdict::UnknownAccount);
        return Rejection::new(
            Verdict::UnknownAccount,
            StatusCode::NOT_FOUND,
            "unknown_account",
            "no inbound account with this id is configured in bot-rules",
        )
        .into_response();
    };
    let platform = account.platform.name();
    if let Some((_, reason)) = live
        .disabled_inbound
        .iter()
        .find(|(id, _)| *id == account.id)
    {
        // The reason names environment variables: fine for the log, not for the caller.
        tracing::warn!(inbound.account = %account.id, %reason, "refused a callback for a disabled inbound account");
        count(platform, Verdict::Disabled);
        return Rejection::new(
            Verdict::Disabled,
            StatusCode::SERVICE_UNAVAILABLE,
            "account_disabled",
            "account disabled",
        )
        .into_response();
    }
    let outcome = match account.platform {
        InboundPlatform::Shell => shell::receive(&state, &live.rules, account, request).await,
        // The rules loader refuses platforms without a handler, so this is unreachable with
        // loaded rules; answer rather than panic all the same.
        _ => Err(Rejection::new(
            Verdict::Disabled,
            StatusCode::NOT_IMPLEMENTED,
            "platform_not_served",
            "this platform is not served by this version",
        )),
    };
    match outcome {
        Ok(response) => {
            count(platform, Verdict::Accepted);
            response
        }
        Err(rejection) => {
            count(platform, rejection.verdict);
            rejection.into_response()
        }
    }
}

fn count(platform: &'static str, verdict: Verdict) {
    metrics::counter!("qunfa_callbacks_total", "platform" => platform, "verdict" => verdict.as_str())
        .increment(1);
}

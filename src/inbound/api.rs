//! `/webhooks/{account_id}` (POST, and GET for the platforms whose URL handshake uses GET):
//! finds the inbound account in the live rules, refuses unknown and disabled ones, and
//! hands the request to its platform's handler with a [`Callback`] of shared services.
//! Counts every callback by platform and verdict; logs refusals at a bounded rate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::admission::Admission;
use super::runtime::memory_key;
use super::{
    ChatEvent, Reply, dingtalk, feishu_http, qq, shell, slack, standard, store, wechat_oa,
    wecom_aibot, wecom_app,
};
use crate::app::{AppState, Live};
use crate::bot::Bot;
use crate::rules::{InboundAccount, InboundPlatform};

/// The largest callback body any platform sends us; the router's own limit is larger.
const MAX_CALLBACK_BYTES: usize = 512 * 1024;

/// The webhook routes, to be merged into the service router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/{account_id}", post(receive).get(receive))
}

/// How a callback was judged, the `verdict` label of `qunfa_callbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Verdict {
    Accepted,
    /// Authentication failed: a bad signature or token, or (for the shell) a remote peer.
    RejectedSignature,
    /// Signed, but outside the platform's time window.
    Stale,
    Malformed,
    UnknownAccount,
    Disabled,
    /// Our fault (the database is down): the platform should retry.
    Error,
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::RejectedSignature => "rejected_signature",
            Verdict::Stale => "rejected_stale",
            Verdict::Malformed => "malformed",
            Verdict::UnknownAccount => "unknown_account",
            Verdict::Disabled => "disabled",
            Verdict::Error => "error",
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

    /// A missing or wrong signature or token: 401.
    pub fn signature(message: impl Into<String>) -> Self {
        Self::new(
            Verdict::RejectedSignature,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            message,
        )
    }

    /// A correctly signed callback outside the platform's time window (a replay): 401.
    pub fn stale(message: impl Into<String>) -> Self {
        Self::new(Verdict::Stale, StatusCode::UNAUTHORIZED, "stale", message)
    }

    /// A body or query that does not have the platform's shape: 400.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            Verdict::Malformed,
            StatusCode::BAD_REQUEST,
            "malformed",
            message,
        )
    }

    /// Something on our side failed; 500 makes the platform retry later.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            Verdict::Error,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message,
        )
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// What a platform handler gets besides the request: the account, the rules and channels
/// in force, and the services every platform needs.
pub(crate) struct Callback<'a> {
    pub state: &'a AppState,
    pub live: &'a Arc<Live>,
    pub account: &'a InboundAccount,
}

impl Callback<'_> {
    pub fn now_ms(&self) -> i64 {
        self.state.clock.now_ms()
    }

    /// Reads the whole body, bounded; signatures are checked over exactly these bytes.
    pub async fn body(&self, request: Request) -> Result<(Parts, Bytes), Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_CALLBACK_BYTES)
            .await
            .map_err(|_| {
                Rejection::new(
                    Verdict::Malformed,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("callback bodies are limited to {MAX_CALLBACK_BYTES} bytes"),
                )
            })?;
        Ok((parts, bytes))
    }

    /// Admits a chat message for the bot the first time this account's `event_id` is seen;
    /// `None` for a retry or replay (acknowledge it and do nothing). Claimed in memory at
    /// once, without a database round trip; the bot then records the id durably in the
    /// way its work needs (see [`Admission`]).
    pub async fn admit(&self, event_id: &str) -> Option<Admission> {
        let inbound = &self.state.inbound;
        inbound.load_recent(&self.state.db).await;
        Admission::claim(inbound, &self.account.id, event_id, self.now_ms())
    }

    /// For callbacks that run nothing (a handshake's nonce, an event the bot ignores): true
    /// the first time this account sees `event_id`, false for a retry or replay. The id is
    /// recorded in the background.
    pub async fn first_time(&self, event_id: &str) -> bool {
        match self.admit(event_id).await {
            Some(admission) => {
                admission.record_later(&self.state.db).await;
                true
            }
            None => false,
        }
    }

    /// The bot's answer to one admitted chat message (commands, roles, audit, opt-out).
    pub async fn run_command(&self, event: &ChatEvent, admission: Admission) -> Vec<Reply> {
        Bot::serving(self.state)
            .handle_admitted(self.live, event, admission)
            .await
    }

    /// Keeps a verified non-message event (read receipt, card click, send report) once
    /// per kind and `event_id`: the id and the event are stored in one transaction, so a
    /// failed write leaves neither and the platform's retry stores it. True when stored now.
    pub async fn record_event_once(
        &self,
        kind: &str,
        event_id: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, Rejection> {
        let dedup_key = format!("{kind}:{event_id}");
        let key = memory_key(&self.account.id, &dedup_key);
        if self.state.inbound.seen_recently(&key) {
            return Ok(false);
        }
        let stored = store::record_platform_event_once(
            &self.state.db,
            self.account.platform.name(),
            &self.account.id,
            &dedup_key,
            kind,
            event_id,
            payload,
            self.now_ms(),
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, kind, "cannot record a platform event");
            Rejection::internal("cannot record the event; retry later")
        })?;
        self.state.inbound.remember(&key);
        Ok(stored)
    }

    /// The shared client for reply APIs.
    pub fn http(&self) -> &reqwest::Client {
        self.state.inbound.http()
    }

    /// Sends a reply after the HTTP answer; shutdown waits a bounded time for these.
    pub fn reply_later(&self, reply: impl Future<Output = ()> + Send + 'static) {
        self.state.inbound.spawn_reply(reply);
    }
}

async fn receive(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    request: Request,
) -> Response {
    // A guard rather than a clone of the `Arc`: every callback bumping and dropping the
    // same reference count made the worker threads fight over its cache line.
    let live = state.live.load();
    let Some(account) = live.rules.inbound_account(&account_id) else {
        state
            .inbound
            .count_callback("unknown", Verdict::UnknownAccount);
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
        state.inbound.count_callback(platform, Verdict::Disabled);
        return Rejection::new(
            Verdict::Disabled,
            StatusCode::SERVICE_UNAVAILABLE,
            "account_disabled",
            "account disabled",
        )
        .into_response();
    }
    let callback = Callback {
        state: &state,
        live: &live,
        account,
    };
    let outcome = match &account.platform {
        InboundPlatform::Shell => shell::receive(&state, &live, account, request).await,
        InboundPlatform::Slack { .. } => slack::receive(&callback, request).await,
        InboundPlatform::Qq { .. } => qq::receive(&callback, request).await,
        InboundPlatform::Standard { .. } => standard::receive(&callback, request).await,
        InboundPlatform::WecomAibot { .. } => wecom_aibot::receive(&callback, request).await,
        InboundPlatform::WecomApp { .. } => wecom_app::receive(&callback, request).await,
        InboundPlatform::WechatOa { .. } => wechat_oa::receive(&callback, request).await,
        InboundPlatform::Dingtalk { .. } => dingtalk::receive(&callback, request).await,
        InboundPlatform::Feishu { .. } => feishu_http::receive(&callback, request).await,
    };
    match outcome {
        Ok(response) => {
            state.inbound.count_callback(platform, Verdict::Accepted);
            response
        }
        Err(rejection) => {
            state.inbound.count_callback(platform, rejection.verdict);
            log_rejection(&account.id, platform, &rejection);
            rejection.into_response()
        }
    }
}

/// Refused callbacks are logged at most once a second, with how many were not logged
/// since: a flood of forgeries must not become a flood of log lines.
fn log_rejection(account: &str, platform: &str, rejection: &Rejection) {
    static LAST_LOGGED_SECOND: AtomicI64 = AtomicI64::new(i64::MIN);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let second = jiff::Timestamp::now().as_second();
    let last = LAST_LOGGED_SECOND.load(Ordering::Relaxed);
    if last == second
        || LAST_LOGGED_SECOND
            .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    if rejection.verdict == Verdict::Error {
        tracing::error!(inbound.account = account, platform, code = rejection.code, message = %rejection.message, suppressed, "callback failed");
    } else {
        tracing::warn!(inbound.account = account, platform, code = rejection.code, message = %rejection.message, suppressed, "callback refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::test_support;

    #[tokio::test]
    async fn callback_ids_are_claimed_at_once_and_known_after_a_restart() {
        let (_dir, db) = test_support::db().await;
        let state = test_support::app_state(db.clone(), "t", vec![]);
        let live = state.live();
        let account = live.rules.inbound_account("shell").unwrap();
        let callback = Callback {
            state: &state,
            live: &live,
            account,
        };
        let first = callback.admit("evt-1").await.expect("new");
        assert!(
            callback.admit("evt-1").await.is_none(),
            "claimed before anything is written"
        );
        first.record_later(&db).await;
        // A request cancelled before the bot decided leaves the id to the retry.
        drop(callback.admit("evt-2").await.expect("new"));
        assert!(callback.first_time("evt-2").await, "released");
        assert!(!callback.first_time("evt-2").await);
        db.grouped().flush().await.unwrap();

        // A new process has an empty memory; it loads the recent ids from the database.
        let restarted = test_support::app_state(db.clone(), "t", vec![]);
        let callback = Callback {
            state: &restarted,
            live: &live,
            account,
        };
        assert!(callback.admit("evt-1").await.is_none(), "persisted");
        assert!(!callback.first_time("evt-2").await, "persisted");
        assert!(callback.first_time("evt-3").await);
        let payload = json!({"message_id": "om_1", "reader": "ou_1"});
        let record = || callback.record_event_once("feishu.message_read", "e-9", &payload);
        assert!(record().await.unwrap());
        assert!(!record().await.unwrap(), "recorded once");
        let events = store::recent_platform_events(&db, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "feishu.message_read");
        assert_eq!(events[0].payload, payload);
        assert_eq!(events[0].platform, "shell");
    }
}

//! The Slack callback handler: verify, de-duplicate, answer within Slack's three seconds.
//! Slash commands are answered in the HTTP reply when the bot is quick and through
//! `response_url` when it is not; events are acknowledged at once and answered through
//! `chat.postMessage`, so a slow command never makes Slack retry (bolt-python #868).

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{
    RETRY_NUM_HEADER, SIGNATURE_HEADER, SlackCallback, SlackError, TIMESTAMP_HEADER,
    command_answer, parse, post_message_body, post_message_url, verify,
};
use crate::inbound::Admission;
use crate::inbound::api::{Callback, Rejection};
use crate::inbound::deferred::DeferredBot;
use crate::inbound::{ChatEvent, Reply};
use crate::rules::InboundPlatform;

/// How long a slash command may take before the answer moves to `response_url`; Slack
/// gives up at three seconds, and the network needs its share.
const COMMAND_DEADLINE: Duration = Duration::from_millis(2_500);

pub(in crate::inbound) async fn receive(
    callback: &Callback<'_>,
    request: Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::Slack {
        signing_secret,
        bot_token,
        base_url,
    } = &callback.account.platform
    else {
        return Err(Rejection::internal("the account is not a Slack account"));
    };
    let (parts, body) = callback.body(request).await?;
    let secret = signing_secret
        .resolve()
        .map_err(|_| Rejection::internal("the signing secret is not available"))?;
    let timestamp = header(&parts.headers, TIMESTAMP_HEADER)?;
    let signature = header(&parts.headers, SIGNATURE_HEADER)?;
    let now_secs = callback.now_ms().div_euclid(1000);
    verify(
        secret.expose_secret().as_bytes(),
        timestamp,
        signature,
        &body,
        now_secs,
    )
    .map_err(rejection)?;
    let parsed = parse(&callback.account.id, &body).map_err(rejection)?;
    let admission = match parsed.dedup_key() {
        None => Admission::unrecorded(),
        Some(key) => match callback.admit(key).await {
            Some(admission) => admission,
            None => {
                tracing::debug!(
                    inbound.account = %callback.account.id,
                    retry = parts.headers.get(RETRY_NUM_HEADER).and_then(|value| value.to_str().ok()),
                    "Slack re-delivered a callback already handled"
                );
                return Ok(acknowledge());
            }
        },
    };
    match parsed {
        SlackCallback::UrlVerification { challenge } => {
            Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], challenge).into_response())
        }
        SlackCallback::Ignored { .. } => {
            admission.record_later(&callback.state.db).await;
            Ok(acknowledge())
        }
        SlackCallback::Command {
            event,
            response_url,
        } => Ok(answer_command(callback, event, response_url, admission).await),
        SlackCallback::Message { event, reply } => {
            let token = match bot_token.as_ref().map(|token| token.resolve()) {
                Some(Ok(token)) => Some(token),
                _ => None,
            };
            let url = post_message_url(base_url);
            let http = callback.http().clone();
            let bot = DeferredBot::new(callback, admission);
            callback.reply_later(async move {
                let replies = bot.run(&event).await;
                if replies.is_empty() {
                    return;
                }
                let Some(token) = token else {
                    tracing::warn!(inbound.account = %event.account, "Slack message answered without a reply: set `bot_token_env` so replies can be posted");
                    return;
                };
                let body = post_message_body(&reply, &replies);
                post(&http, &url, Some(&token), &body).await;
            });
            Ok(acknowledge())
        }
    }
}

async fn answer_command(
    callback: &Callback<'_>,
    event: ChatEvent,
    response_url: Option<String>,
    admission: Admission,
) -> Response {
    let bot = DeferredBot::new(callback, admission);
    let replies = async move { bot.run(&event).await };
    answer_in_time(callback, COMMAND_DEADLINE, replies, response_url).await
}

/// Runs the command in the background and answers in the HTTP reply if it is done before
/// the deadline; otherwise the background task posts the answer to `response_url`.
async fn answer_in_time(
    callback: &Callback<'_>,
    deadline: Duration,
    replies: impl Future<Output = Vec<Reply>> + Send + 'static,
    response_url: Option<String>,
) -> Response {
    let (sender, mut receiver) = tokio::sync::oneshot::channel::<Vec<Reply>>();
    let http = callback.http().clone();
    let account = callback.account.id.clone();
    callback.reply_later(async move {
        let replies = replies.await;
        // A closed receiver means the HTTP answer has gone: the reply takes the long way.
        let Err(replies) = sender.send(replies) else {
            return;
        };
        match (&response_url, replies.is_empty()) {
            (_, true) => {}
            (Some(url), false) => post(&http, url, None, &command_answer(&replies)).await,
            (None, false) => {
                tracing::warn!(inbound.account = %account, "a slow Slack command has no response_url to answer at")
            }
        }
    });
    let replies = match tokio::time::timeout(deadline, &mut receiver).await {
        Ok(Ok(replies)) => replies,
        _ => {
            // Closing first makes the hand-over exact: either the answer was already sent
            // and is taken here, or the task's send fails and it uses `response_url`.
            receiver.close();
            match receiver.try_recv() {
                Ok(replies) => replies,
                Err(_) => return acknowledge(),
            }
        }
    };
    if replies.is_empty() {
        return acknowledge();
    }
    Json(command_answer(&replies)).into_response()
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&SecretString>, body: &Value) {
    let mut request = http.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token.expose_secret());
    }
    // Slack reports most failures as HTTP 200 with `"ok": false`.
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if answer.get("ok") == Some(&Value::Bool(false)) {
                tracing::warn!(error = %answer["error"], "Slack refused the reply");
            }
        }
        Ok(response) => tracing::warn!(status = %response.status(), "Slack refused the reply"),
        Err(error) => tracing::warn!(%error, "could not reach Slack to reply"),
    }
}

fn acknowledge() -> Response {
    StatusCode::OK.into_response()
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, Rejection> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| rejection(SlackError::MissingHeader(name)))
}

fn rejection(error: SlackError) -> Rejection {
    match error {
        SlackError::Stale { .. } => Rejection::stale(error.to_string()),
        SlackError::Malformed(_) => Rejection::malformed(error.to_string()),
        SlackError::MissingHeader(_) | SlackError::BadTimestamp | SlackError::BadSignature => {
            Rejection::signature(error.to_string())
        }
    }
}

#[cfg(test)]
#[path = "slack_http_tests.rs"]
mod tests;

//! The QQ bot callback handler: verify every request (the op 13 validation too: its answer
//! is a signature by the very key that signs the platform's callbacks, so answering an
//! unsigned one would let anyone forge callbacks), de-duplicate, acknowledge at once and
//! reply through the group or 1:1 message API with a cached access token.

use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};

use super::{
    QqCallback, QqError, ReplyTarget, SIGNATURE_HEADER, TIMESTAMP_HEADER, ack, parse, parse_token,
    reply_body, reply_url, signing_key, token_request, token_url, validation_answer, verify,
};
use crate::inbound::Reply;
use crate::inbound::api::{Callback, Rejection};
use crate::inbound::deferred::DeferredBot;
use crate::rules::InboundPlatform;

pub(in crate::inbound) async fn receive(
    callback: &Callback<'_>,
    request: Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::Qq {
        app_id,
        app_secret,
        base_url,
    } = &callback.account.platform
    else {
        return Err(Rejection::internal("the account is not a QQ bot account"));
    };
    let (parts, body) = callback.body(request).await?;
    let secret = app_secret
        .resolve()
        .map_err(|_| Rejection::internal("the bot secret is not available"))?;
    let key = signing_key(secret.expose_secret()).map_err(rejection)?;
    let timestamp = header(&parts.headers, TIMESTAMP_HEADER)?;
    let signature = header(&parts.headers, SIGNATURE_HEADER)?;
    let now_secs = callback.now_ms().div_euclid(1000);
    verify(&key.verifying_key(), timestamp, signature, &body, now_secs).map_err(rejection)?;
    match parse(&callback.account.id, &body).map_err(rejection)? {
        QqCallback::Validation {
            plain_token,
            event_ts,
        } => Ok(Json(validation_answer(&key, &plain_token, &event_ts)).into_response()),
        QqCallback::Other { kind, dedup_key } => {
            if let Some(key) = &dedup_key
                && !callback.first_time(key).await
            {
                return Ok(Json(ack()).into_response());
            }
            tracing::debug!(inbound.account = %callback.account.id, kind, "QQ dispatch not for the bot");
            Ok(Json(ack()).into_response())
        }
        QqCallback::Message {
            event,
            reply,
            dedup_key,
        } => {
            let Some(admission) = callback.admit(&dedup_key).await else {
                return Ok(Json(ack()).into_response());
            };
            let bot = DeferredBot::new(callback, admission);
            let api = ReplyApi {
                http: callback.http().clone(),
                tokens: callback.state.inbound.clone(),
                base_url: base_url.clone(),
                app_id: app_id.clone(),
                secret,
            };
            callback.reply_later(async move {
                let replies = bot.run(&event).await;
                api.send(&reply, &replies).await;
            });
            Ok(Json(ack()).into_response())
        }
    }
}

/// Everything a passive reply needs, owned by the reply task.
struct ReplyApi {
    http: reqwest::Client,
    tokens: std::sync::Arc<crate::inbound::InboundRuntime>,
    base_url: String,
    app_id: String,
    secret: SecretString,
}

impl ReplyApi {
    async fn send(&self, target: &ReplyTarget, replies: &[Reply]) {
        if replies.is_empty() {
            return;
        }
        let cache_key = format!("qq:{}", self.app_id);
        let token = match self
            .tokens
            .tokens()
            .get_or_fetch(&cache_key, || self.fetch_token())
            .await
        {
            Ok(token) => token,
            Err(error) => {
                tracing::warn!(%error, app_id = %self.app_id, "cannot get a QQ access token; the reply is lost");
                return;
            }
        };
        let url = reply_url(&self.base_url, target);
        for (seq, reply) in (1u32..).zip(replies) {
            let sent = self
                .http
                .post(&url)
                .header("authorization", format!("QQBot {}", token.expose_secret()))
                .json(&reply_body(target, reply, seq))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    let status = response.status();
                    if status.as_u16() == 401 {
                        // Revoked or expired early: the next reply fetches a fresh token.
                        self.tokens.tokens().invalidate(&cache_key).await;
                    }
                    let detail = response.text().await.unwrap_or_default();
                    tracing::warn!(%status, detail = %truncate(&detail), "QQ refused a reply");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not reach the QQ message API");
                    return;
                }
            }
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration), String> {
        let response = self
            .http
            .post(token_url(&self.base_url))
            .json(&token_request(&self.app_id, self.secret.expose_secret()))
            .send()
            .await
            .map_err(|error| format!("token request failed: {error}"))?;
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("token answer unreadable: {error}"))?;
        let token = parse_token(&body).map_err(|error| error.to_string())?;
        Ok((
            SecretString::from(token.token),
            Duration::from_secs(token.expires_in_secs),
        ))
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, Rejection> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| rejection(QqError::MissingHeader(name)))
}

fn rejection(error: QqError) -> Rejection {
    match error {
        QqError::Stale { .. } => Rejection::stale(error.to_string()),
        QqError::Malformed(_) => Rejection::malformed(error.to_string()),
        QqError::EmptySecret => Rejection::internal(error.to_string()),
        QqError::MissingHeader(_) | QqError::BadTimestamp | QqError::BadSignature => {
            Rejection::signature(error.to_string())
        }
    }
}

#[cfg(test)]
#[path = "qq_http_tests.rs"]
mod tests;

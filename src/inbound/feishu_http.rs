//! `POST /webhooks/{id}` for a `feishu` account: signature (when an encrypt key is set) over
//! the raw body, then the envelope, the token, de-duplication on `event_id`, and the reply
//! through the message reply API after the HTTP answer (Feishu wants its ack within 3 s).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::api::{Callback, Rejection};
use super::deferred::DeferredBot;
use super::feishu::{self, FeishuError, Incoming, SignedHeaders};
use super::feishu_api::{self, ApiError};
use super::{InboundRuntime, Reply};
use crate::rules::InboundPlatform;

pub(super) async fn receive(
    callback: &Callback<'_>,
    request: axum::extract::Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::Feishu {
        verification_token,
        encrypt_key,
        app_id,
        app_secret,
        base_url,
    } = &callback.account.platform
    else {
        return Err(Rejection::internal("the account is not a Feishu app"));
    };
    let unavailable = |_| Rejection::internal("a secret of this Feishu account is not available");
    let verification_token = verification_token.resolve().map_err(unavailable)?;
    let encrypt_key = match encrypt_key {
        Some(key) => Some(key.resolve().map_err(unavailable)?),
        None => None,
    };
    let encrypt_key = encrypt_key.as_ref().map(|key| key.expose_secret());
    let (parts, body) = callback.body(request).await?;

    let token = verification_token.expose_secret();
    let account = callback.account.id.as_str();
    let refused = match (encrypt_key, signed_headers(&parts.headers)) {
        (Some(key), Some(headers)) => {
            feishu::verify_signature(headers, key, &body, callback.now_ms()).err()
        }
        (Some(_), None) => Some(FeishuError::MissingSignature),
        (None, _) => None,
    };
    if let Some(error) = refused {
        // The URL check is the one request Feishu does not sign (lark-oapi never checks its
        // signature): answer it when its token is right; anything else is refused.
        return match unsigned_challenge(&body, encrypt_key, account, token) {
            Some(challenge) => Ok(Json(json!({"challenge": challenge})).into_response()),
            None => Err(refuse(error)),
        };
    }
    let signed = encrypt_key.is_some();
    let event = feishu::open(&body, encrypt_key).map_err(refuse)?;
    let incoming = feishu::classify(&event, account, token, signed).map_err(refuse)?;
    match incoming {
        Incoming::Challenge(challenge) => Ok(Json(json!({"challenge": challenge})).into_response()),
        Incoming::Ignored { .. } => Ok(acknowledge()),
        Incoming::MessageRead { event_id, record } => {
            callback
                .record_event_once(feishu::MESSAGE_READ_KIND, &event_id, &record)
                .await?;
            Ok(acknowledge())
        }
        Incoming::Message { event_id, event } => {
            let Some(admission) = callback.admit(&event_id).await else {
                return Ok(acknowledge());
            };
            let bot = DeferredBot::new(callback, admission);
            let api = ReplyApi {
                http: callback.http().clone(),
                runtime: callback.state.inbound.clone(),
                base_url: base_url.trim_end_matches('/').to_string(),
                app_id: app_id.clone(),
                app_secret: app_secret
                    .resolve()
                    .map_err(|_| Rejection::internal("the app secret is not available"))?,
            };
            // The command runs after the answer: Feishu wants its ack within 3 s and the
            // reply goes through the API anyway.
            callback.reply_later(async move {
                let replies = bot.run(&event).await;
                if let Some(message_id) = &event.message_id {
                    api.send(message_id, &replies).await;
                }
            });
            Ok(acknowledge())
        }
    }
}

/// The challenge of a `url_verification` with the right token, if that is what `body` is.
fn unsigned_challenge(
    body: &[u8],
    encrypt_key: Option<&str>,
    account: &str,
    token: &str,
) -> Option<String> {
    let event = feishu::open(body, encrypt_key).ok()?;
    match feishu::classify(&event, account, token, false).ok()? {
        Incoming::Challenge(challenge) => Some(challenge),
        _ => None,
    }
}

fn signed_headers(headers: &HeaderMap) -> Option<SignedHeaders<'_>> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Some(SignedHeaders {
        timestamp: get("x-lark-request-timestamp")?,
        nonce: get("x-lark-request-nonce")?,
        signature: get("x-lark-signature")?,
    })
}

fn refuse(error: FeishuError) -> Rejection {
    let message = error.to_string();
    match error {
        FeishuError::Stale => Rejection::stale(message),
        FeishuError::MissingSignature
        | FeishuError::BadSignature
        | FeishuError::BadTimestamp
        | FeishuError::BadToken => Rejection::signature(message),
        FeishuError::Decrypt(_) | FeishuError::Malformed(_) => Rejection::malformed(message),
    }
}

/// What lark-oapi answers once an event is handled.
fn acknowledge() -> Response {
    Json(json!({"msg": "success"})).into_response()
}

/// Everything a reply needs, owned by the reply task.
struct ReplyApi {
    http: reqwest::Client,
    runtime: Arc<InboundRuntime>,
    base_url: String,
    app_id: String,
    app_secret: SecretString,
}

impl ReplyApi {
    async fn send(&self, message_id: &str, replies: &[Reply]) {
        let cache_key = format!("feishu:{}:{}", self.base_url, self.app_id);
        for (index, reply) in replies.iter().enumerate() {
            let token = match self
                .runtime
                .tokens()
                .get_or_fetch(&cache_key, || self.fetch_token())
                .await
            {
                Ok(token) => token,
                Err(error) => {
                    tracing::warn!(%error, app_id = %self.app_id, "cannot get a Feishu tenant access token; the reply is lost");
                    return;
                }
            };
            let url = format!("{}{}", self.base_url, feishu_api::reply_path(message_id));
            let body = feishu_api::reply_request(message_id, index, &reply.text);
            match self.post(&url, Some(&token), &body).await {
                Ok(_) => {}
                Err(error) => {
                    if let ApiError::Code { code, .. } = &error
                        && feishu_api::is_token_refused(*code)
                    {
                        // Revoked or expired early: the next reply fetches a fresh token.
                        self.runtime.tokens().invalidate(&cache_key).await;
                    }
                    tracing::warn!(%error, %message_id, "Feishu refused a reply");
                    return;
                }
            }
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration), ApiError> {
        let url = format!("{}{}", self.base_url, feishu_api::TOKEN_PATH);
        let body = feishu_api::token_request(&self.app_id, self.app_secret.expose_secret());
        let answer = self.post(&url, None, &body).await?;
        let token = feishu_api::read_token(&answer)?;
        Ok((
            SecretString::from(token.token),
            Duration::from_secs(token.lifetime_secs),
        ))
    }

    async fn post(
        &self,
        url: &str,
        token: Option<&SecretString>,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let mut request = self.http.post(url).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request
            .send()
            .await
            .map_err(|error| ApiError::Unreachable(error.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ApiError::Unreachable(error.without_url().to_string()))?;
        feishu_api::check_answer(status, &bytes)
    }
}

#[cfg(test)]
#[path = "feishu_http_tests.rs"]
mod tests;

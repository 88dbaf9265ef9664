//! The Standard Webhooks callback handler: verify with the account's tolerance,
//! de-duplicate by `webhook-id`, answer messages synchronously with the bot's replies, and
//! keep other event types as typed platform events (`standard.{type}`).

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::{
    Answer, ID_HEADER, SIGNATURE_HEADER, StandardCallback, StandardError, TIMESTAMP_HEADER, parse,
    verify,
};
use crate::channels::decode_secret;
use crate::inbound::api::{Callback, Rejection};
use crate::rules::InboundPlatform;

pub(in crate::inbound) async fn receive(
    callback: &Callback<'_>,
    request: Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::Standard { secret, tolerance } = &callback.account.platform else {
        return Err(Rejection::internal(
            "the account is not a Standard Webhooks account",
        ));
    };
    let (parts, body) = callback.body(request).await?;
    let key = secret
        .resolve()
        .ok()
        .and_then(|secret| decode_secret(secret.expose_secret()).ok())
        .ok_or_else(|| {
            Rejection::internal(
                "the account's secret is not `whsec_` followed by base64; fix the variable named by `secret_env`",
            )
        })?;
    let id = header(&parts.headers, ID_HEADER)?;
    let timestamp = header(&parts.headers, TIMESTAMP_HEADER)?;
    let signatures = header(&parts.headers, SIGNATURE_HEADER)?;
    let now_secs = callback.now_ms().div_euclid(1000);
    verify(&key, id, timestamp, signatures, &body, now_secs, *tolerance).map_err(rejection)?;
    let parsed = parse(&callback.account.id, id, &body).map_err(rejection)?;
    match parsed {
        StandardCallback::Message(event) => {
            let Some(admission) = callback.admit(id).await else {
                return Ok(answer(Vec::new()));
            };
            Ok(answer(callback.run_command(&event, admission).await))
        }
        StandardCallback::Other(payload) => {
            let kind = format!("standard.{}", payload.kind);
            let value = serde_json::to_value(&payload).unwrap_or_default();
            callback.record_event_once(&kind, id, &value).await?;
            Ok(answer(Vec::new()))
        }
    }
}

fn answer(replies: Vec<crate::inbound::Reply>) -> Response {
    Json(Answer { replies }).into_response()
}

/// Header names are case-insensitive in HTTP; `HeaderMap` already folds them. Svix-branded
/// senders use the same scheme under `svix-*` names, so those are taken as well.
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, Rejection> {
    let svix = name.replacen("webhook-", "svix-", 1);
    headers
        .get(name)
        .or_else(|| headers.get(svix.as_str()))
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| rejection(StandardError::MissingHeader(name)))
}

fn rejection(error: StandardError) -> Rejection {
    match error {
        StandardError::Stale { .. } => Rejection::stale(error.to_string()),
        StandardError::Malformed(_) => Rejection::malformed(error.to_string()),
        StandardError::MissingHeader(_)
        | StandardError::BadTimestamp
        | StandardError::BadSignature => Rejection::signature(error.to_string()),
    }
}

#[cfg(test)]
#[path = "standard_http_tests.rs"]
mod tests;

//! The Feishu OpenAPI calls a `feishu` inbound account makes to answer: the tenant access
//! token (`/open-apis/auth/v3/tenant_access_token/internal`) and the message reply
//! (`/open-apis/im/v1/messages/{message_id}/reply`). Request bodies and answer checks are
//! pure; HTTP 200 with a non-zero `code` is a failure, never a success.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";

/// Why a Feishu API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Feishu answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("Feishu answered code {code}: {msg}")]
    Code { code: i64, msg: String },
    #[error("Feishu's answer is not what its API documents: {0}")]
    Unexpected(String),
    #[error("cannot reach the Feishu API: {0}")]
    Unreachable(String),
}

/// Codes that mean the tenant access token was refused (invalid or expired; unverified
/// list from peers' code): worth a fresh token on the next reply.
pub fn is_token_refused(code: i64) -> bool {
    matches!(code, 99991661 | 99991663 | 99991664 | 99991668)
}

/// `POST {base_url}/open-apis/auth/v3/tenant_access_token/internal` body.
pub fn token_request(app_id: &str, app_secret: &str) -> Value {
    json!({"app_id": app_id, "app_secret": app_secret})
}

/// A tenant access token and how long Feishu says it lives (the cache refreshes it early).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantToken {
    pub token: String,
    pub lifetime_secs: u64,
}

/// The token from `{"code":0,"tenant_access_token":"t-…","expire":7200}`, an answer
/// [`check_answer`] accepted.
pub fn read_token(answer: &Value) -> Result<TenantToken, ApiError> {
    let token = answer
        .get("tenant_access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unexpected("no `tenant_access_token`".into()))?;
    let expire = answer
        .get("expire")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::Unexpected("no `expire` in seconds".into()))?;
    Ok(TenantToken {
        token: token.to_string(),
        lifetime_secs: expire,
    })
}

/// The reply path for a message.
pub fn reply_path(message_id: &str) -> String {
    // Message ids are `om_` + hex; anything else must not be able to change the path.
    let safe: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    format!("/open-apis/im/v1/messages/{safe}/reply")
}

/// A text reply. `uuid` makes Feishu drop a duplicate of the same reply (retried after a
/// timeout): it is derived from the message and the reply's position, at most 50 chars.
pub fn reply_request(message_id: &str, index: usize, text: &str) -> Value {
    let digest = Sha256::digest(format!("{message_id}\n{index}").as_bytes());
    let uuid = hex::encode(&digest[..16]);
    json!({
        "msg_type": "text",
        "content": json!({"text": text}).to_string(),
        "reply_in_thread": false,
        "uuid": uuid,
    })
}

/// Any Feishu OpenAPI answer: success only with HTTP 2xx **and** `code == 0`.
pub fn check_answer(status: u16, body: &[u8]) -> Result<Value, ApiError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .map(Value::as_i64);
    let msg = || {
        parsed
            .as_ref()
            .and_then(|v| v.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match code {
        Some(Some(code)) if code != 0 => Err(ApiError::Code { code, msg: msg() }),
        _ if !(200..300).contains(&status) => Err(ApiError::Http {
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
        }),
        Some(Some(_)) => Ok(parsed.unwrap_or(Value::Null)),
        _ => Err(ApiError::Unexpected(
            "no numeric `code` in the answer".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_token_answer(status: u16, body: &[u8]) -> Result<TenantToken, ApiError> {
        read_token(&check_answer(status, body)?)
    }

    #[test]
    fn a_200_with_a_non_zero_code_is_a_failure() {
        assert_eq!(
            check_answer(200, br#"{"code":9499,"msg":"too many request"}"#),
            Err(ApiError::Code {
                code: 9499,
                msg: "too many request".into()
            })
        );
        assert!(check_answer(200, br#"{"code":0,"msg":"success","data":{}}"#).is_ok());
        assert!(matches!(
            check_answer(429, br#"{"code":99991400,"msg":"rate limited"}"#),
            Err(ApiError::Code { code: 99991400, .. })
        ));
        assert!(matches!(
            check_answer(502, b"<html>bad gateway</html>"),
            Err(ApiError::Http { status: 502, .. })
        ));
        assert!(matches!(
            check_answer(200, b"{}"),
            Err(ApiError::Unexpected(_))
        ));
    }

    #[test]
    fn the_token_answer_gives_the_token_and_its_lifetime() {
        let token = parse_token_answer(
            200,
            br#"{"code":0,"msg":"ok","tenant_access_token":"t-abc","expire":7200}"#,
        )
        .unwrap();
        assert_eq!(token.token, "t-abc");
        assert_eq!(token.lifetime_secs, 7200);
        assert!(parse_token_answer(200, br#"{"code":10003,"msg":"invalid app_secret"}"#).is_err());
        assert!(parse_token_answer(200, br#"{"code":0,"expire":7200}"#).is_err());
    }

    #[test]
    fn the_reply_content_is_a_json_string_and_the_uuid_is_stable() {
        let first = reply_request("om_1", 0, "role: admin \"ok\"");
        assert_eq!(first["msg_type"], "text");
        let content: Value = serde_json::from_str(first["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["text"], "role: admin \"ok\"");
        assert_eq!(first["uuid"], reply_request("om_1", 0, "other")["uuid"]);
        assert_ne!(first["uuid"], reply_request("om_1", 1, "x")["uuid"]);
        assert!(first["uuid"].as_str().unwrap().len() <= 50);
    }

    #[test]
    fn the_reply_path_cannot_be_steered() {
        assert_eq!(
            reply_path("om_5ce6d5"),
            "/open-apis/im/v1/messages/om_5ce6d5/reply"
        );
        assert_eq!(
            reply_path("../../x?y=1#"),
            "/open-apis/im/v1/messages/xy1/reply"
        );
    }

    proptest! {
        #[test]
        fn answers_never_panic(status in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = check_answer(status, &body);
            let _ = parse_token_answer(status, &body);
        }
    }
}

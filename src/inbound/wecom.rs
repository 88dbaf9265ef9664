//! What the two WeCom callback kinds share: the signed query (`msg_signature`, `timestamp`,
//! `nonce`), the GET URL verification (decrypt `echostr`, answer it verbatim), and opening
//! a POSTed payload in the required order: signature, then time window, then decryption.
//! The intelligent robot lives in `wecom_aibot.rs`, the self-built app in `wecom_app.rs`.

use std::collections::HashMap;

use super::api::Rejection;
use super::crypto::{CryptoError, MsgCrypt};
use super::wx::{WindowError, check_window};

/// Why a WeCom callback was refused; the handler maps each to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WecomError {
    #[error("the query parameter `{0}` is missing")]
    MissingParam(&'static str),
    /// The signature or the receive id does not match: answered 401.
    #[error(transparent)]
    Auth(CryptoError),
    #[error("stale callback: {0}")]
    Stale(WindowError),
    /// The signature matched but the payload cannot be used: answered 400.
    #[error("{0}")]
    Malformed(String),
}

impl From<CryptoError> for WecomError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::Signature | CryptoError::ReceiveId => WecomError::Auth(error),
            other => WecomError::Malformed(other.to_string()),
        }
    }
}

/// The HTTP answer to a refused callback: authentication failures and missing signature
/// parameters 401, stale 401, anything else 400.
pub fn rejection(error: WecomError) -> Rejection {
    let message = error.to_string();
    match error {
        WecomError::MissingParam("msg_signature" | "timestamp" | "nonce") | WecomError::Auth(_) => {
            Rejection::signature(message)
        }
        WecomError::Stale(_) => Rejection::stale(message),
        WecomError::MissingParam(_) | WecomError::Malformed(_) => Rejection::malformed(message),
    }
}

/// The three signed query parameters of every WeCom callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
}

impl SignedQuery {
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, WecomError> {
        let get = |name: &'static str| {
            params
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
                .ok_or(WecomError::MissingParam(name))
        };
        Ok(Self {
            msg_signature: get("msg_signature")?,
            timestamp: get("timestamp")?,
            nonce: get("nonce")?,
        })
    }
}

/// GET URL verification: check the signature over `echostr`, decrypt it, and return the
/// plaintext that must be the whole response body. No time window: the console sends this
/// once during setup, and replaying it reveals nothing the replayer did not already send.
pub fn verify_url(
    crypt: &MsgCrypt,
    params: &HashMap<String, String>,
) -> Result<String, WecomError> {
    let signed = SignedQuery::from_params(params)?;
    let echostr = params
        .get("echostr")
        .filter(|value| !value.is_empty())
        .ok_or(WecomError::MissingParam("echostr"))?;
    Ok(crypt.open(
        &signed.msg_signature,
        &signed.timestamp,
        &signed.nonce,
        echostr,
    )?)
}

/// Verifies a POSTed `encrypt` value, checks the window, and decrypts it.
pub fn open_payload(
    crypt: &MsgCrypt,
    signed: &SignedQuery,
    encrypt: &str,
    now_ms: i64,
) -> Result<String, WecomError> {
    crypt
        .verify(
            &signed.msg_signature,
            &signed.timestamp,
            &signed.nonce,
            encrypt,
        )
        .map_err(WecomError::from)?;
    check_window(&signed.timestamp, now_ms).map_err(WecomError::Stale)?;
    Ok(crypt.decrypt(encrypt)?)
}

/// Drops a leading `@Name` mention (WeCom puts the robot's name first in group messages,
/// followed by a space or U+2005) so the command word comes first.
pub fn strip_mention(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix('@') {
        Some(rest) => match rest.split_once(char::is_whitespace) {
            Some((_, after)) => after.trim_start().to_string(),
            None => String::new(),
        },
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::inbound::wx::query_params;

    const DOC_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn doc_crypt() -> MsgCrypt {
        match MsgCrypt::new("QDG6eK", DOC_KEY, "wx5823bf96d3bd56c7") {
            Ok(crypt) => crypt,
            Err(error) => panic!("{error}"),
        }
    }

    /// Vector wecom-01 as WeCom sends it: every value percent-encoded in the query.
    #[test]
    fn url_verification_answers_the_official_sample() {
        let query = "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589\
            &nonce=263014780&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp\
            %2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D";
        let params = query_params(Some(query));
        assert_eq!(
            verify_url(&doc_crypt(), &params).as_deref(),
            Ok("1616140317555161061")
        );
        let forged = query.replace("5c45ff", "5c45fe");
        assert_eq!(
            verify_url(&doc_crypt(), &query_params(Some(&forged))),
            Err(WecomError::Auth(CryptoError::Signature))
        );
        let missing = query_params(Some("msg_signature=1&timestamp=2&nonce=3"));
        assert_eq!(
            verify_url(&doc_crypt(), &missing),
            Err(WecomError::MissingParam("echostr"))
        );
    }

    #[test]
    fn payload_is_verified_before_the_window_and_the_window_before_decryption() {
        let crypt = doc_crypt();
        let encrypt = crypt.encrypt_with_random("hi", b"0123456789abcdef");
        let signed = SignedQuery {
            msg_signature: crypt.signature("1700000000", "7", &encrypt),
            timestamp: "1700000000".to_string(),
            nonce: "7".to_string(),
        };
        let now_ms = 1_700_000_010_000;
        assert_eq!(
            open_payload(&crypt, &signed, &encrypt, now_ms).as_deref(),
            Ok("hi")
        );
        assert_eq!(
            open_payload(&crypt, &signed, &encrypt, now_ms + 3_600_000),
            Err(WecomError::Stale(WindowError::Outside(-3610)))
        );
        let forged = SignedQuery {
            nonce: "8".to_string(),
            ..signed.clone()
        };
        assert_eq!(
            open_payload(&crypt, &forged, &encrypt, now_ms + 3_600_000),
            Err(WecomError::Auth(CryptoError::Signature))
        );
        // A correctly signed payload that is not ours to decrypt is a 400, not a 401.
        let junk = "AAAA";
        let signed_junk = SignedQuery {
            msg_signature: crypt.signature("1700000000", "7", junk),
            ..signed
        };
        assert!(matches!(
            open_payload(&crypt, &signed_junk, junk, now_ms),
            Err(WecomError::Malformed(_))
        ));
    }

    #[test]
    fn the_leading_mention_is_stripped_once() {
        assert_eq!(
            strip_mention("@RobotA /campaign status"),
            "/campaign status"
        );
        assert_eq!(strip_mention("@RobotA\u{2005}/whoami"), "/whoami");
        assert_eq!(strip_mention("  /help @RobotA "), "/help @RobotA");
        assert_eq!(strip_mention("@RobotA"), "");
        assert_eq!(strip_mention("@机器人 帮助"), "帮助");
    }

    proptest! {
        #[test]
        fn url_verification_never_panics(query in ".{0,300}") {
            let _ = verify_url(&doc_crypt(), &query_params(Some(&query)));
        }

        #[test]
        fn strip_mention_never_panics(text in "\\PC{0,80}") {
            let _ = strip_mention(&text);
        }
    }
}

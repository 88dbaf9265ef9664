//! Who is calling the admin API: the [`Caller`] extractor checks `Authorization: Bearer`
//! against `QUNFA_ADMIN_TOKEN` and the hashed `[[api_token]]` entries of the rules, and
//! [`Caller::require`] checks the role an endpoint needs.
//!
//! Tokens are compared as SHA-256 digests in constant time, against every configured token,
//! so neither timing nor early exit tells an attacker how close a guess was. A token is
//! never logged; the caller's token *name* is recorded on the request span.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::rules::Role;

/// The authenticated caller of an admin API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `admin-token` for `QUNFA_ADMIN_TOKEN`, else the `[[api_token]]` name.
    pub name: String,
    pub role: Role,
}

/// The name a `QUNFA_ADMIN_TOKEN` caller goes by in logs and audits.
pub const ADMIN_TOKEN_NAME: &str = "admin-token";

impl Caller {
    /// `Ok` when the caller's role includes `required`; otherwise 403 naming the role needed.
    pub fn require(&self, required: Role) -> Result<(), ApiError> {
        if self.role.allows(required) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {required} role; token `{}` has the {} role",
                self.name, self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let live = state.live();
        let caller = authenticate(
            token.as_bytes(),
            state.admin_token.as_deref().map(|t| t.expose_secret()),
            &live.rules.api_tokens,
        )
        .ok_or_else(|| {
            tracing::warn!("admin API request with an unknown bearer token");
            ApiError::unauthorized(
                "the bearer token is not valid; use QUNFA_ADMIN_TOKEN or a token listed (as its SHA-256) in an [[api_token]] rule",
            )
        })?;
        tracing::Span::current().record("caller", caller.name.as_str());
        Ok(caller)
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let missing = || ApiError::unauthorized("this endpoint needs `Authorization: Bearer <token>`");
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not readable text"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized(
            "only the Bearer scheme is accepted: `Authorization: Bearer <token>`",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// Finds who `presented` belongs to. Every configured digest is compared, whatever the
/// outcome, so the time taken does not depend on which entry (if any) matches.
pub fn authenticate(
    presented: &[u8],
    admin_token: Option<&str>,
    api_tokens: &[crate::rules::ApiToken],
) -> Option<Caller> {
    let digest: [u8; 32] = Sha256::digest(presented).into();
    let admin_hit = admin_token.is_some_and(|admin| {
        let admin_digest: [u8; 32] = Sha256::digest(admin.as_bytes()).into();
        bool::from(digest.ct_eq(&admin_digest))
    });
    let mut matched = None;
    for token in api_tokens {
        let hit = bool::from(digest.ct_eq(&token.sha256));
        if hit && matched.is_none() {
            matched = Some(token);
        }
    }
    if admin_hit {
        return Some(Caller {
            name: ADMIN_TOKEN_NAME.to_string(),
            role: Role::Admin,
        });
    }
    matched.map(|token| Caller {
        name: token.name.clone(),
        role: token.role,
    })
}

/// The `/api/v1/whoami` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `admin-token` or the `[[api_token]]` name.
    #[schema(example = "ci-bot")]
    pub name: String,
    /// viewer, operator, approver or admin.
    #[schema(example = "operator")]
    pub role: String,
}

/// Who the presented bearer token belongs to, and its role.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is valid", body = WhoAmI),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
    )
)]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ApiToken;

    fn token(name: &str, role: Role, secret: &str) -> ApiToken {
        ApiToken {
            name: name.to_string(),
            role,
            sha256: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    #[test]
    fn finds_the_token_by_its_digest() {
        let tokens = [
            token("a", Role::Viewer, "secret-a"),
            token("b", Role::Operator, "secret-b"),
        ];
        let caller = authenticate(b"secret-b", None, &tokens);
        assert_eq!(
            caller,
            Some(Caller {
                name: "b".into(),
                role: Role::Operator
            })
        );
        assert_eq!(authenticate(b"secret-c", None, &tokens), None);
        assert_eq!(authenticate(b"", None, &tokens), None);
    }

    #[test]
    fn admin_token_wins_and_absent_admin_token_matches_nothing() {
        let caller = authenticate(b"root", Some("root"), &[]);
        assert_eq!(caller.map(|c| c.role), Some(Role::Admin));
        assert_eq!(authenticate(b"root", None, &[]), None);
        assert_eq!(authenticate(b"roo", Some("root"), &[]), None);
    }

    /// Collects formatted log output in memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[tokio::test]
    async fn logs_name_the_caller_and_never_the_token() {
        use crate::http::testing::{fixture, request, rules_with_tokens, send};
        let rules = rules_with_tokens(&[("dashboard", Role::Viewer, "viewer-secret-4711")]);
        let fx = fixture(rules).await;
        let app = crate::http::router(fx.state, axum::Router::new());
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(captured.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        for token in ["viewer-secret-4711", "wrong-secret-4712"] {
            let bearer = format!("Bearer {token}");
            let headers = [("authorization", bearer.as_str())];
            send(
                &app,
                request("GET", "/api/v1/whoami", &headers, axum::body::Body::empty()),
            )
            .await;
        }
        let logs = captured
            .0
            .lock()
            .map(|out| String::from_utf8_lossy(&out).into_owned())
            .unwrap_or_default();
        assert!(logs.contains(r#""caller":"dashboard""#), "{logs}");
        assert!(logs.contains("unknown bearer token"), "{logs}");
        assert!(!logs.contains("4711") && !logs.contains("4712"), "{logs}");
    }

    fn parts_with_authorization(value: &[u8]) -> Option<Parts> {
        let value = axum::http::HeaderValue::from_bytes(value).ok()?;
        let request = axum::http::Request::builder()
            .header(AUTHORIZATION, value)
            .body(())
            .ok()?;
        Some(request.into_parts().0)
    }

    proptest::proptest! {
        #[test]
        fn any_authorization_header_parses_without_panicking(value in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            if let Some(parts) = parts_with_authorization(&value)
                && let Ok(token) = bearer_token(&parts)
            {
                proptest::prop_assert!(!token.is_empty());
                proptest::prop_assert!(!token.starts_with(' ') && !token.ends_with(' '));
            }
        }

        #[test]
        fn bearer_tokens_round_trip(scheme in "(?i:bearer)", token in "[!-~]{1,64}") {
            let header = format!("{scheme} {token}");
            let parts = parts_with_authorization(header.as_bytes());
            let parsed = parts.as_ref().map(bearer_token);
            proptest::prop_assert_eq!(parsed, Some(Ok(token.as_str())));
        }
    }

    #[test]
    fn require_names_the_missing_role() {
        let viewer = Caller {
            name: "dash".into(),
            role: Role::Viewer,
        };
        assert!(viewer.require(Role::Viewer).is_ok());
        let error = viewer.require(Role::Operator).err();
        let error = error
            .as_ref()
            .map(|e| (e.status.as_u16(), e.message.contains("operator")));
        assert_eq!(error, Some((403, true)));
    }
}

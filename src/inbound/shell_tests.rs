//! The shell endpoint through the real router, and the token file on a real filesystem.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use tower::ServiceExt;

use super::*;
use crate::bot::test_support;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn state(db: crate::db::Db, disabled_inbound: Vec<(String, String)>) -> AppState {
    test_support::app_state(db, TOKEN, disabled_inbound)
}

struct Call {
    account: &'static str,
    peer: Option<&'static str>,
    authorization: Option<String>,
    body: String,
}

impl Call {
    fn new(body: Value) -> Self {
        Self {
            account: "shell",
            peer: Some("127.0.0.1:50000"),
            authorization: Some(format!("Bearer {TOKEN}")),
            body: body.to_string(),
        }
    }
}

async fn send(state: AppState, call: Call) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("/webhooks/{}", call.account))
        .header(CONTENT_TYPE, "application/json");
    if let Some(authorization) = call.authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let mut request = request.body(Body::from(call.body)).unwrap();
    if let Some(peer) = call.peer {
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    let response = super::super::routes()
        .with_state(state)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_local_caller_with_the_token_gets_the_bots_replies() {
    let (_dir, db) = test_support::db().await;
    let body = json!({"user": "admin", "text": "/whoami", "user_name": "Ada"});
    let (status, answer) = send(state(db.clone(), vec![]), Call::new(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let text = answer["replies"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("platform: shell\nuser id: admin\nname: Ada"),
        "{text}"
    );
    assert!(text.contains("role: admin"), "{text}");

    db.grouped().flush().await.unwrap();
    let audit = crate::bot::recent_audit(&db, 1).await.unwrap();
    assert_eq!(audit[0].chat, CONSOLE_CHAT);
    assert_eq!(audit[0].sender, "admin");
}

#[tokio::test]
async fn ipv6_loopback_is_local_too_and_chatter_gets_an_empty_list() {
    let (_dir, db) = test_support::db().await;
    let mut call = Call::new(json!({"user": "local", "text": "hello"}));
    call.peer = Some("[::1]:50000");
    let (status, answer) = send(state(db, vec![]), call).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"replies": []}));
}

#[tokio::test]
async fn a_remote_peer_is_refused_even_with_the_token() {
    let (_dir, db) = test_support::db().await;
    for peer in [Some("192.168.1.20:50000"), Some("[2001:db8::1]:443"), None] {
        let mut call = Call::new(json!({"user": "admin", "text": "/whoami"}));
        call.peer = peer;
        let (status, answer) = send(state(db.clone(), vec![]), call).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{peer:?}");
        assert_eq!(error_code(&answer), "not_loopback");
    }
    db.grouped().flush().await.unwrap();
    assert!(crate::bot::recent_audit(&db, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_unauthorized() {
    let (_dir, db) = test_support::db().await;
    let wrong_tokens = [
        None,
        Some(format!("Bearer {}", TOKEN.replace('0', "1"))),
        Some(format!("Bearer {}", &TOKEN[..63])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ];
    for authorization in wrong_tokens {
        let mut call = Call::new(json!({"user": "admin", "text": "/whoami"}));
        call.authorization = authorization.clone();
        let (status, answer) = send(state(db.clone(), vec![]), call).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(error_code(&answer), "bad_token");
    }
    let mut lower_case = Call::new(json!({"user": "admin", "text": "/whoami"}));
    lower_case.authorization = Some(format!("bearer {TOKEN}"));
    assert_eq!(send(state(db, vec![]), lower_case).await.0, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests_that_say_what_is_expected() {
    let (_dir, db) = test_support::db().await;
    let bodies = [
        "not json".to_string(),
        json!({"text": "/whoami"}).to_string(),
        json!({"user": "admin"}).to_string(),
        json!({"user": 7, "text": "/whoami"}).to_string(),
        json!({"user": "  ", "text": "/whoami"}).to_string(),
    ];
    for body in bodies {
        let mut call = Call::new(json!({}));
        call.body = body.clone();
        let (status, answer) = send(state(db.clone(), vec![]), call).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&answer), "malformed", "{body}");
    }
}

#[tokio::test]
async fn unknown_and_disabled_accounts_are_refused() {
    let (_dir, db) = test_support::db().await;
    let mut unknown = Call::new(json!({"user": "admin", "text": "/whoami"}));
    unknown.account = "nope";
    let (status, answer) = send(state(db.clone(), vec![]), unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&answer), "unknown_account");

    let reason = "environment variable `SHELL_SECRET` is not set".to_string();
    let disabled = state(db, vec![("shell".to_string(), reason)]);
    let call = Call::new(json!({"user": "admin", "text": "/whoami"}));
    let (status, answer) = send(disabled, call).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer,
        json!({"error": {"code": "account_disabled", "message": "account disabled"}})
    );
}

#[test]
fn token_file_sits_beside_a_sqlite_database_or_in_the_working_directory() {
    let sqlite = DatabaseUrl::parse("./data/qunfa.db").unwrap();
    assert_eq!(
        token_file_path(&sqlite),
        PathBuf::from("./data/qunfa.db.shell-token")
    );
    let postgres = DatabaseUrl::parse("postgres://u:p@db/qunfa").unwrap();
    assert_eq!(
        token_file_path(&postgres),
        PathBuf::from("./qunfa.shell-token")
    );
}

#[test]
fn the_token_file_is_private_atomic_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qunfa.db.shell-token");
    let first = write_token_file(&path, "http://127.0.0.1:8080", "shell").unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(first.expose_secret().len(), 64);
    assert!(first.expose_secret().bytes().all(|b| b.is_ascii_hexdigit()));

    let endpoint = read_token_file(&path).unwrap();
    assert_eq!(endpoint.url, "http://127.0.0.1:8080");
    assert_eq!(endpoint.account, "shell");
    assert_eq!(endpoint.token.expose_secret(), first.expose_secret());

    let second = write_token_file(&path, "http://127.0.0.1:9090", "console").unwrap();
    assert_ne!(second.expose_secret(), first.expose_secret());
    let endpoint = read_token_file(&path).unwrap();
    assert_eq!(endpoint.token.expose_secret(), second.expose_secret());
    assert_eq!(endpoint.account, "console");
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left behind");
}

#[test]
fn token_file_errors_say_what_to_do_without_quoting_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qunfa.db.shell-token");
    let missing = read_token_file(&path).unwrap_err().to_string();
    assert!(
        missing.contains("is `qunfa serve` running with the same --database?"),
        "{missing}"
    );

    fs::write(
        &path,
        r#"{"url": "http://x", "account": "shell", "token": 12345678}"#,
    )
    .unwrap();
    let damaged = read_token_file(&path).unwrap_err().to_string();
    assert!(damaged.contains("restart `qunfa serve`"), "{damaged}");
    assert!(!damaged.contains("12345678"), "{damaged}");

    let unwritable = dir.path().join("missing-dir").join("token");
    assert!(write_token_file(&unwritable, "http://x", "shell").is_err());
}

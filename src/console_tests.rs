//! The console against a real server on a loopback port: the whole tracer bullet from a
//! typed line to the bot's reply.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use super::*;
use crate::bot::test_support;
use crate::inbound::write_token_file;

struct Server {
    _dir: tempfile::TempDir,
    token_file: PathBuf,
    db: crate::db::Db,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the webhook routes on port 0, with a token file written for `account`.
async fn serve(account: &str) -> Server {
    let (dir, db) = test_support::db().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token_file = dir.path().join("t.db.shell-token");
    let token = write_token_file(&token_file, &url, account).unwrap();
    let state = test_support::app_state(db.clone(), token.expose_secret(), vec![]);
    let app = crate::inbound::routes()
        .with_state(state)
        .into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server {
        _dir: dir,
        token_file,
        db,
        url,
        task,
    }
}

fn session(token_file: &Path, user: &str) -> Session {
    Session::open(ConsoleOptions {
        token_file: token_file.to_path_buf(),
        user: user.to_string(),
    })
    .unwrap()
}

async fn run_script(session: &mut Session, script: &str) -> (anyhow::Result<()>, String) {
    let mut out = Vec::new();
    let result = scripted(session, script.as_bytes(), &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn piped_lines_are_answered_until_exit() {
    let server = serve("shell").await;
    let mut console = session(&server.token_file, "admin");
    let script = "/whoami\n\nhello\n帮助 whoami\nexit\n/help\n";
    let (result, out) = run_script(&mut console, script).await;
    result.unwrap();
    assert!(
        out.starts_with("platform: shell\nuser id: admin\naccount: shell\nrole: admin\n"),
        "{out}"
    );
    assert!(out.contains("所需角色：所有人"), "{out}");
    assert!(
        !out.contains("Commands you may use"),
        "nothing after exit is sent: {out}"
    );
    server.db.grouped().flush().await.unwrap();
    let audited = crate::bot::recent_audit(&server.db, 10).await.unwrap();
    assert_eq!(audited.len(), 2);
}

#[tokio::test]
async fn a_trailing_backslash_continues_the_message_onto_the_next_line() {
    let server = serve("shell").await;
    let mut console = session(&server.token_file, "admin");
    let (result, out) = run_script(&mut console, "/whoami \\\nbody line\n").await;
    result.unwrap();
    // The body reaches the bot: /whoami takes no arguments but ignores the body.
    assert!(out.contains("role: admin"), "{out}");
}

#[tokio::test]
async fn a_restarted_server_token_is_picked_up_from_the_file() {
    let server = serve("shell").await;
    let stale = tempfile::tempdir().unwrap();
    let stale_file = stale.path().join("token");
    write_token_file(&stale_file, &server.url, "shell").unwrap();
    let mut console = session(&stale_file, "admin");
    // The file now holds what the server expects; the session still has the old token.
    std::fs::copy(&server.token_file, &stale_file).unwrap();
    let (result, out) = run_script(&mut console, "/whoami\n").await;
    result.unwrap();
    assert!(out.contains("role: admin"), "{out}");
}

#[tokio::test]
async fn a_token_that_stays_wrong_stops_a_script_with_advice() {
    let server = serve("shell").await;
    let other = tempfile::tempdir().unwrap();
    let other_file = other.path().join("token");
    write_token_file(&other_file, &server.url, "shell").unwrap();
    let mut console = session(&other_file, "admin");
    let (result, out) = run_script(&mut console, "/whoami\n/help\n").await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("same --database"), "{error}");
    assert!(out.is_empty(), "{out}");
}

#[tokio::test]
async fn an_unknown_account_says_how_to_configure_one() {
    let server = serve("nope").await;
    let mut console = session(&server.token_file, "admin");
    let (result, _) = run_script(&mut console, "/whoami\n").await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("no inbound account `nope`"), "{error}");
    assert!(error.contains("platform = \"shell\""), "{error}");
}

#[tokio::test]
async fn a_server_that_is_not_running_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let token_file = dir.path().join("token");
    write_token_file(&token_file, &url, "shell").unwrap();
    let mut console = session(&token_file, "admin");
    let (result, _) = run_script(&mut console, "/whoami\n").await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("is `qunfa serve` running?"), "{error}");
}

#[test]
fn a_missing_token_file_is_reported_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let options = ConsoleOptions {
        token_file: dir.path().join("absent"),
        user: "local".to_string(),
    };
    let error = Session::open(options).err().expect("no file, no session");
    assert!(error.to_string().contains("no token file at"), "{error}");
}

#[test]
fn continuation_joins_lines_with_newlines() {
    let mut pending = String::new();
    assert_eq!(continue_message(&mut pending, "/campaign new x \\"), None);
    assert_eq!(continue_message(&mut pending, "line one\\\r"), None);
    assert_eq!(
        continue_message(&mut pending, "line two").as_deref(),
        Some("/campaign new x \nline one\nline two")
    );
    assert!(pending.is_empty());
}

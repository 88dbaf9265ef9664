//! The `shell` platform: the endpoint `qunfa shell` talks to, and the token file that
//! lets it. Two locks, both required: the peer must be on this machine (loopback), and
//! it must present the bearer token that `qunfa serve` wrote, readable only by its user,
//! beside the database. The address check alone would admit anyone reaching us through a
//! reverse proxy on the same host; the token alone would be one leaked file away from
//! remote chat commands.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::api::{Rejection, Verdict};
use super::{ChatEvent, ChatKind, Reply};
use crate::app::{AppState, Live};
use crate::bot::Bot;
use crate::db::DatabaseUrl;
use crate::rules::InboundAccount;

/// The console is one person typing; anything larger is a mistake or an attack.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The conversation id every console message carries.
pub const CONSOLE_CHAT: &str = "console";

/// What `qunfa shell` posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellMessage {
    pub user: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

/// What the endpoint answers: the bot's replies, possibly none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellAnswer {
    pub replies: Vec<Reply>,
}

pub(super) async fn receive(
    state: &AppState,
    live: &Live,
    account: &InboundAccount,
    request: Request,
) -> Result<Response, Rejection> {
    let (parts, body) = request.into_parts();
    if !peer_is_loopback(&parts) {
        return Err(Rejection::new(
            Verdict::RejectedSignature,
            StatusCode::FORBIDDEN,
            "not_loopback",
            "the shell endpoint only accepts connections from this machine; run `qunfa shell` on the server",
        ));
    }
    if !bearer_matches(&parts.headers, &state.shell_token) {
        return Err(Rejection::new(
            Verdict::RejectedSignature,
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "missing or wrong bearer token; use the token from the file `qunfa serve` writes beside its database",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Rejection::new(
                Verdict::Malformed,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let message: ShellMessage = serde_json::from_slice(&bytes).map_err(|error| {
        Rejection::new(
            Verdict::Malformed,
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("expected JSON {{\"user\": \"…\", \"text\": \"…\"}}: {error}"),
        )
    })?;
    if message.user.trim().is_empty() {
        return Err(Rejection::new(
            Verdict::Malformed,
            StatusCode::BAD_REQUEST,
            "malformed",
            "`user` must not be empty",
        ));
    }
    let event = ChatEvent {
        platform: account.platform.name().to_string(),
        account: account.id.clone(),
        chat: CONSOLE_CHAT.to_string(),
        chat_kind: ChatKind::Direct,
        sender: message.user,
        sender_name: message.user_name,
        text: message.text,
        message_id: None,
    };
    let replies = Bot::serving(state).handle(live, &event).await;
    Ok(Json(ShellAnswer { replies }).into_response())
}

/// Missing connection info counts as remote: fail closed if the server was started
/// without `into_make_service_with_connect_info`.
fn peer_is_loopback(parts: &Parts) -> bool {
    parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback())
}

fn bearer_matches(headers: &HeaderMap, expected: &SecretString) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(
            token
                .trim()
                .as_bytes()
                .ct_eq(expected.expose_secret().as_bytes()),
        )
}

/// Where `serve` writes, and `shell` reads, the token for a given database: beside a
/// SQLite file, or in the working directory for PostgreSQL.
pub fn token_file_path(database: &DatabaseUrl) -> PathBuf {
    match database {
        DatabaseUrl::Sqlite(path) => {
            let mut name = path.as_os_str().to_owned();
            name.push(".shell-token");
            PathBuf::from(name)
        }
        DatabaseUrl::Postgres(_) => PathBuf::from("./qunfa.shell-token"),
    }
}

/// The token file's JSON.
#[derive(Serialize, Deserialize)]
struct TokenFile {
    url: String,
    account: String,
    token: String,
}

/// Where a running `qunfa serve` takes console messages, read from its token file.
#[derive(Debug, Clone)]
pub struct ShellEndpoint {
    /// The server root, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The shell inbound account id: the `/webhooks/{account}` segment.
    pub account: String,
    pub token: SecretString,
}

/// Why the console cannot use the token file, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("no token file at {}: is `qunfa serve` running with the same --database?", .path.display())]
    Missing { path: PathBuf },
    #[error("cannot read the token file {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the token file {} is damaged ({reason}); restart `qunfa serve` to rewrite it", .path.display())]
    Malformed { path: PathBuf, reason: String },
}

/// Writes a fresh random token for the console and returns it. The file appears
/// atomically, already with mode 0600, so no other local user can read the token even
/// for a moment, and a reader never sees half a file.
pub fn write_token_file(
    path: &Path,
    server_url: &str,
    account_id: &str,
) -> io::Result<SecretString> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = hex::encode(secret);
    let contents = serde_json::to_vec_pretty(&TokenFile {
        url: server_url.to_string(),
        account: account_id.to_string(),
        token: token.clone(),
    })?;
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the token file path {} has no file name", path.display()),
        )
    })?;
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let temp = path.with_file_name(temp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        // Best effort: the temporary file holds the token and must not linger.
        let _ = fs::remove_file(&temp);
    }
    written?;
    Ok(SecretString::from(token))
}

/// Reads the token file that `qunfa serve` wrote.
pub fn read_token_file(path: &Path) -> Result<ShellEndpoint, TokenFileError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TokenFileError::Missing {
            path: path.to_path_buf(),
        },
        _ => TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let file: TokenFile = serde_json::from_slice(&bytes).map_err(|error| {
        // Describe the problem without serde's text, which can quote the token.
        let what = match error.classify() {
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            serde_json::error::Category::Eof => "it ends early",
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                "it is not JSON"
            }
        };
        TokenFileError::Malformed {
            path: path.to_path_buf(),
            reason: format!("{what}, line {} column {}", error.line(), error.column()),
        }
    })?;
    Ok(ShellEndpoint {
        url: file.url,
        account: file.account,
        token: SecretString::from(file.token),
    })
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;

//! `qunfa shell`: a local chat console. Reads the token file `qunfa serve` wrote, then
//! sends each line typed (or piped in) to the server's `shell` inbound account and prints
//! the bot's replies, exactly as a chat platform would see them.
//!
//! A line ending in `\` continues on the next line, so commands with a multi-line body
//! can be typed. `exit`, `quit` or Ctrl-D end the session.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::StatusCode;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::{mpsc, oneshot};

use crate::inbound::{Reply, ShellAnswer, ShellEndpoint, ShellMessage, read_token_file};

const PROMPT: &str = "qunfa> ";
const CONTINUATION_PROMPT: &str = "  ...> ";
/// Generous: a command may wait on the database, but a hung server should not hang the
/// console forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What `qunfa shell` was asked to do.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Usually [`crate::inbound::token_file_path`] of the `--database` in use.
    pub token_file: PathBuf,
    /// The user id the console speaks as; what `[[operator]] platform = "shell"` matches.
    pub user: String,
}

/// Runs the console until `exit`, Ctrl-D or the end of piped input. Interactive on a
/// terminal; otherwise each input line is one message and the first failure ends the
/// run with an error, so scripts notice.
pub async fn run(options: ConsoleOptions) -> anyhow::Result<()> {
    let mut session = Session::open(options)?;
    if std::io::stdin().is_terminal() {
        interactive(session).await
    } else {
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        scripted(&mut session, stdin, &mut std::io::stdout()).await
    }
}

struct Session {
    client: reqwest::Client,
    token_file: PathBuf,
    endpoint: ShellEndpoint,
    user: String,
}

enum Answer {
    Replies(Vec<Reply>),
    Unauthorized,
}

impl Session {
    fn open(options: ConsoleOptions) -> anyhow::Result<Self> {
        let endpoint = read_token_file(&options.token_file)?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("qunfa-shell/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            client,
            token_file: options.token_file,
            endpoint,
            user: options.user,
        })
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<Vec<Reply>> {
        if let Answer::Replies(replies) = self.post(text).await? {
            return Ok(replies);
        }
        // `serve` writes a new token each time it starts: pick it up once before giving up.
        self.endpoint = read_token_file(&self.token_file)?;
        match self.post(text).await? {
            Answer::Replies(replies) => Ok(replies),
            Answer::Unauthorized => bail!(
                "the server refused the token in {}: is `qunfa shell` using the same --database as `qunfa serve`?",
                self.token_file.display()
            ),
        }
    }

    async fn post(&self, text: &str) -> anyhow::Result<Answer> {
        let endpoint = &self.endpoint;
        let root = endpoint.url.trim_end_matches('/');
        let url = format!("{root}/webhooks/{}", endpoint.account);
        let message = ShellMessage {
            user: self.user.clone(),
            text: text.to_string(),
            user_name: None,
        };
        let response = self
            .client
            .post(&url)
            .bearer_auth(endpoint.token.expose_secret())
            .json(&message)
            .send()
            .await
            .map_err(|error| {
                anyhow!("cannot reach qunfa at {root} ({error}); is `qunfa serve` running?")
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Answer::Unauthorized);
        }
        if status.is_success() {
            let answer: ShellAnswer = response
                .json()
                .await
                .with_context(|| format!("the server at {root} sent an answer this console cannot read; are `qunfa shell` and `qunfa serve` the same version?"))?;
            return Ok(Answer::Replies(answer.replies));
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let detail = body["error"]["message"].as_str().unwrap_or("no details");
        let account = &endpoint.account;
        Err(match status {
            StatusCode::FORBIDDEN => anyhow!(
                "the server only takes the shell from its own machine: run `qunfa shell` where `qunfa serve` runs ({detail})"
            ),
            StatusCode::NOT_FOUND => anyhow!(
                "the server has no inbound account `{account}`: add an [[inbound]] with platform = \"shell\" to bot-rules, or restart `qunfa serve` to refresh {}",
                self.token_file.display()
            ),
            StatusCode::SERVICE_UNAVAILABLE => anyhow!(
                "the shell account `{account}` is disabled on the server; the `qunfa serve` log says why"
            ),
            _ => anyhow!("the server answered {status}: {detail}"),
        })
    }
}

fn is_exit(line: &str) -> bool {
    matches!(line, "exit" | "quit")
}

/// Joins `line` onto a message being continued; `None` while a trailing `\` asks for more.
fn continue_message(pending: &mut String, line: &str) -> Option<String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    match line.strip_suffix('\\') {
        Some(head) => {
            pending.push_str(head);
            pending.push('\n');
            None
        }
        None => {
            pending.push_str(line);
            Some(std::mem::take(pending))
        }
    }
}

fn print_replies(out: &mut impl Write, replies: &[Reply]) -> std::io::Result<()> {
    for (index, reply) in replies.iter().enumerate() {
        if index > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}", reply.text)?;
    }
    out.flush()
}

/// Piped input: one message per line (or per `\`-continued group).
async fn scripted(
    session: &mut Session,
    input: impl AsyncBufRead + Unpin,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut lines = input.lines();
    let mut pending = String::new();
    while let Some(line) = lines
        .next_line()
        .await
        .context("cannot read standard input")?
    {
        let Some(message) = continue_message(&mut pending, &line) else {
            continue;
        };
        let message = message.trim();
        if is_exit(message) {
            break;
        }
        if !message.is_empty() {
            let replies = session.send(message).await?;
            print_replies(out, &replies)?;
        }
    }
    Ok(())
}

/// A message typed at the prompt, and how to tell the prompt it may come back.
type Typed = (String, oneshot::Sender<()>);

async fn interactive(mut session: Session) -> anyhow::Result<()> {
    println!(
        "qunfa shell: speaking as `{}` to {}. Type /help; exit or Ctrl-D to leave.",
        session.user, session.endpoint.url
    );
    let (typed_tx, mut typed_rx) = mpsc::channel::<Typed>(1);
    // rustyline blocks its thread while waiting for keys.
    let editor = tokio::task::spawn_blocking(move || read_typed(typed_tx));
    while let Some((message, done)) = typed_rx.recv().await {
        let message = message.trim();
        if is_exit(message) {
            break; // dropping `done` ends the editor thread
        }
        if !message.is_empty() {
            match session.send(message).await {
                Ok(replies) if replies.is_empty() => {
                    println!("(no reply: that is not a command; try /help)");
                }
                Ok(replies) => print_replies(&mut std::io::stdout(), &replies)?,
                Err(error) => eprintln!("error: {error:#}"),
            }
        }
        let _ = done.send(());
    }
    drop(typed_rx);
    editor
        .await
        .context("the line editor stopped unexpectedly")?
}

fn read_typed(typed: mpsc::Sender<Typed>) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new().context("cannot start the line editor")?;
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            PROMPT
        } else {
            CONTINUATION_PROMPT
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C drops what was typed, as in a shell, and keeps the session.
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => return Ok(()),
            Err(error) => return Err(error).context("cannot read from the terminal"),
        };
        let Some(message) = continue_message(&mut pending, &line) else {
            continue;
        };
        if !message.trim().is_empty() {
            // History is in memory only: commands can carry customer data.
            let _ = editor.add_history_entry(message.as_str());
        }
        let (done_tx, done_rx) = oneshot::channel();
        if typed.blocking_send((message, done_tx)).is_err() || done_rx.blocking_recv().is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;

//! E-mail through an SMTP submission server (lettre's async transport over tokio with
//! rustls): STARTTLS on 587, implicit TLS on 465, or no TLS for a relay on the same host.
//! Each message is `multipart/alternative` (plain text, then HTML) when it has HTML, and
//! its `Message-ID` derives from the job's idempotency key, so a resend after a crash
//! carries the same id and is recognisable in the mail log and by the recipient's client.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::render::{fit_chars, plain_text, title_or_first_line};
use super::{AddressKind, Audience, Channel, ContentError, Message, SendContext, SendResult};
use super::{Verdict, truncate};
use crate::clock::SharedClock;
use crate::rules::SmtpTls;

/// RFC 5322's line limit; longer subjects are refused rather than cut.
const SUBJECT_LIMIT_CHARS: usize = 998;
/// A subject derived from the text stays short enough for a mail list view.
const DERIVED_SUBJECT_CHARS: usize = 120;
/// A server that says 421 or "too many" is shedding load: give it a minute.
const BUSY_SERVER_WAIT: Duration = Duration::from_secs(60);

/// The account settings from the rules.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub from: String,
}

pub struct SmtpChannel {
    settings: SmtpSettings,
    from: Mailbox,
    builder: AsyncSmtpTransportBuilder,
    /// Built on the first send: lettre's connection pool starts a cleanup task on the
    /// tokio runtime when it is created, and channels are also built outside one
    /// (`check-rules`, tests).
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    /// For the whole conversation: lettre's own timeout applies to each command, and a
    /// send is a dozen of them.
    timeout: Duration,
    clock: SharedClock,
}

impl Drop for SmtpChannel {
    fn drop(&mut self) {
        // The pool also spawns its shutdown when dropped, which panics outside a runtime
        // (the end of the process); there is nothing left to close politely then.
        if tokio::runtime::Handle::try_current().is_err()
            && let Some(transport) = self.transport.take()
        {
            std::mem::forget(transport);
        }
    }
}

impl std::fmt::Debug for SmtpChannel {
    // The transport holds the password; only the settings are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SmtpChannel {
    pub fn new(
        settings: SmtpSettings,
        password: Option<SecretString>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|error| format!("`from` is not an e-mail address: {error}"))?;
        let builder = match settings.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(
                &settings.host,
            )
            .map_err(|error| format!("cannot set up STARTTLS to `{}`: {error}", settings.host))?,
            SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|error| format!("cannot set up TLS to `{}`: {error}", settings.host))?,
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
        };
        let mut builder = builder.port(settings.port).timeout(Some(timeout));
        if let (Some(username), Some(password)) = (&settings.username, password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Self {
            builder,
            transport: OnceLock::new(),
            timeout,
            settings,
            from,
            clock,
        })
    }

    /// `<qunfa.KEY@sender-domain>`: the key itself when it is valid in a Message-ID, so
    /// operators can search mail logs for it, else its SHA-256.
    fn message_id(&self, idempotency_key: &str) -> String {
        let safe = !idempotency_key.is_empty()
            && idempotency_key.len() <= 128
            && !idempotency_key.starts_with('.')
            && !idempotency_key.ends_with('.')
            && !idempotency_key.contains("..")
            && idempotency_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+=".contains(&b));
        let local = if safe {
            idempotency_key.to_string()
        } else {
            hex::encode(&Sha256::digest(idempotency_key.as_bytes())[..16])
        };
        format!("<qunfa.{local}@{}>", self.from.email.domain())
    }

    fn build(
        &self,
        ctx: &SendContext<'_>,
        to: Mailbox,
        message: &Message,
    ) -> Result<lettre::Message, String> {
        let sent_at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(self.clock.now_ms()).unwrap_or(0));
        let builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject(message))
            .message_id(Some(self.message_id(ctx.idempotency_key)))
            .date(sent_at);
        let plain = plain_part(message);
        let built = match message
            .html
            .as_deref()
            .filter(|html| !html.trim().is_empty())
        {
            Some(html) => {
                builder.multipart(MultiPart::alternative_plain_html(plain, html.to_string()))
            }
            None => builder.singlepart(SinglePart::plain(plain)),
        };
        built.map_err(|error| error.to_string())
    }
}

/// The subject: the message's own, else its title, else the first line of its text.
pub(super) fn subject(message: &Message) -> String {
    match message
        .subject
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(subject) => subject.to_string(),
        None => title_or_first_line(message, DERIVED_SUBJECT_CHARS),
    }
}

/// The plain-text part: the text as plain text, or, for an HTML-only message, the HTML
/// with its markup removed.
pub(super) fn plain_part(message: &Message) -> String {
    let plain = plain_text(message);
    if !plain.trim().is_empty() {
        return plain;
    }
    message
        .html
        .as_deref()
        .map(html_to_text)
        .unwrap_or_default()
}

/// Checks shared by both e-mail channels.
pub(super) fn check_email(message: &Message) -> Result<(), ContentError> {
    if plain_part(message).trim().is_empty() {
        return Err(ContentError::new("the e-mail has neither text nor HTML"));
    }
    if let Some(subject) = &message.subject {
        fit_chars("the subject", subject, SUBJECT_LIMIT_CHARS)?;
    }
    if subject(message).trim().is_empty() {
        return Err(ContentError::new(
            "the e-mail has no subject, title or text to take one from",
        ));
    }
    Ok(())
}

/// Readable text from HTML: tags dropped, block ends as line breaks, the common entities
/// decoded. Enough for the plain alternative of an HTML-only mail, not a renderer.
pub(super) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            rest = &rest[open..];
            break;
        };
        let tag = rest[open + 1..open + close]
            .trim_start_matches('/')
            .to_ascii_lowercase();
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        if matches!(
            name,
            "br" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
        ) {
            out.push('\n');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[async_trait::async_trait]
impl Channel for SmtpChannel {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::Email)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        check_email(message)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let to: Mailbox = match ctx.recipient.trim().parse() {
            Ok(to) => to,
            Err(error) => {
                return SendResult::new(
                    Verdict::RecipientInvalid,
                    None,
                    format!(
                        "`{}` is not an e-mail address: {error}",
                        truncate(ctx.recipient, 64)
                    ),
                );
            }
        };
        let email = match self.build(ctx, to, message) {
            Ok(email) => email,
            Err(error) => {
                return SendResult::new(
                    Verdict::ContentBlocked,
                    None,
                    format!("cannot build the e-mail: {error}"),
                );
            }
        };
        let message_id = self.message_id(ctx.idempotency_key);
        let transport = self.transport.get_or_init(|| self.builder.clone().build());
        let Ok(sent) = tokio::time::timeout(self.timeout, transport.send(email)).await else {
            return SendResult::new(
                Verdict::Retryable { after: None },
                None,
                format!("timed out after {:?}", self.timeout),
            );
        };
        match sent {
            Ok(response) => {
                let reply = response.message().collect::<Vec<_>>().join(" ");
                SendResult::new(
                    Verdict::Delivered,
                    Some(u16::from(response.code())),
                    format!("{} {reply}", response.code()),
                )
                .with_ref(message_id)
            }
            Err(error) => {
                let detail = error_detail(&error);
                match error.status() {
                    Some(code) => {
                        let code = u16::from(code);
                        SendResult::new(classify_reply(code, &detail), Some(code), detail)
                    }
                    // lettre's own refusals: no AUTH mechanism in common, STARTTLS not
                    // offered. The server's setup, not this message, is wrong.
                    None if error.is_client() => {
                        SendResult::new(Verdict::AccountDisabled, None, detail)
                    }
                    // Connection, DNS, TLS handshake, timeout: the mail may not have left.
                    None => SendResult::new(Verdict::Retryable { after: None }, None, detail),
                }
            }
        }
    }
}

/// The error and its causes; lettre's errors never contain the password.
fn error_detail(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// SMTP replies (RFC 5321 4.2, protocols.md 9.2): 4xx is transient, 5xx permanent; the
/// code says which party is at fault. The reply text is read only for throttling,
/// which servers announce with varying codes.
fn classify_reply(code: u16, text: &str) -> Verdict {
    let lower = text.to_ascii_lowercase();
    let throttled = [
        "rate limit",
        "rate-limit",
        "too many",
        "throttl",
        "slow down",
    ]
    .iter()
    .any(|word| lower.contains(word));
    match code {
        421 => Verdict::RateLimited {
            wait: BUSY_SERVER_WAIT,
        },
        400..=499 if throttled => Verdict::RateLimited {
            wait: BUSY_SERVER_WAIT,
        },
        // Greylisting (450/451), a full mailbox or spool (452), TLS briefly unavailable.
        400..=499 => Verdict::Retryable { after: None },
        // Authentication failed, required, too weak, or needs encryption.
        530 | 534 | 535 | 538 => Verdict::AccountDisabled,
        // No such mailbox, not local, bad address.
        550 | 551 | 553 => Verdict::RecipientInvalid,
        // Too big, or refused as spam / by policy.
        552 | 554 => Verdict::ContentBlocked,
        // Syntax errors and anything else permanent: this message as written.
        _ => Verdict::ContentBlocked,
    }
}

#[cfg(test)]
#[path = "smtp_tests.rs"]
mod tests;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::channels::Format;
use crate::clock::ManualClock;

const PASSWORD: &str = "s3cret-smtp-password";

/// What the test server saw: every command line, and each accepted message.
#[derive(Clone, Default)]
struct Received {
    commands: Arc<Mutex<Vec<String>>>,
    messages: Arc<Mutex<Vec<String>>>,
}

/// A tiny SMTP server: enough of RFC 5321 for lettre (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT,
/// DATA with dot-unstuffing, RSET, NOOP, QUIT), refusing some addresses the way real
/// servers do.
async fn smtp_server() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Received::default();
    let shared = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let received = shared.clone();
            tokio::spawn(async move {
                let _ = session(socket, received).await;
            });
        }
    });
    (port, received)
}

async fn session(socket: tokio::net::TcpStream, received: Received) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 mail.test ESMTP ready\r\n").await?;
    let mut recipient = String::new();
    while let Some(line) = lines.next_line().await? {
        received.commands.lock().unwrap().push(line.clone());
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-mail.test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SIZE 1000000".into()
        } else if upper.starts_with("AUTH PLAIN") {
            let given = line.get(11..).unwrap_or_default().trim();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(given)
                .unwrap_or_default();
            if decoded == format!("\0mailer\0{PASSWORD}").as_bytes() {
                "235 2.7.0 Authentication successful".into()
            } else {
                "535 5.7.8 Authentication credentials invalid".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            recipient.clear();
            "250 2.1.0 Ok".into()
        } else if upper.starts_with("RCPT TO:") {
            recipient = line[8..].trim().to_string();
            match recipient.as_str() {
                "<unknown@example.com>" => {
                    "550 5.1.1 <unknown@example.com>: Recipient address rejected: User unknown"
                        .into()
                }
                "<busy@example.com>" => {
                    "421 4.7.0 Too many messages from you, try again later".into()
                }
                "<greylisted@example.com>" => "450 4.2.0 Greylisted, please retry".into(),
                _ => "250 2.1.5 Ok".into(),
            }
        } else if upper == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = Vec::new();
            while let Some(data_line) = lines.next_line().await? {
                if data_line == "." {
                    break;
                }
                let unstuffed = data_line
                    .strip_prefix('.')
                    .filter(|_| data_line.starts_with(".."))
                    .unwrap_or(&data_line);
                data.push(unstuffed.to_string());
            }
            let data = data.join("\r\n");
            if recipient == "<spam@example.com>" {
                "554 5.7.1 Message rejected as spam".into()
            } else {
                received.messages.lock().unwrap().push(data);
                "250 2.0.0 Ok: queued as 4ABC123".into()
            }
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Error: command not recognized".into()
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

fn channel(port: u16, password: Option<&str>) -> SmtpChannel {
    SmtpChannel::new(
        SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: password.map(|_| "mailer".to_string()),
            from: "Campaigns <bot@example.com>".into(),
        },
        password.map(SecretString::from),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    )
    .unwrap()
}

fn ctx<'a>(recipient: &'a str, key: &'a str) -> SendContext<'a> {
    SendContext {
        job_id: 7,
        idempotency_key: key,
        attempt: 1,
        recipient,
    }
}

fn header<'m>(mime: &'m str, name: &str) -> Option<&'m str> {
    mime.lines()
        .find(|line| {
            line.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|line| line[name.len() + 1..].trim())
}

#[tokio::test]
async fn a_mail_goes_out_as_multipart_alternative_with_a_stable_message_id() {
    let (port, received) = smtp_server().await;
    let channel = channel(port, Some(PASSWORD));
    let message = Message {
        text: "Sale starts at 8pm.\n.A line that starts with a dot".into(),
        subject: Some("Flash sale".into()),
        html: Some("<p>Sale starts at <b>8pm</b>.</p>".into()),
        ..Message::default()
    };
    let result = channel
        .send(&ctx("ops@example.com", "cmp-42.u-7.step-1"), &message)
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    assert_eq!(result.status, Some(250));
    assert_eq!(
        result.provider_ref.as_deref(),
        Some("<qunfa.cmp-42.u-7.step-1@example.com>")
    );

    let commands = received.commands.lock().unwrap().clone();
    assert!(
        commands.iter().any(|c| c.starts_with("AUTH PLAIN")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c == "MAIL FROM:<bot@example.com>"),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c == "RCPT TO:<ops@example.com>"),
        "{commands:?}"
    );
    let mime = received.messages.lock().unwrap()[0].clone();
    assert_eq!(header(&mime, "Subject"), Some("Flash sale"));
    assert_eq!(
        header(&mime, "Message-ID"),
        Some("<qunfa.cmp-42.u-7.step-1@example.com>")
    );
    assert_eq!(header(&mime, "To"), Some("ops@example.com"));
    assert_eq!(header(&mime, "From"), Some("Campaigns <bot@example.com>"));
    assert_eq!(
        header(&mime, "Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    assert!(
        header(&mime, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{mime}"
    );
    let plain_at = mime.find("Content-Type: text/plain").expect("a plain part");
    let html_at = mime.find("Content-Type: text/html").expect("an html part");
    assert!(plain_at < html_at, "plain text must come first: {mime}");
    assert!(mime.contains("Sale starts at 8pm."));
    // The dot-stuffed line arrives intact once the server unstuffs it.
    assert!(
        mime.contains("\r\n.A line that starts with a dot"),
        "{mime}"
    );
    assert!(mime.contains("<p>Sale starts at <b>8pm</b>.</p>"));

    // A resend of the same job carries the same Message-ID.
    let again = channel
        .send(&ctx("ops@example.com", "cmp-42.u-7.step-1"), &message)
        .await;
    assert_eq!(again.provider_ref, result.provider_ref);
    let second = received.messages.lock().unwrap()[1].clone();
    assert_eq!(header(&second, "Message-ID"), header(&mime, "Message-ID"));
}

#[tokio::test]
async fn without_html_the_mail_is_plain_text_and_the_subject_comes_from_the_text() {
    let (port, received) = smtp_server().await;
    let channel = channel(port, None);
    let message = Message {
        format: Format::Markdown,
        text: "## Weekly report\nAll **green**".into(),
        ..Message::default()
    };
    let result = channel
        .send(
            &ctx("ops@example.com", "key with spaces/and:colons"),
            &message,
        )
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    let commands = received.commands.lock().unwrap().clone();
    assert!(
        !commands.iter().any(|c| c.starts_with("AUTH")),
        "no credentials, no AUTH"
    );
    let mime = received.messages.lock().unwrap()[0].clone();
    assert_eq!(header(&mime, "Subject"), Some("Weekly report"));
    assert!(
        header(&mime, "Content-Type")
            .unwrap()
            .starts_with("text/plain"),
        "{mime}"
    );
    assert!(mime.contains("All green"), "{mime}");
    // A key that cannot appear in a Message-ID is hashed, still the same for each resend.
    let id = header(&mime, "Message-ID").unwrap();
    assert!(
        id.starts_with("<qunfa.") && id.ends_with("@example.com>") && !id.contains(' '),
        "{id}"
    );
    assert_eq!(Some(id), result.provider_ref.as_deref());
}

#[tokio::test]
async fn a_chinese_subject_is_encoded_and_an_html_only_mail_gets_a_plain_part() {
    let (port, received) = smtp_server().await;
    let message = Message {
        subject: Some("双十一 大促".into()),
        html: Some("<h1>双十一</h1><p>全场&nbsp;5 折 &amp; 包邮</p>".into()),
        ..Message::default()
    };
    let result = channel(port, None)
        .send(&ctx("ops@example.com", "k"), &message)
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    let mime = received.messages.lock().unwrap()[0].clone();
    let subject = header(&mime, "Subject").unwrap();
    assert!(
        subject.starts_with("=?utf-8?"),
        "RFC 2047 encoded: {subject}"
    );
    assert!(mime.contains("Content-Type: text/plain"), "{mime}");
    assert!(mime.contains("Content-Type: text/html"), "{mime}");
}

#[tokio::test]
async fn smtp_refusals_are_classified() {
    let (port, received) = smtp_server().await;
    let channel = channel(port, Some(PASSWORD));
    let message = Message::text("hello");
    let cases = [
        ("unknown@example.com", Verdict::RecipientInvalid, Some(550)),
        (
            "busy@example.com",
            Verdict::RateLimited {
                wait: BUSY_SERVER_WAIT,
            },
            Some(421),
        ),
        (
            "greylisted@example.com",
            Verdict::Retryable { after: None },
            Some(450),
        ),
        ("spam@example.com", Verdict::ContentBlocked, Some(554)),
    ];
    for (to, expected, status) in cases {
        let result = channel.send(&ctx(to, "k"), &message).await;
        assert_eq!(result.verdict, expected, "{to}: {}", result.detail);
        assert_eq!(result.status, status, "{to}");
        assert_eq!(result.provider_ref, None);
    }
    let wrong = self::channel(port, Some("wrong password"));
    let refused = wrong.send(&ctx("ops@example.com", "k"), &message).await;
    assert_eq!(
        refused.verdict,
        Verdict::AccountDisabled,
        "{}",
        refused.detail
    );
    assert!(!refused.detail.contains("wrong password"));
    assert!(!format!("{wrong:?}").contains("wrong password"));

    let before = received.commands.lock().unwrap().len();
    let invalid = channel.send(&ctx("not an address", "k"), &message).await;
    assert_eq!(invalid.verdict, Verdict::RecipientInvalid);
    let empty = channel
        .send(&ctx("ops@example.com", "k"), &Message::text(" "))
        .await;
    assert_eq!(empty.verdict, Verdict::ContentBlocked);
    assert_eq!(
        received.commands.lock().unwrap().len(),
        before,
        "nothing was sent"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let result = channel(port, Some(PASSWORD))
        .send(&ctx("ops@example.com", "k"), &Message::text("x"))
        .await;
    assert!(
        matches!(result.verdict, Verdict::Retryable { .. }),
        "{}",
        result.detail
    );
    assert!(!result.detail.contains(PASSWORD));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds the connection without ever greeting.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let channel = SmtpChannel::new(
        SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            from: "bot@example.com".into(),
        },
        None,
        Duration::from_millis(100),
        Arc::new(ManualClock::new(0)),
    )
    .unwrap();
    let result = channel
        .send(&ctx("ops@example.com", "k"), &Message::text("x"))
        .await;
    assert!(
        matches!(result.verdict, Verdict::Retryable { .. }),
        "{}",
        result.detail
    );
}

#[test]
fn every_row_of_the_reply_table() {
    let rows: &[(u16, &str, Verdict)] = &[
        (
            421,
            "4.7.0 Try again later, closing connection",
            Verdict::RateLimited {
                wait: BUSY_SERVER_WAIT,
            },
        ),
        (450, "4.2.0 Greylisted", Verdict::Retryable { after: None }),
        (
            451,
            "4.7.0 Temporary rate limit exceeded",
            Verdict::RateLimited {
                wait: BUSY_SERVER_WAIT,
            },
        ),
        (
            451,
            "4.3.0 Local error in processing",
            Verdict::Retryable { after: None },
        ),
        (
            452,
            "4.5.3 Too many recipients",
            Verdict::RateLimited {
                wait: BUSY_SERVER_WAIT,
            },
        ),
        (
            452,
            "4.2.2 Mailbox full",
            Verdict::Retryable { after: None },
        ),
        (
            454,
            "4.7.0 TLS not available due to temporary reason",
            Verdict::Retryable { after: None },
        ),
        (
            535,
            "5.7.8 Authentication credentials invalid",
            Verdict::AccountDisabled,
        ),
        (
            530,
            "5.7.0 Authentication required",
            Verdict::AccountDisabled,
        ),
        (
            534,
            "5.7.9 Authentication mechanism is too weak",
            Verdict::AccountDisabled,
        ),
        (550, "5.1.1 User unknown", Verdict::RecipientInvalid),
        (551, "5.1.6 User not local", Verdict::RecipientInvalid),
        (
            553,
            "5.1.3 Bad destination mailbox address syntax",
            Verdict::RecipientInvalid,
        ),
        (
            552,
            "5.3.4 Message size exceeds fixed limit",
            Verdict::ContentBlocked,
        ),
        (
            554,
            "5.7.1 Message rejected as spam",
            Verdict::ContentBlocked,
        ),
        (501, "5.5.4 Syntax error", Verdict::ContentBlocked),
    ];
    for (code, text, expected) in rows {
        assert_eq!(classify_reply(*code, text), *expected, "{code} {text}");
    }
}

#[test]
fn html_becomes_readable_text() {
    assert_eq!(
        html_to_text("<h1>Title</h1><p>One &amp; two<br/>three</p><p>&lt;ok&gt;</p>"),
        "Title\nOne & two\nthree\n<ok>"
    );
    assert_eq!(html_to_text("a < b"), "a < b");
    assert_eq!(html_to_text(""), "");
}

#[test]
fn subjects_come_from_subject_then_title_then_first_line() {
    let mut message = Message::text("first line\nsecond");
    assert_eq!(subject(&message), "first line");
    message.title = Some("The title".into());
    assert_eq!(subject(&message), "The title");
    message.subject = Some(" The subject ".into());
    assert_eq!(subject(&message), "The subject");
    message.subject = Some("s".repeat(999));
    assert!(check_email(&message).is_err());
}

proptest! {
    #[test]
    fn checking_and_rendering_never_panic(text in "\\PC{0,200}", html in "\\PC{0,200}", key in "\\PC{0,40}") {
        let message = Message { text: text.clone(), html: Some(html.clone()), subject: Some(text.clone()), ..Message::default() };
        let _ = check_email(&message);
        let _ = html_to_text(&html);
        let _ = subject(&message);
        let channel = channel(9, None);
        let id = channel.message_id(&key);
        prop_assert!(id.starts_with("<qunfa.") && !id.contains(' ') && id.is_ascii());
        let _ = channel.build(&ctx("a@example.com", &key), "a@example.com".parse().unwrap(), &message);
    }
}

//! Rendering shared by the adapters: the plain-text and Markdown forms of a [`Message`],
//! the limit checks that turn "would be truncated" into an error before sending, and SMS
//! segment counting. Each adapter decides which form its provider gets and which limits
//! apply; these functions only do the arithmetic.

use super::{Format, Message};

/// Why a message cannot be sent through a channel as written. Shown to API callers (422)
/// and recorded as a content-blocked attempt; never a truncated send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContentError(pub String);

impl ContentError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Fails when `text` is longer than `limit` bytes in UTF-8 (the unit WeCom and DingTalk
/// count in).
pub fn fit_bytes(what: &str, text: &str, limit: usize) -> Result<(), ContentError> {
    if text.len() > limit {
        return Err(ContentError(format!(
            "{what} is {} bytes; at most {limit} fit",
            text.len()
        )));
    }
    Ok(())
}

/// Fails when `text` has more than `limit` characters (the unit Slack, Feishu and most
/// e-mail and SMS providers count in).
pub fn fit_chars(what: &str, text: &str, limit: usize) -> Result<(), ContentError> {
    let count = text.chars().count();
    if count > limit {
        return Err(ContentError(format!(
            "{what} is {count} characters; at most {limit} fit"
        )));
    }
    Ok(())
}

/// Fails when the message has no text to send at all.
pub fn require_text(message: &Message) -> Result<(), ContentError> {
    if message.text.trim().is_empty() && message.title.as_deref().is_none_or(str::is_empty) {
        return Err(ContentError::new("the message has no text"));
    }
    Ok(())
}

/// The message as plain text: Markdown markup removed, a card or link as its title, text,
/// buttons and URL on separate lines. For SMS, e-mail plain parts and providers without
/// rich formats.
pub fn plain_text(message: &Message) -> String {
    let body = match message.format {
        Format::Markdown => strip_markdown(&message.text),
        Format::Text | Format::Link | Format::Card => message.text.clone(),
    };
    let mut lines: Vec<String> = Vec::new();
    if matches!(message.format, Format::Link | Format::Card)
        && let Some(title) = message.title.as_deref().filter(|t| !t.is_empty())
    {
        lines.push(title.to_string());
    }
    if !body.is_empty() {
        lines.push(body);
    }
    for button in &message.buttons {
        lines.push(format!("{}: {}", button.text, button.url));
    }
    if let Some(url) = message.url.as_deref().filter(|u| !u.is_empty())
        && !lines.iter().any(|line| line.contains(url))
    {
        lines.push(url.to_string());
    }
    lines.join("\n")
}

/// The message as Markdown: text as written when it is Markdown, a link or card as a
/// heading, its text and links. Plain text is passed through unchanged (it is valid
/// Markdown in every provider's dialect bar a few characters, which stay literal).
pub fn markdown(message: &Message) -> String {
    let mut parts: Vec<String> = Vec::new();
    if matches!(message.format, Format::Link | Format::Card)
        && let Some(title) = message.title.as_deref().filter(|t| !t.is_empty())
    {
        parts.push(format!("**{title}**"));
    }
    if !message.text.is_empty() {
        parts.push(message.text.clone());
    }
    for button in &message.buttons {
        parts.push(format!("[{}]({})", button.text, button.url));
    }
    if let Some(url) = message.url.as_deref().filter(|u| !u.is_empty())
        && !parts.iter().any(|part| part.contains(url))
    {
        parts.push(format!("[{url}]({url})"));
    }
    parts.join("\n\n")
}

/// The title a provider that needs one gets: the title, else the first line of the
/// plain text, cut to `limit` characters.
pub fn title_or_first_line(message: &Message, limit: usize) -> String {
    let title = match message.title.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(title) => title.to_string(),
        None => plain_text(message)
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default()
            .to_string(),
    };
    title.chars().take(limit).collect()
}

/// Removes the Markdown markup providers would otherwise show literally: headings,
/// emphasis, inline code, quotes, and links (kept as `text (url)`).
pub fn strip_markdown(text: &str) -> String {
    text.lines()
        .map(strip_markdown_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn strip_markdown_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let mut rest = trimmed;
    let heading = rest.trim_start_matches('#');
    if heading.len() < rest.len() && (heading.starts_with(' ') || heading.is_empty()) {
        rest = heading.trim_start();
    }
    if let Some(quoted) = rest.strip_prefix('>') {
        rest = quoted.trim_start();
    }
    let mut out = String::with_capacity(rest.len());
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' | '_' | '`' | '~' => {
                // Emphasis and code markers; a lone one inside a word (snake_case) is
                // text, so only runs touching a word boundary are dropped.
                let run_end = (i..chars.len())
                    .find(|&j| chars[j] != c)
                    .unwrap_or(chars.len());
                let before = i.checked_sub(1).map(|j| chars[j]);
                let after = chars.get(run_end).copied();
                let inside_word = c == '_'
                    && before.is_some_and(char::is_alphanumeric)
                    && after.is_some_and(char::is_alphanumeric);
                if inside_word {
                    out.extend(&chars[i..run_end]);
                }
                i = run_end;
            }
            '!' if chars.get(i + 1) == Some(&'[') => i += 1,
            '[' => match link_at(&chars, i) {
                Some((label, url, end)) => {
                    if label == url || label.is_empty() {
                        out.push_str(&url);
                    } else {
                        out.push_str(&format!("{label} ({url})"));
                    }
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `[label](url)` starting at `start`: the label, the URL and the index after it.
fn link_at(chars: &[char], start: usize) -> Option<(String, String, usize)> {
    let close = (start + 1..chars.len()).find(|&j| chars[j] == ']')?;
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = (close + 2..chars.len()).find(|&j| chars[j] == ')')?;
    let label: String = chars[start + 1..close].iter().collect();
    let url: String = chars[close + 2..end].iter().collect();
    Some((strip_markdown_line(&label), url.trim().to_string(), end + 1))
}

/// How an SMS body is encoded and how many billed segments it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsSegments {
    /// GSM 03.38 (7-bit) when every character is in the basic set or its extension,
    /// UCS-2 otherwise (any Chinese character).
    pub gsm7: bool,
    /// Units: septets for GSM-7 (extension characters count two), UTF-16 code units for
    /// UCS-2.
    pub units: usize,
    pub segments: usize,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// Counts segments the way carriers bill them: 160 GSM-7 septets or 70 UCS-2 units in
/// one message, 153 / 67 per part once concatenated (the rest is the part header).
pub fn sms_segments(text: &str) -> SmsSegments {
    let gsm7 = text
        .chars()
        .all(|c| GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c));
    let (units, single, multi) = if gsm7 {
        let units = text
            .chars()
            .map(|c| if GSM7_EXTENSION.contains(c) { 2 } else { 1 })
            .sum();
        (units, 160, 153)
    } else {
        (text.encode_utf16().count(), 70, 67)
    };
    let segments = if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    SmsSegments {
        gsm7,
        units,
        segments,
    }
}

/// Fails when an SMS body would take more than `max_segments` segments.
pub fn fit_sms(text: &str, max_segments: usize) -> Result<SmsSegments, ContentError> {
    let counted = sms_segments(text);
    if counted.segments > max_segments {
        let encoding = if counted.gsm7 { "GSM-7" } else { "UCS-2" };
        return Err(ContentError(format!(
            "the SMS text needs {} segments ({} {encoding} units); at most {max_segments} are allowed",
            counted.segments, counted.units
        )));
    }
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Button;
    use proptest::prelude::*;

    #[test]
    fn markdown_is_stripped_to_readable_text() {
        let text = "## 双十一\n**Big** sale, see [the page](https://x.example/a) and `code`\n> quoted\nsnake_case_name";
        assert_eq!(
            strip_markdown(text),
            "双十一\nBig sale, see the page (https://x.example/a) and code\nquoted\nsnake_case_name"
        );
        assert_eq!(strip_markdown("[https://a.b](https://a.b)"), "https://a.b");
        assert_eq!(strip_markdown("a [broken link"), "a [broken link");
    }

    #[test]
    fn cards_downgrade_to_title_text_buttons_and_link() {
        let message = Message {
            format: Format::Card,
            text: "Starts at 8pm".into(),
            title: Some("Flash sale".into()),
            url: Some("https://x.example/s".into()),
            buttons: vec![Button {
                text: "Open".into(),
                url: "https://x.example/o".into(),
            }],
            ..Message::default()
        };
        assert_eq!(
            plain_text(&message),
            "Flash sale\nStarts at 8pm\nOpen: https://x.example/o\nhttps://x.example/s"
        );
        assert_eq!(
            markdown(&message),
            "**Flash sale**\n\nStarts at 8pm\n\n[Open](https://x.example/o)\n\n[https://x.example/s](https://x.example/s)"
        );
        assert_eq!(title_or_first_line(&message, 4), "Flas");
        assert_eq!(
            title_or_first_line(&Message::text("\nfirst\nsecond"), 64),
            "first"
        );
    }

    #[test]
    fn limits_are_errors_not_truncation() {
        assert!(fit_bytes("text", &"群".repeat(682), 2048).is_ok());
        let error = fit_bytes("text", &"群".repeat(683), 2048).unwrap_err();
        assert_eq!(error.to_string(), "text is 2049 bytes; at most 2048 fit");
        assert!(fit_chars("text", &"群".repeat(10), 10).is_ok());
        assert!(fit_chars("text", &"群".repeat(11), 10).is_err());
        assert!(require_text(&Message::text("  ")).is_err());
    }

    #[test]
    fn sms_segments_follow_gsm7_and_ucs2_rules() {
        assert_eq!(sms_segments("").segments, 0);
        assert_eq!(sms_segments(&"a".repeat(160)).segments, 1);
        assert_eq!(sms_segments(&"a".repeat(161)).segments, 2);
        assert_eq!(sms_segments(&"a".repeat(306)).segments, 2);
        assert_eq!(sms_segments(&"a".repeat(307)).segments, 3);
        // Extension characters take two septets.
        assert_eq!(sms_segments(&"€".repeat(80)).units, 160);
        assert_eq!(sms_segments(&"€".repeat(81)).segments, 2);
        let chinese = sms_segments(&"验".repeat(70));
        assert!(!chinese.gsm7);
        assert_eq!(chinese.segments, 1);
        assert_eq!(sms_segments(&"验".repeat(71)).segments, 2);
        assert_eq!(sms_segments(&"验".repeat(134)).segments, 2);
        // An emoji is two UTF-16 units.
        assert_eq!(sms_segments("😀").units, 2);
        assert!(fit_sms(&"验".repeat(135), 2).is_err());
    }

    proptest! {
        #[test]
        fn rendering_never_panics_and_keeps_plain_text(text in "\\PC{0,200}") {
            let markdown_message = Message { format: Format::Markdown, text: text.clone(), ..Message::default() };
            let _ = plain_text(&markdown_message);
            let _ = markdown(&markdown_message);
            let _ = sms_segments(&text);
            prop_assert_eq!(plain_text(&Message::text(text.clone())), text);
        }
    }
}

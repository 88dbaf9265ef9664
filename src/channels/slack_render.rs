//! Slack's message markup: mrkdwn text converted from the common Markdown subset, and
//! Block Kit blocks for cards, with the limits Slack enforces on each [doc].

use serde_json::{Value, json};

use super::markdown_pieces::{Block, Piece, block, pieces, strip_emphasis};
use super::render::{ContentError, fit_chars, plain_text, require_text, strip_markdown};
use super::{Format, Message};

/// `text` beyond 40,000 characters is truncated by Slack; refused here instead.
pub const TEXT_LIMIT: usize = 40_000;
/// Block Kit: header text, section text, button text, button URL, elements of one
/// actions block.
pub const HEADER_LIMIT: usize = 150;
pub const SECTION_LIMIT: usize = 3_000;
pub const BUTTON_TEXT_LIMIT: usize = 75;
pub const BUTTON_URL_LIMIT: usize = 3_000;
pub const BUTTONS_LIMIT: usize = 25;

/// What one post carries: `text` (the message, or the notification fallback of blocks)
/// and the blocks of a card.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub blocks: Option<Value>,
}

/// `&`, `<` and `>` are Slack's control characters; everything else is literal.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A link in mrkdwn. `|` and `>` would end the URL early, so they are percent-encoded.
fn link(url: &str, label: &str) -> String {
    let url = url.replace('|', "%7C").replace('>', "%3E");
    if label.is_empty() || label == url {
        format!("<{url}>")
    } else {
        format!("<{url}|{}>", escape(label))
    }
}

/// The common Markdown subset in Slack's dialect: `**bold**` to `*bold*`, `*italic*` to
/// `_italic_`, `~~struck~~` to `~struck~`, `[t](u)` to `<u|t>`, headings in bold, bullets
/// as `•`; code spans and fenced blocks kept, with the control characters escaped.
pub fn mrkdwn(markdown: &str) -> String {
    let mut lines = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            lines.push(escape(line));
            continue;
        }
        if in_fence {
            lines.push(escape(line));
            continue;
        }
        lines.push(match block(line) {
            Block::Heading(title) => {
                let flat = flat_inline(title);
                if flat.is_empty() {
                    String::new()
                } else {
                    format!("*{flat}*")
                }
            }
            // Slack's quote marker is a literal `>` at the start of the line.
            Block::Quote(quoted) => format!("> {}", inline(quoted)),
            Block::Bullet { indent, item } => format!("{indent}• {}", inline(item)),
            Block::Plain(text) => inline(text),
        });
    }
    lines.join("\n")
}

/// Inline text without emphasis (for headings, which are bold as a whole).
fn flat_inline(text: &str) -> String {
    pieces(text)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => escape(&strip_emphasis(text)),
            Piece::Link { label, url } => link(url, &strip_emphasis(label)),
        })
        .collect()
}

fn inline(text: &str) -> String {
    pieces(text)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => emphasis(text),
            Piece::Link { label, url } => link(url, &strip_emphasis(label)),
        })
        .collect()
}

/// Converts emphasis markers and escapes the rest; code spans are copied as they are.
fn emphasis(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run_end = (i..chars.len())
            .find(|&j| chars[j] != c)
            .unwrap_or(chars.len());
        let run = run_end - i;
        match c {
            '`' => {
                let closing =
                    (run_end..chars.len()).find(|&j| chars[j..].starts_with(&chars[i..run_end]));
                let end = closing.map_or(run_end, |close| close + run);
                out.push_str(&escape(&chars[i..end].iter().collect::<String>()));
                i = end;
                continue;
            }
            '*' | '_' if run >= 2 => {
                out.push('*');
                if run >= 3 {
                    out.push('_');
                }
            }
            '*' => {
                let before = i.checked_sub(1).map(|j| chars[j]);
                let after = chars.get(run_end).copied();
                let touches = |side: Option<char>| side.is_some_and(|ch| !ch.is_whitespace());
                out.push(if touches(before) || touches(after) {
                    '_'
                } else {
                    '*'
                });
            }
            '~' if run >= 2 => out.push('~'),
            '&' | '<' | '>' => {
                for _ in 0..run {
                    out.push_str(&escape(&c.to_string()));
                }
            }
            _ => out.extend(&chars[i..run_end]),
        }
        i = run_end;
    }
    out
}

/// `<@U…>` for each user, `<!channel>` for everyone.
pub fn mention_prefix(users: &[String], all: bool) -> String {
    let mut tags: Vec<String> = users.iter().map(|id| format!("<@{id}>")).collect();
    if all {
        tags.push("<!channel>".to_string());
    }
    if tags.is_empty() {
        String::new()
    } else {
        format!("{} ", tags.join(" "))
    }
}

/// Slack ids are upper-case letters and digits; anything else must not be able to close
/// the mention.
pub fn safe_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for id in ids {
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !id.is_empty() && !found.contains(&id) {
            found.push(id);
        }
    }
    found
}

/// Renders `message` with `mentions` (a ready `<@U…> ` prefix) and checks Slack's limits.
pub fn render(message: &Message, mentions: &str) -> Result<Rendered, ContentError> {
    require_text(message)?;
    let extra_links = || {
        let mut lines: Vec<String> = message
            .buttons
            .iter()
            .map(|button| link(&button.url, &button.text))
            .collect();
        if let Some(url) = message.url.as_deref().filter(|url| !url.is_empty())
            && !message.text.contains(url)
            && !message.buttons.iter().any(|button| button.url == url)
        {
            lines.push(link(url, ""));
        }
        lines
    };
    let rendered = match message.format {
        Format::Text => Rendered {
            text: format!("{mentions}{}", escape(&plain_text(message))),
            blocks: None,
        },
        Format::Markdown => {
            let mut lines = vec![format!("{mentions}{}", mrkdwn(&message.text))];
            lines.extend(extra_links());
            Rendered {
                text: lines.join("\n"),
                blocks: None,
            }
        }
        Format::Link => {
            let title = message.title.as_deref().filter(|t| !t.trim().is_empty());
            let heading = match (title, message.url.as_deref().filter(|u| !u.is_empty())) {
                (Some(title), Some(url)) => Some(format!("*{}*", link(url, title))),
                (Some(title), None) => Some(format!("*{}*", escape(title))),
                (None, _) => None,
            };
            let mut lines: Vec<String> = heading.into_iter().collect();
            if !message.text.is_empty() {
                lines.push(escape(&message.text));
            }
            lines.extend(
                message
                    .buttons
                    .iter()
                    .map(|button| link(&button.url, &button.text)),
            );
            if title.is_none()
                && let Some(url) = message.url.as_deref().filter(|u| !u.is_empty())
            {
                lines.push(link(url, ""));
            }
            Rendered {
                text: format!("{mentions}{}", lines.join("\n")),
                blocks: None,
            }
        }
        Format::Card => card(message, mentions)?,
    };
    fit_chars("the Slack message text", &rendered.text, TEXT_LIMIT)?;
    Ok(rendered)
}

fn card(message: &Message, mentions: &str) -> Result<Rendered, ContentError> {
    let mut blocks = Vec::new();
    if let Some(title) = message.title.as_deref().filter(|t| !t.trim().is_empty()) {
        fit_chars("the card title", title, HEADER_LIMIT)?;
        blocks.push(json!({"type": "header", "text": {"type": "plain_text", "text": title}}));
    }
    let mut section = format!("{mentions}{}", mrkdwn(&message.text));
    if let Some(url) = message.url.as_deref().filter(|url| !url.is_empty())
        && !message.text.contains(url)
        && !message.buttons.iter().any(|button| button.url == url)
    {
        section.push('\n');
        section.push_str(&link(url, ""));
    }
    if !section.trim().is_empty() {
        fit_chars("the card text", &section, SECTION_LIMIT)?;
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": section}}));
    }
    if !message.buttons.is_empty() {
        if message.buttons.len() > BUTTONS_LIMIT {
            return Err(ContentError::new(format!(
                "the card has {} buttons; Slack shows at most {BUTTONS_LIMIT}",
                message.buttons.len()
            )));
        }
        let mut elements = Vec::new();
        for button in &message.buttons {
            fit_chars("a button's text", &button.text, BUTTON_TEXT_LIMIT)?;
            fit_chars("a button's URL", &button.url, BUTTON_URL_LIMIT)?;
            elements.push(json!({
                "type": "button",
                "text": {"type": "plain_text", "text": button.text},
                "url": button.url,
            }));
        }
        blocks.push(json!({"type": "actions", "elements": elements}));
    }
    // The notification and screen-reader text of a message with blocks: the card's
    // Markdown is read as plain text there.
    let flattened = Message {
        text: strip_markdown(&message.text),
        ..message.clone()
    };
    let text = format!("{mentions}{}", escape(&plain_text(&flattened)));
    Ok(Rendered {
        text,
        blocks: Some(Value::Array(blocks)),
    })
}

#[cfg(test)]
#[path = "slack_render_tests.rs"]
mod tests;

//! Feishu / Lark message content shared by the custom bot and the app: `text` with `<at>`
//! tags, `post` rich text for Markdown and links, `interactive` cards (card JSON 1.0,
//! which every client version renders; 2.0 needs client 7.20 and rejects unknown fields).
//! The two APIs wrap the same content differently (the bot takes objects and `card`, the
//! app takes `content` as a JSON string), so this module stops at the content itself.

use serde_json::{Value, json};

use super::markdown_pieces::{Block, Piece, block, pieces, strip_emphasis};
use super::{Format, Message, render};

/// Who a group message @mentions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    /// open_ids (or user_ids), already reduced to the characters ids are made of.
    pub users: Vec<String>,
    pub all: bool,
}

impl Mentions {
    /// The message's own mentions plus the job's recipient, when there is one (a group
    /// channel @mentions its recipient).
    pub fn of(message: &Message, recipient: Option<&str>) -> Self {
        let mut users: Vec<String> = Vec::new();
        for id in recipient
            .into_iter()
            .chain(message.mentions.iter().map(String::as_str))
        {
            let id = safe_id(id);
            if !id.is_empty() && !users.contains(&id) {
                users.push(id);
            }
        }
        Self {
            users,
            all: message.mention_all,
        }
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && !self.all
    }
}

/// Ids are `ou_` + hex; anything else must not be able to close the tag or the attribute
/// it is written into.
fn safe_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect()
}

/// Rendered content and the `msg_type` it goes with.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// `{"text": "…"}`.
    Text(Value),
    /// The language object of a post, `{"zh_cn": {"title": …, "content": [[…]]}}`.
    Post(Value),
    /// A card, `{"config": …, "header": …, "elements": […]}`.
    Card(Value),
}

impl Content {
    pub fn msg_type(&self) -> &'static str {
        match self {
            Content::Text(_) => "text",
            Content::Post(_) => "post",
            Content::Card(_) => "interactive",
        }
    }

    pub fn value(&self) -> &Value {
        match self {
            Content::Text(value) | Content::Post(value) | Content::Card(value) => value,
        }
    }
}

/// The richest content Feishu has for the message: plain text stays text, Markdown and
/// links become a post (links as `a` elements), a card becomes an interactive card.
pub fn render(message: &Message, mentions: &Mentions) -> Content {
    match message.format {
        Format::Text => Content::Text(json!({ "text": text_with_mentions(message, mentions) })),
        Format::Markdown | Format::Link => Content::Post(post(message, mentions)),
        Format::Card => Content::Card(card(message, mentions)),
    }
}

fn text_with_mentions(message: &Message, mentions: &Mentions) -> String {
    let mut tags: Vec<String> = mentions
        .users
        .iter()
        .map(|id| format!("<at user_id=\"{id}\"></at>"))
        .collect();
    if mentions.all {
        tags.push("<at user_id=\"all\">所有人</at>".to_string());
    }
    let text = render::plain_text(message);
    if tags.is_empty() {
        text
    } else {
        format!("{} {text}", tags.join(" "))
    }
}

fn post(message: &Message, mentions: &Mentions) -> Value {
    let mut paragraphs: Vec<Value> = Vec::new();
    if !mentions.is_empty() {
        let mut ats: Vec<Value> = mentions
            .users
            .iter()
            .map(|id| json!({"tag": "at", "user_id": id}))
            .collect();
        if mentions.all {
            ats.push(json!({"tag": "at", "user_id": "all"}));
        }
        paragraphs.push(Value::Array(ats));
    }
    for line in message.text.lines().filter(|line| !line.trim().is_empty()) {
        let elements = match message.format {
            Format::Markdown => markdown_line(line),
            _ => vec![text_element(line)],
        };
        paragraphs.push(Value::Array(elements));
    }
    for button in &message.buttons {
        paragraphs.push(json!([link_element(&button.text, &button.url)]));
    }
    if let Some(url) = message.url.as_deref().filter(|url| !url.is_empty())
        && !message.text.contains(url)
        && !message.buttons.iter().any(|button| button.url == url)
    {
        paragraphs.push(json!([link_element(url, url)]));
    }
    let title = message.title.as_deref().unwrap_or_default();
    json!({"zh_cn": {"title": title, "content": paragraphs}})
}

fn markdown_line(line: &str) -> Vec<Value> {
    let (prefix, inline) = match block(line) {
        Block::Heading(text) | Block::Quote(text) | Block::Plain(text) => ("", text),
        Block::Bullet { item, .. } => ("• ", item),
    };
    let mut elements = Vec::new();
    if !prefix.is_empty() {
        elements.push(text_element(prefix));
    }
    for piece in pieces(inline) {
        elements.push(match piece {
            Piece::Text(text) => text_element(&strip_emphasis(text)),
            Piece::Link { label, url } => link_element(&strip_emphasis(label), url),
        });
    }
    elements
}

fn text_element(text: &str) -> Value {
    json!({"tag": "text", "text": text})
}

fn link_element(text: &str, url: &str) -> Value {
    json!({"tag": "a", "text": text, "href": url})
}

fn card(message: &Message, mentions: &Mentions) -> Value {
    let mut markdown = String::new();
    for id in &mentions.users {
        markdown.push_str(&format!("<at id={id}></at> "));
    }
    if mentions.all {
        markdown.push_str("<at id=all></at> ");
    }
    markdown.push_str(&message.text);
    if let Some(url) = message.url.as_deref().filter(|url| !url.is_empty())
        && !message.text.contains(url)
        && !message.buttons.iter().any(|button| button.url == url)
    {
        markdown.push_str(&format!("\n[{url}]({url})"));
    }
    let mut elements = Vec::new();
    if !markdown.trim().is_empty() {
        elements.push(json!({"tag": "markdown", "content": markdown.trim()}));
    }
    if !message.buttons.is_empty() {
        let actions: Vec<Value> = message
            .buttons
            .iter()
            .enumerate()
            .map(|(index, button)| {
                json!({
                    "tag": "button",
                    "text": {"tag": "plain_text", "content": button.text},
                    "type": if index == 0 { "primary" } else { "default" },
                    "url": button.url,
                })
            })
            .collect();
        elements.push(json!({"tag": "action", "actions": actions}));
    }
    let mut card = json!({
        "config": {"wide_screen_mode": true},
        "elements": elements,
    });
    if let Some(title) = message.title.as_deref().filter(|t| !t.trim().is_empty()) {
        card["header"] = json!({
            "title": {"tag": "plain_text", "content": title},
            "template": "blue",
        });
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Button;
    use proptest::prelude::*;

    fn mentions(users: &[&str], all: bool) -> Mentions {
        Mentions {
            users: users.iter().map(|u| u.to_string()).collect(),
            all,
        }
    }

    #[test]
    fn the_recipient_and_the_message_mentions_are_tagged_once_each() {
        let message = Message {
            mentions: vec!["ou_b".into(), "ou_a".into(), "ou_\"x><".into()],
            mention_all: true,
            ..Message::text("deploy done")
        };
        let found = Mentions::of(&message, Some("ou_a"));
        assert_eq!(found, mentions(&["ou_a", "ou_b", "ou_x"], true));
        assert_eq!(
            render(&message, &found),
            Content::Text(json!({
                "text": "<at user_id=\"ou_a\"></at> <at user_id=\"ou_b\"></at> \
                         <at user_id=\"ou_x\"></at> <at user_id=\"all\">所有人</at> deploy done"
            }))
        );
        assert_eq!(
            render(&Message::text("hi"), &Mentions::default()),
            Content::Text(json!({"text": "hi"}))
        );
    }

    #[test]
    fn markdown_becomes_a_post_with_links_as_a_elements() {
        let message = Message {
            format: Format::Markdown,
            title: Some("项目更新".into()),
            text: "## 双十一\n**Big** sale: [the page](https://x.example/a) now\n\n- item".into(),
            ..Message::default()
        };
        let content = render(&message, &mentions(&["ou_1"], false));
        assert_eq!(content.msg_type(), "post");
        assert_eq!(
            content.value(),
            &json!({"zh_cn": {"title": "项目更新", "content": [
                [{"tag": "at", "user_id": "ou_1"}],
                [{"tag": "text", "text": "双十一"}],
                [{"tag": "text", "text": "Big sale: "},
                 {"tag": "a", "text": "the page", "href": "https://x.example/a"},
                 {"tag": "text", "text": " now"}],
                [{"tag": "text", "text": "• "}, {"tag": "text", "text": "item"}],
            ]}})
        );
    }

    #[test]
    fn a_link_is_a_post_ending_with_its_url_and_buttons() {
        let message = Message {
            format: Format::Link,
            title: Some("Flash sale".into()),
            text: "Starts at 8pm *sharp*".into(),
            url: Some("https://x.example/s".into()),
            buttons: vec![Button {
                text: "Open".into(),
                url: "https://x.example/o".into(),
            }],
            ..Message::default()
        };
        assert_eq!(
            render(&message, &Mentions::default()).value(),
            &json!({"zh_cn": {"title": "Flash sale", "content": [
                [{"tag": "text", "text": "Starts at 8pm *sharp*"}],
                [{"tag": "a", "text": "Open", "href": "https://x.example/o"}],
                [{"tag": "a", "text": "https://x.example/s", "href": "https://x.example/s"}],
            ]}})
        );
    }

    #[test]
    fn a_card_has_a_header_markdown_with_mentions_and_buttons() {
        let message = Message {
            format: Format::Card,
            title: Some("Release".into()),
            text: "**v2** is out".into(),
            url: Some("https://x.example/notes".into()),
            buttons: vec![
                Button {
                    text: "Notes".into(),
                    url: "https://x.example/notes".into(),
                },
                Button {
                    text: "Roll back".into(),
                    url: "https://x.example/rb".into(),
                },
            ],
            ..Message::default()
        };
        let content = render(&message, &mentions(&["ou_9"], true));
        assert_eq!(content.msg_type(), "interactive");
        assert_eq!(
            content.value(),
            &json!({
                "config": {"wide_screen_mode": true},
                "header": {"title": {"tag": "plain_text", "content": "Release"}, "template": "blue"},
                "elements": [
                    {"tag": "markdown", "content": "<at id=ou_9></at> <at id=all></at> **v2** is out"},
                    {"tag": "action", "actions": [
                        {"tag": "button", "text": {"tag": "plain_text", "content": "Notes"},
                         "type": "primary", "url": "https://x.example/notes"},
                        {"tag": "button", "text": {"tag": "plain_text", "content": "Roll back"},
                         "type": "default", "url": "https://x.example/rb"},
                    ]},
                ],
            })
        );
        let untitled = Message {
            format: Format::Card,
            text: "body".into(),
            url: Some("https://x.example/u".into()),
            ..Message::default()
        };
        assert_eq!(
            render(&untitled, &Mentions::default()).value(),
            &json!({
                "config": {"wide_screen_mode": true},
                "elements": [{"tag": "markdown", "content": "body\n[https://x.example/u](https://x.example/u)"}],
            })
        );
    }

    proptest! {
        #[test]
        fn rendering_never_panics(text in "\\PC{0,200}", format in 0..4usize) {
            let format = [Format::Text, Format::Markdown, Format::Link, Format::Card][format];
            let message = Message { format, text, ..Message::default() };
            let _ = render(&message, &Mentions::of(&message, Some("ou_1")));
        }
    }
}

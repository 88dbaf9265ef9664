//! How a message looks as a work notification `msg` or as a robot `msgKey` + `msgParam`.
//! Links and cards both become action cards: the `link` types need a picture (`picUrl`),
//! which a message does not carry, while an action card with one button opens the URL.

use serde_json::{Map, Value, json};

use crate::channels::render::{self, ContentError};
use crate::channels::{Button, Format, Message};

/// `action_card.title`: at most 64 characters [doc: TOP API metadata of asyncsend_v2].
const CARD_TITLE_CHARS: usize = 64;
/// Button labels: at most 20 characters; button URLs: at most 500 [doc, both APIs].
const BUTTON_TITLE_CHARS: usize = 20;
const URL_CHARS: usize = 500;
/// `msgParam`: at most 15,000 bytes [doc for robot group messages; the 1:1 API takes the
/// same templates].
const ROBOT_PARAM_BYTES: usize = 15_000;
/// Robot action cards come with 1 to 5 vertical buttons (`sampleActionCard`,
/// `sampleActionCard2` … `sampleActionCard5`).
const ROBOT_MAX_BUTTONS: usize = 5;
/// The button of a card made from a message that has a URL but no buttons.
const OPEN_LINK: &str = "查看详情";

/// A message rendered as an action card.
struct Card {
    title: String,
    text: String,
    buttons: Vec<Button>,
}

/// The work notification `msg` object.
pub(super) fn work_notification(message: &Message) -> Result<Value, ContentError> {
    render::require_text(message)?;
    let msg = match card(message)? {
        None if message.format == Format::Markdown => json!({
            "msgtype": "markdown",
            "markdown": {"title": title(message), "text": render::markdown(message)},
        }),
        None => json!({"msgtype": "text", "text": {"content": render::plain_text(message)}}),
        Some(Card {
            title,
            text,
            buttons,
        }) => {
            let action_card = match buttons.as_slice() {
                [only] => json!({
                    "title": title,
                    "markdown": text,
                    "single_title": only.text,
                    "single_url": only.url,
                }),
                many => json!({
                    "title": title,
                    "markdown": text,
                    "btn_orientation": "0",
                    "btn_json_list": many
                        .iter()
                        .map(|button| json!({"title": button.text, "action_url": button.url}))
                        .collect::<Vec<_>>(),
                }),
            };
            json!({"msgtype": "action_card", "action_card": action_card})
        }
    };
    Ok(msg)
}

/// The robot's `msgKey` and `msgParam` (a JSON string).
pub(super) fn robot(message: &Message) -> Result<(&'static str, String), ContentError> {
    render::require_text(message)?;
    let (key, param) = match card(message)? {
        None if message.format == Format::Markdown => (
            "sampleMarkdown",
            json!({"title": title(message), "text": render::markdown(message)}),
        ),
        None => (
            "sampleText",
            json!({"content": render::plain_text(message)}),
        ),
        Some(Card {
            title,
            text,
            buttons,
        }) => robot_card(title, text, &buttons)?,
    };
    let param = param.to_string();
    render::fit_bytes(
        "the DingTalk robot message (msgParam)",
        &param,
        ROBOT_PARAM_BYTES,
    )?;
    Ok((key, param))
}

fn robot_card(
    title: String,
    text: String,
    buttons: &[Button],
) -> Result<(&'static str, Value), ContentError> {
    let key = match buttons.len() {
        1 => "sampleActionCard",
        2 => "sampleActionCard2",
        3 => "sampleActionCard3",
        4 => "sampleActionCard4",
        5 => "sampleActionCard5",
        count => {
            return Err(ContentError::new(format!(
                "the card has {count} buttons; a DingTalk robot card has at most {ROBOT_MAX_BUTTONS}"
            )));
        }
    };
    let mut param = Map::new();
    param.insert("title".into(), title.into());
    param.insert("text".into(), text.into());
    if let [only] = buttons {
        param.insert("singleTitle".into(), only.text.clone().into());
        param.insert("singleURL".into(), only.url.clone().into());
    } else {
        for (index, button) in buttons.iter().enumerate() {
            let n = index + 1;
            param.insert(format!("actionTitle{n}"), button.text.clone().into());
            param.insert(format!("actionURL{n}"), button.url.clone().into());
        }
    }
    Ok((key, Value::Object(param)))
}

/// The card a link or card message becomes; `None` when there is nothing to click (then
/// it is sent as Markdown or text).
fn card(message: &Message) -> Result<Option<Card>, ContentError> {
    if !matches!(message.format, Format::Link | Format::Card) {
        return Ok(None);
    }
    let url = message.url.as_deref().filter(|url| !url.trim().is_empty());
    let mut text = message.text.clone();
    let buttons = match (message.buttons.is_empty(), url) {
        (true, None) => return Ok(None),
        (true, Some(url)) => vec![Button {
            text: OPEN_LINK.to_string(),
            url: url.to_string(),
        }],
        (false, url) => {
            if let Some(url) = url.filter(|url| !text.contains(url)) {
                text.push_str(&format!("\n\n[{url}]({url})"));
            }
            message.buttons.clone()
        }
    };
    for button in &buttons {
        if button.text.trim().is_empty() || button.url.trim().is_empty() {
            return Err(ContentError::new("a card button needs a label and a URL"));
        }
        render::fit_chars("a card button label", &button.text, BUTTON_TITLE_CHARS)?;
        render::fit_chars("a card button URL", &button.url, URL_CHARS)?;
    }
    let title = match message.title.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(explicit) => {
            render::fit_chars("the card title", explicit, CARD_TITLE_CHARS)?;
            explicit.to_string()
        }
        None => title(message),
    };
    if text.trim().is_empty() {
        text = title.clone();
    }
    Ok(Some(Card {
        title,
        text,
        buttons,
    }))
}

/// A Markdown title (shown in the conversation list) taken from the first line when the
/// message has none.
fn title(message: &Message) -> String {
    render::title_or_first_line(message, CARD_TITLE_CHARS)
}

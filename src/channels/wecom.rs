//! What the WeCom and WeChat adapters share: one exchange with the API (a transport failure
//! or an HTTP error status is already a verdict; a 200 is read whole, bounded, because
//! WeCom lists invalid users in it), the `errcode` envelope, the two card layouts both
//! WeCom kinds render, and the waits their rate limits ask for.

use std::time::Duration;

use secrecy::SecretString;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::http::{body_excerpt, retry_after, transport_failure};
use super::render::strip_markdown;
use super::{Format, Message, SendResult, Verdict, truncate};

/// The most of a 200 answer that is read. WeCom's `invaliduser` can name 1000 ids of up to
/// 64 bytes each; anything past this is not an answer these APIs give.
const ANSWER_LIMIT: usize = 512 * 1024;

/// When a 429 comes without `Retry-After`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// When a token answer does not say how long its token lives (both say 7200 s).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);

/// A 2xx answer: the JSON when it parses, and the text kept for the attempts log.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub status: u16,
    pub json: Option<Value>,
    pub detail: String,
}

impl Answer {
    /// The `errcode` of the envelope; `None` when the answer has none (or is not JSON).
    pub fn errcode(&self) -> Option<i64> {
        self.json.as_ref()?.get("errcode")?.as_i64()
    }

    /// A field as text, whether the provider wrote it as a string or a number (WeChat's
    /// `msgid` is a number, WeCom's a string).
    pub fn text(&self, key: &str) -> Option<String> {
        match self.json.as_ref()?.get(key)? {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// The access token of a successful `gettoken` / `stable_token` answer and how long it
    /// lives (`expires_in`, 7200 s when absent); `None` for any other answer.
    pub fn access_token(&self) -> Option<(SecretString, Duration)> {
        if !matches!(self.errcode(), Some(0) | None) {
            return None;
        }
        let json = self.json.as_ref()?;
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())?;
        let lifetime = json
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Some((SecretString::from(token.to_string()), lifetime))
    }

    /// The answer classified as `verdict`, with its status and text.
    pub fn result(&self, verdict: Verdict) -> SendResult {
        SendResult::new(verdict, Some(self.status), &self.detail)
    }
}

/// Sends `request` and reads the answer. Every failure is a classified result: transport
/// errors and 5xx are retryable, 429 waits, 401/403/404/410 mean the endpoint or the
/// credential is gone (a proxy or a removed account), other statuses refuse the request.
pub(super) async fn exchange(
    request: reqwest::RequestBuilder,
    now_ms: i64,
) -> Result<Answer, SendResult> {
    let response = request
        .send()
        .await
        .map_err(|error| transport_failure(&error))?;
    let status = response.status();
    if !status.is_success() {
        let wait = retry_after(response.headers(), now_ms);
        let detail = body_excerpt(response).await;
        return Err(SendResult::new(
            http_verdict(status, wait),
            Some(status.as_u16()),
            detail,
        ));
    }
    let body = read_bounded(response).await.map_err(|error| {
        // The provider may have acted on the request; only its answer was lost.
        SendResult::new(
            Verdict::Retryable { after: None },
            Some(status.as_u16()),
            format!(
                "the answer was cut off: {}",
                transport_failure(&error).detail
            ),
        )
    })?;
    let text = String::from_utf8_lossy(&body);
    Ok(Answer {
        status: status.as_u16(),
        json: serde_json::from_slice(&body).ok(),
        detail: truncate(&text, super::DETAIL_LIMIT),
    })
}

fn http_verdict(status: StatusCode, wait: Option<Duration>) -> Verdict {
    match status.as_u16() {
        429 => Verdict::RateLimited {
            wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        },
        408 | 425 | 500..=599 => Verdict::Retryable { after: wait },
        401 | 403 | 404 | 410 => Verdict::AccountDisabled,
        _ => Verdict::ContentBlocked,
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut collected = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = ANSWER_LIMIT.saturating_sub(collected.len());
        collected.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if collected.len() >= ANSWER_LIMIT {
            break;
        }
    }
    Ok(collected)
}

/// A 2xx answer without an `errcode` (an HTML page from a proxy, a truncated body) is not
/// a success: the request may or may not have been acted on, so it is tried again.
pub(super) fn unexpected(answer: &Answer) -> SendResult {
    answer.result(Verdict::Retryable { after: None })
}

/// Until the start of the next minute: WeCom's per-minute limits (robot 20/min, 45009)
/// count calendar minutes [obs], so waiting less only earns another refusal.
pub(super) fn until_next_minute(now_ms: i64) -> Duration {
    let into_minute = now_ms.rem_euclid(60_000);
    Duration::from_millis(u64::try_from(60_000 - into_minute).unwrap_or(60_000))
}

/// Until midnight in China (UTC+8), when WeChat's daily API quotas reset.
pub(super) fn until_next_china_day(now_ms: i64) -> Duration {
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    const UTC_PLUS_8_MS: i64 = 8 * 60 * 60 * 1000;
    let into_day = (now_ms + UTC_PLUS_8_MS).rem_euclid(DAY_MS);
    Duration::from_millis(u64::try_from(DAY_MS - into_day).unwrap_or(0))
}

/// Where a WeCom `text_notice` card's suggested lengths end [doc: "建议不超过26个字",
/// "建议不超过112个字", "建议不超过13个字"]. WeCom's client cuts longer text, so a message
/// that does not fit is rendered in another form instead of being cut.
const CARD_TITLE_CHARS: usize = 26;
const CARD_TEXT_CHARS: usize = 112;
const CARD_BUTTON_CHARS: usize = 13;
const CARD_MAX_BUTTONS: usize = 3;
/// News article limits [doc: "不超过128个字节，超过会自动截断", "不超过512个字节"].
pub(super) const ARTICLE_TITLE_BYTES: usize = 128;
pub(super) const ARTICLE_DESCRIPTION_BYTES: usize = 512;

/// The title and body a card shows: the message's title and its text, or, without a
/// title, the first line as the title and the rest as the body.
pub(super) fn title_and_body(message: &Message) -> (String, String) {
    let text = match message.format {
        Format::Markdown => strip_markdown(&message.text),
        Format::Text | Format::Link | Format::Card => message.text.clone(),
    };
    if let Some(title) = message.title.as_deref().filter(|t| !t.trim().is_empty()) {
        return (title.to_string(), text.trim().to_string());
    }
    let text = text.trim();
    match text.split_once('\n') {
        Some((first, rest)) => (first.trim().to_string(), rest.trim().to_string()),
        None => (text.to_string(), String::new()),
    }
}

/// The message as a WeCom `text_notice` template card (title, text, up to three buttons
/// as the jump list, the URL as the card's click action), when it fits that layout.
pub(super) fn text_notice_card(message: &Message) -> Option<Value> {
    let (title, body) = title_and_body(message);
    let action_url = message
        .url
        .as_deref()
        .filter(|url| !url.is_empty())
        .or_else(|| message.buttons.first().map(|button| button.url.as_str()))?;
    let fits = title.chars().count() <= CARD_TITLE_CHARS
        && body.chars().count() <= CARD_TEXT_CHARS
        && !(title.is_empty() && body.is_empty())
        && message.buttons.len() <= CARD_MAX_BUTTONS
        && message
            .buttons
            .iter()
            .all(|button| button.text.chars().count() <= CARD_BUTTON_CHARS);
    if !fits {
        return None;
    }
    let mut card = json!({
        "card_type": "text_notice",
        "main_title": { "title": title },
        "card_action": { "type": 1, "url": action_url },
    });
    if !body.is_empty() {
        card["sub_title_text"] = Value::String(body);
    }
    if !message.buttons.is_empty() {
        card["jump_list"] = message
            .buttons
            .iter()
            .map(|button| json!({ "type": 1, "title": button.text, "url": button.url }))
            .collect();
    }
    Some(card)
}

/// The message as a one-article news card (title, description, URL), when it has a URL,
/// no buttons (an article has none) and fits the article limits.
pub(super) fn news_card(message: &Message) -> Option<Value> {
    let url = message.url.as_deref().filter(|url| !url.is_empty())?;
    let (title, description) = title_and_body(message);
    let fits = !title.is_empty()
        && title.len() <= ARTICLE_TITLE_BYTES
        && description.len() <= ARTICLE_DESCRIPTION_BYTES
        && message.buttons.is_empty();
    if !fits {
        return None;
    }
    let mut article = json!({ "title": title, "url": url });
    if !description.is_empty() {
        article["description"] = Value::String(description);
    }
    Some(json!({ "articles": [article] }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Button;

    fn card(title: &str, text: &str, url: Option<&str>, buttons: &[(&str, &str)]) -> Message {
        Message {
            format: Format::Card,
            title: Some(title.to_string()).filter(|t| !t.is_empty()),
            text: text.to_string(),
            url: url.map(str::to_string),
            buttons: buttons
                .iter()
                .map(|(text, url)| Button {
                    text: text.to_string(),
                    url: url.to_string(),
                })
                .collect(),
            ..Message::default()
        }
    }

    #[test]
    fn http_statuses_are_classified_before_the_envelope() {
        let verdict = |code: u16, wait| http_verdict(StatusCode::from_u16(code).unwrap(), wait);
        assert_eq!(
            verdict(429, None),
            Verdict::RateLimited {
                wait: DEFAULT_RATE_LIMIT_WAIT
            }
        );
        assert_eq!(
            verdict(429, Some(Duration::from_secs(7))),
            Verdict::RateLimited {
                wait: Duration::from_secs(7)
            }
        );
        assert_eq!(verdict(502, None), Verdict::Retryable { after: None });
        assert_eq!(verdict(408, None), Verdict::Retryable { after: None });
        assert_eq!(verdict(404, None), Verdict::AccountDisabled);
        assert_eq!(verdict(403, None), Verdict::AccountDisabled);
        assert_eq!(verdict(400, None), Verdict::ContentBlocked);
    }

    #[test]
    fn waits_end_at_the_next_minute_and_the_next_china_midnight() {
        // 2024-01-01T00:00:30Z is 08:00:30 in China.
        let now = 1_704_067_230_000;
        assert_eq!(until_next_minute(now), Duration::from_secs(30));
        assert_eq!(until_next_minute(now - 30_000), Duration::from_secs(60));
        assert_eq!(
            until_next_china_day(now),
            Duration::from_secs(16 * 3600 - 30)
        );
    }

    #[test]
    fn a_card_that_fits_becomes_a_text_notice() {
        let message = card(
            "Flash sale",
            "Starts at 8pm",
            Some("https://x.example/s"),
            &[("Open", "https://x.example/o")],
        );
        assert_eq!(
            text_notice_card(&message),
            Some(json!({
                "card_type": "text_notice",
                "main_title": {"title": "Flash sale"},
                "sub_title_text": "Starts at 8pm",
                "jump_list": [{"type": 1, "title": "Open", "url": "https://x.example/o"}],
                "card_action": {"type": 1, "url": "https://x.example/s"},
            }))
        );
        // Without a URL the first button is the click action.
        let buttons_only = card("T", "", None, &[("Go", "https://x.example/g")]);
        let built = text_notice_card(&buttons_only).unwrap();
        assert_eq!(built["card_action"]["url"], "https://x.example/g");
        assert!(built.get("sub_title_text").is_none());
    }

    #[test]
    fn a_card_that_does_not_fit_is_not_cut() {
        let url = Some("https://x.example");
        assert!(text_notice_card(&card(&"标".repeat(27), "x", url, &[])).is_none());
        assert!(text_notice_card(&card("t", &"字".repeat(113), url, &[])).is_none());
        assert!(text_notice_card(&card("t", "x", None, &[])).is_none());
        let four = [("a", "u"), ("b", "u"), ("c", "u"), ("d", "u")];
        assert!(text_notice_card(&card("t", "x", url, &four)).is_none());
        assert!(text_notice_card(&card("t", "x", url, &[(&"b".repeat(14), "u")])).is_none());
        assert!(text_notice_card(&card(&"标".repeat(26), &"字".repeat(112), url, &[])).is_some());
    }

    #[test]
    fn news_needs_a_url_no_buttons_and_the_article_limits() {
        let mut link = card(
            "",
            "Title line\nthe description",
            Some("https://x.example/n"),
            &[],
        );
        link.format = Format::Link;
        assert_eq!(
            news_card(&link),
            Some(json!({"articles": [{
                "title": "Title line",
                "description": "the description",
                "url": "https://x.example/n",
            }]}))
        );
        link.title = Some("t".repeat(ARTICLE_TITLE_BYTES + 1));
        assert!(news_card(&link).is_none());
        link.title = Some("t".into());
        link.text = "d".repeat(ARTICLE_DESCRIPTION_BYTES + 1);
        assert!(news_card(&link).is_none());
        link.text = "d".into();
        link.buttons.push(Button {
            text: "b".into(),
            url: "u".into(),
        });
        assert!(news_card(&link).is_none());
        link.buttons.clear();
        link.url = None;
        assert!(news_card(&link).is_none());
    }
}

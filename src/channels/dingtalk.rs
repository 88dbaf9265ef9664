//! What DingTalk's two outbound adapters share: the custom-robot signature, the
//! platform-wide error codes every `oapi` call can answer, the hosts, bounded reading of
//! JSON answers, and DingTalk's day (quotas reset at midnight Beijing time).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::ToSpan as _;
use sha2::Sha256;

use super::Verdict;
use crate::clock::UnixMillis;

pub const OAPI_BASE_URL: &str = "https://oapi.dingtalk.com";
pub const API_BASE_URL: &str = "https://api.dingtalk.com";

/// The most of an answer we buffer to parse it. `getsendresult` for a task of 100 users
/// is a few KiB; anything far larger is not a DingTalk answer.
pub const ANSWER_LIMIT: usize = 256 * 1024;

/// How long DingTalk throttles a custom robot that sent its 21st message in a minute.
pub const ROBOT_THROTTLE: Duration = Duration::from_secs(10 * 60);
/// Waits for per-second and per-minute API limits (90018 / 90002 / 90005 / 90006 / QPM).
pub const SHORT_THROTTLE: Duration = Duration::from_secs(60);

/// DingTalk's quotas are per calendar day in China (UTC+8, no daylight saving).
const BEIJING_OFFSET_MS: i64 = 8 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// `base64(HmacSHA256(key = secret, message = timestamp_ms + "\n" + secret))`, the custom
/// robot's `sign` before URL-encoding (the HMAC key is the secret; Feishu's bot signing,
/// often copied from here, has key and message the other way round). `None` only if the
/// HMAC cannot be keyed, which HMAC-SHA256 never refuses.
pub fn robot_sign(secret: &str, timestamp_ms: i64) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The wait until DingTalk's next day starts (midnight Beijing time), when per-user daily
/// caps and the "same content once a day" filter reset.
pub fn until_next_day(now_ms: UnixMillis) -> Duration {
    let into_day = now_ms.saturating_add(BEIJING_OFFSET_MS).rem_euclid(DAY_MS);
    millis_to_duration(DAY_MS - into_day)
}

/// The wait until the first day of next month, Beijing time, when the organisation's
/// monthly API call quota (90020) resets.
pub fn until_next_month(now_ms: UnixMillis) -> Duration {
    let local = now_ms.saturating_add(BEIJING_OFFSET_MS);
    let Ok(instant) = jiff::Timestamp::from_millisecond(local) else {
        return Duration::from_secs(31 * 24 * 60 * 60);
    };
    let date = instant.to_zoned(jiff::tz::TimeZone::UTC).date();
    let next = date
        .first_of_month()
        .checked_add(1.months())
        .ok()
        .and_then(|first| first.to_zoned(jiff::tz::TimeZone::UTC).ok());
    match next {
        Some(first) => millis_to_duration(first.timestamp().as_millisecond() - local),
        None => Duration::from_secs(31 * 24 * 60 * 60),
    }
}

fn millis_to_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Codes any `oapi.dingtalk.com` API can answer, whatever it does: platform throttling,
/// the monthly quota and system busy. `None` for codes the caller's own table handles.
pub fn platform_verdict(errcode: i64, now_ms: UnixMillis) -> Option<Verdict> {
    let verdict = match errcode {
        // System busy.
        -1 => Verdict::Retryable { after: None },
        // 90002: global per-API limit across tenants; 90005 / 90006: per-minute limits per
        // organisation / app key; 90018 / 90019: per-second limits per app key / ISV.
        90002 | 90005 | 90006 | 90018 | 90019 => Verdict::RateLimited {
            wait: SHORT_THROTTLE,
        },
        // The organisation's monthly API call quota is spent; nothing succeeds before the
        // month turns.
        90020 => Verdict::RateLimited {
            wait: until_next_month(now_ms),
        },
        _ => return None,
    };
    Some(verdict)
}

/// Reads at most [`ANSWER_LIMIT`] bytes of a provider's answer.
pub async fn read_answer(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut collected = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                collected.extend_from_slice(&chunk);
                if collected.len() > ANSWER_LIMIT {
                    return Err(format!("the answer is larger than {ANSWER_LIMIT} bytes"));
                }
            }
            Ok(None) => return Ok(collected),
            // The error's text can hold the URL, which carries the access token.
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                return Err(format!("reading the answer {kind}"));
            }
        }
    }
}

/// A string list field that DingTalk may send as a JSON array or, in older answers, as one
/// comma-separated string. Anything else is empty.
pub fn id_list(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(number) => Some(number.to_string()),
                _ => None,
            })
            .collect(),
        Some(serde_json::Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_robot_signature_matches_the_published_vectors() {
        // [vec dingtalk-01] (computed by the PyPI DingtalkChatbot client itself). The
        // vector's `string_to_sign` shows the newline escaped; the signed text has a real
        // newline, and the key is the secret.
        let secret = format!("SEC{}", "0".repeat(63));
        assert_eq!(
            robot_sign(&secret, 1_700_000_000_123).as_deref(),
            Some("DAvf3Gum1MDI0o8Hq8O8evdgwLHlrdHtWnU0sEP7V1M=")
        );
        // [vec dingtalk-03] (the secret of DingTalk's doc sample).
        assert_eq!(
            robot_sign("this is secret", 1_577_262_236_757).as_deref(),
            Some("hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=")
        );
    }

    #[test]
    fn the_inbound_callback_uses_the_same_recipe() {
        // [vec dingtalk-02]: the robot callback header sign is the same HMAC (not
        // URL-encoded), so one function serves as a cross-check of the recipe.
        assert_eq!(
            robot_sign(
                "appSecretForRobot_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
                1_700_000_000_456
            )
            .as_deref(),
            Some("3eZXcQssMC0S3cnJAxdvapFWiHwj6tgIawoCci9RYnw=")
        );
    }

    #[test]
    fn days_and_months_turn_at_midnight_in_beijing() {
        // 2023-11-14T22:13:20Z is 06:13:20 on the 15th in Beijing.
        let now = 1_700_000_000_000;
        assert_eq!(
            until_next_day(now),
            Duration::from_secs(17 * 3600 + 46 * 60 + 40)
        );
        // 15:59:59.999Z on the 14th is the last millisecond of the 14th in Beijing.
        assert_eq!(until_next_day(1_699_977_599_999), Duration::from_millis(1));
        // 2023-12-01T00:00 Beijing is 2023-11-30T16:00Z = 1701360000000.
        assert_eq!(
            until_next_month(now),
            Duration::from_millis(1_701_360_000_000 - now as u64)
        );
        // December rolls over into January.
        let december = 1_702_000_000_000; // 2023-12-08
        assert_eq!(
            until_next_month(december),
            Duration::from_millis(1_704_038_400_000 - december as u64)
        );
    }

    #[test]
    fn platform_codes_are_throttles_or_busy() {
        assert_eq!(
            platform_verdict(-1, 0),
            Some(Verdict::Retryable { after: None })
        );
        for code in [90002, 90005, 90006, 90018, 90019] {
            assert_eq!(
                platform_verdict(code, 0),
                Some(Verdict::RateLimited {
                    wait: SHORT_THROTTLE
                })
            );
        }
        assert_eq!(
            platform_verdict(90020, 1_700_000_000_000),
            Some(Verdict::RateLimited {
                wait: until_next_month(1_700_000_000_000)
            })
        );
        assert_eq!(platform_verdict(130101, 0), None);
    }

    #[test]
    fn id_lists_accept_arrays_and_comma_strings() {
        assert_eq!(id_list(Some(&json!(["a", 7, null]))), vec!["a", "7"]);
        assert_eq!(id_list(Some(&json!("a, b,,"))), vec!["a", "b"]);
        assert!(id_list(Some(&json!({"a": 1}))).is_empty());
        assert!(id_list(None).is_empty());
    }

    proptest! {
        #[test]
        fn waits_never_panic_and_stay_within_their_period(now in any::<i64>()) {
            prop_assert!(until_next_day(now) <= Duration::from_millis(DAY_MS as u64));
            prop_assert!(until_next_month(now) <= Duration::from_secs(31 * 24 * 3600));
        }
    }
}

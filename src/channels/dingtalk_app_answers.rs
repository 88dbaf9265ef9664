//! How DingTalk's app APIs answer, as verdicts: the `oapi` errcode table (gettoken,
//! asyncsend_v2, getsendresult), the v1.0 error table (accessToken, batchSend), and the
//! per-user lists that say who was filtered, throttled or unknown although the call
//! succeeded.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::channels::dingtalk::{
    SHORT_THROTTLE, id_list, platform_verdict, until_next_day, until_next_month,
};
use crate::channels::{SendResult, Verdict};
use crate::clock::UnixMillis;

/// How long a user in `flowControlledStaffIdList` is left alone. DingTalk does not publish
/// the robot's per-user limits [unverified]; an hour keeps a ladder moving without
/// hammering the user.
pub(super) const ROBOT_FLOW_CONTROL_WAIT: Duration = Duration::from_secs(60 * 60);

/// What happened to one user of an accepted task or call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fate {
    Read,
    Unread,
    NotDelivered(Verdict, String),
}

impl Fate {
    /// The user's result; `reference` is the task id or processQueryKey.
    pub(super) fn into_result(self, reference: &str) -> SendResult {
        match self {
            Fate::Read => {
                SendResult::delivered(Some(200), format!("delivered and read ({reference})"))
            }
            Fate::Unread => {
                SendResult::delivered(Some(200), format!("delivered, not read yet ({reference})"))
            }
            Fate::NotDelivered(verdict, why) => {
                SendResult::new(verdict, Some(200), format!("{why} ({reference})"))
            }
        }
    }
}

/// The legacy token was refused as expired or invalid: fetch another and try once more
/// [unverified codes: 40014 invalid access_token, 42001 expired].
pub(super) fn legacy_token_expired(errcode: i64) -> bool {
    matches!(errcode, 40014 | 42001)
}

/// The v1.0 API refuses an expired token with HTTP 401 `InvalidAuthentication` [obs].
pub(super) fn v1_token_expired(status: u16, body: &[u8]) -> bool {
    status == 401
        || v1_error(body)
            .is_some_and(|(code, _)| code.eq_ignore_ascii_case("InvalidAuthentication"))
}

/// Classifies a failed `oapi` call (errcode in a 200, or an HTTP error).
pub(super) fn classify_oapi(
    status: u16,
    wait: Option<Duration>,
    body: &[u8],
    now_ms: UnixMillis,
) -> SendResult {
    let errcode = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| value.get("errcode").and_then(Value::as_i64));
    let verdict = match (status, errcode) {
        (429, _) => Verdict::RateLimited {
            wait: wait.unwrap_or(SHORT_THROTTLE),
        },
        (408 | 500..=599, _) => Verdict::Retryable { after: wait },
        (200..=299 | 400..=499, Some(0)) => Verdict::Delivered,
        (200..=299 | 400..=499, Some(code)) => oapi_errcode_verdict(code, now_ms),
        (200..=299, None) => Verdict::Retryable { after: wait },
        (401 | 403 | 404, None) => Verdict::AccountDisabled,
        _ => Verdict::ContentBlocked,
    };
    SendResult::new(verdict, Some(status), String::from_utf8_lossy(body))
}

fn oapi_errcode_verdict(code: i64, now_ms: UnixMillis) -> Verdict {
    if let Some(verdict) = platform_verdict(code, now_ms) {
        return verdict;
    }
    match code {
        // Still refused after a fresh token: the credentials or the app are at fault.
        40014 | 42001 => Verdict::AccountDisabled,
        // Bad app key / secret, no permission for the API, server IP outside the app's
        // whitelist [unverified codes].
        40089 | 60011 | 60020 => Verdict::AccountDisabled,
        // Empty recipient list: this request as written.
        1430000 => Verdict::ContentBlocked,
        _ if is_flow_control_code(code) => flow_control_verdict(code, now_ms),
        _ => Verdict::ContentBlocked,
    }
}

/// Work-notification flow-control codes, as errcode or in `forbidden_list[].code`.
fn is_flow_control_code(code: i64) -> bool {
    matches!(code, 143103..=143106 | 143203..=143206 | 1430002..=1430004)
}

/// What a flow-control code means for the user it names.
fn flow_control_verdict(code: i64, now_ms: UnixMillis) -> Verdict {
    match code {
        // Recipients per minute of the app (internal / ISV) or of the organisation;
        // 1430003 is DingTalk's system protection.
        143103 | 143203 | 143104 | 143204 | 1430003 => Verdict::RateLimited {
            wait: SHORT_THROTTLE,
        },
        // 1430002: prohibited content.
        1430002 => Verdict::ContentBlocked,
        // 1430004: the recipient is protected from messages (高管保护).
        1430004 => Verdict::RecipientInvalid,
        // 143105 / 143205: the user's messages for today are used up (500 internal, 100
        // ISV); 143106 / 143206: this content already went to the user today. Both reset
        // at midnight, and so does any other flow-control rule DingTalk lists.
        _ => Verdict::RateLimited {
            wait: until_next_day(now_ms),
        },
    }
}

fn flow_control_reason(code: i64) -> &'static str {
    match code {
        143103 | 143203 => "over the app's recipients per minute",
        143104 | 143204 => "over the organisation's recipients per minute",
        143105 | 143205 => "over the messages this user may get from the app today",
        143106 | 143206 => "this content already went to this user today",
        1430002 => "prohibited content",
        1430003 => "DingTalk's system protection",
        1430004 => "the user is protected from messages",
        _ => "flow control",
    }
}

/// Per-user fates from `getsendresult`'s `send_result`. Later lists override earlier
/// ones: a user named both read and invalid is invalid.
pub(super) fn fates_from_send_result(
    send_result: Option<&Value>,
    now_ms: UnixMillis,
) -> HashMap<String, Fate> {
    let mut fates = HashMap::new();
    let Some(result) = send_result else {
        return fates;
    };
    let mut mark = |users: Vec<String>, fate: Fate| {
        for user in users {
            fates.insert(user, fate.clone());
        }
    };
    mark(id_list(result.get("read_user_id_list")), Fate::Read);
    mark(id_list(result.get("unread_user_id_list")), Fate::Unread);
    mark(
        id_list(result.get("failed_user_id_list")),
        Fate::NotDelivered(
            Verdict::RecipientInvalid,
            "DingTalk could not deliver to this user (failed_user_id_list)".into(),
        ),
    );
    // Filtered by flow control: the same content twice in a day, or over the daily
    // messages per user. Both reset at midnight.
    mark(
        id_list(result.get("forbidden_user_id_list")),
        Fate::NotDelivered(
            Verdict::RateLimited {
                wait: until_next_day(now_ms),
            },
            "DingTalk filtered this user (forbidden_user_id_list: same content today or \
             daily limit reached)"
                .into(),
        ),
    );
    if let Some(Value::Array(entries)) = result.get("forbidden_list") {
        for entry in entries {
            let Some(user) = entry.get("userid").and_then(Value::as_str) else {
                continue;
            };
            let code = match entry.get("code") {
                Some(Value::String(text)) => text.trim().parse::<i64>().ok(),
                Some(Value::Number(number)) => number.as_i64(),
                _ => None,
            };
            let count = entry.get("count").and_then(Value::as_i64);
            let fate = match code {
                Some(code) => {
                    let threshold = count.map(|n| format!(", limit {n}")).unwrap_or_default();
                    Fate::NotDelivered(
                        flow_control_verdict(code, now_ms),
                        format!(
                            "DingTalk filtered this user: {} (code {code}{threshold})",
                            flow_control_reason(code)
                        ),
                    )
                }
                None => Fate::NotDelivered(
                    Verdict::RateLimited {
                        wait: until_next_day(now_ms),
                    },
                    "DingTalk filtered this user (forbidden_list)".into(),
                ),
            };
            mark(vec![user.to_string()], fate);
        }
    }
    mark(
        id_list(result.get("invalid_user_id_list")),
        Fate::NotDelivered(
            Verdict::RecipientInvalid,
            "not a user of this organisation (invalid_user_id_list)".into(),
        ),
    );
    fates
}

/// Per-user fates from a successful `batchSend` answer; users not named were sent to.
pub(super) fn fates_from_batch_send(answer: &Value) -> HashMap<String, Fate> {
    let mut fates = HashMap::new();
    let lists = [
        (
            "flowControlledStaffIdList",
            Verdict::RateLimited {
                wait: ROBOT_FLOW_CONTROL_WAIT,
            },
            "DingTalk throttled messages to this user (flowControlledStaffIdList); not sent",
        ),
        // A newer field whose meaning DingTalk does not document [sdk]; the users in it
        // did not get the message.
        (
            "filteredStaffIdList",
            Verdict::RecipientInvalid,
            "DingTalk filtered this user (filteredStaffIdList); not sent",
        ),
        (
            "invalidStaffIdList",
            Verdict::RecipientInvalid,
            "not a user the robot can reach (invalidStaffIdList)",
        ),
    ];
    for (field, verdict, why) in lists {
        for user in id_list(answer.get(field)) {
            fates.insert(user, Fate::NotDelivered(verdict.clone(), why.to_string()));
        }
    }
    fates
}

/// `(code, message)` of a v1.0 error body `{"code": "...", "message": "..."}`.
fn v1_error(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = value.get("code")?.as_str()?.to_string();
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some((code, message))
}

/// Classifies a v1.0 answer that is not a success (no `processQueryKey` / token).
pub(super) fn classify_v1(
    status: u16,
    wait: Option<Duration>,
    body: &[u8],
    now_ms: UnixMillis,
) -> SendResult {
    let code = v1_error(body).map(|(code, _)| code).unwrap_or_default();
    let lower = code.to_ascii_lowercase();
    let verdict = if status == 429 {
        Verdict::RateLimited {
            wait: wait.unwrap_or(SHORT_THROTTLE),
        }
    } else if status == 408 || status >= 500 {
        Verdict::Retryable { after: wait }
    } else if lower.contains("apicountlimitfororg") {
        // The organisation's monthly API call quota (the v1.0 form of 90020).
        Verdict::RateLimited {
            wait: until_next_month(now_ms),
        }
    } else if ["qpslimit", "throttl", "flowcontrol", "toofast", "too.fast"]
        .iter()
        .any(|hint| lower.contains(hint))
    {
        Verdict::RateLimited {
            wait: SHORT_THROTTLE,
        }
    } else if status == 401
        || status == 403
        || status == 404
        || lower == "invalidauthentication"
        || lower.starts_with("forbidden")
        // The app key does not own this robot, or the robot code is wrong.
        || lower.starts_with("invalidparameter.robotcode")
        // The robot was stopped (`bot.stopped`) [obs].
        || lower.contains("stopped")
    {
        Verdict::AccountDisabled
    } else if (200..300).contains(&status) {
        // A 2xx without the fields of a success does not prove delivery.
        Verdict::Retryable { after: wait }
    } else {
        // invalidParameter.msgParam / msgKey / userIds and the like: this request as
        // written.
        Verdict::ContentBlocked
    };
    SendResult::new(verdict, Some(status), String::from_utf8_lossy(body))
}

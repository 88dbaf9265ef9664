//! Tencent Cloud SMS: template SMS through `SendSms` (API 2021-01-11), signed with
//! TC3-HMAC-SHA256. One call carries up to 200 numbers; the answer has one status per
//! number, mapped back to each recipient.
//!
//! Template parameters: Tencent templates number their placeholders `{1}`, `{2}`, …, and
//! `TemplateParamSet` lists the values in that order. A message's `template_params` keys
//! are therefore the placeholder numbers: `{"1": "1234", "2": "5"}` fills `{1}` and `{2}`.
//! Keys must be exactly `1` to `n`; anything else is refused before sending, since a
//! gap or a name would shift every later value into the wrong placeholder.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::aliyun_sms::until_china_midnight;
use super::answer::{ANSWER_LIMIT, read_answer};
use super::http::{client, retry_after, transport_failure};
use super::{AddressKind, Audience, Channel, ContentError, Message, SendContext, SendResult};
use super::{DETAIL_LIMIT, Verdict, truncate};
use crate::clock::SharedClock;

/// Most numbers one `SendSms` call takes (`LimitExceeded.PhoneNumberCountLimit` beyond).
pub const MAX_NUMBERS_PER_CALL: usize = 200;
const SERVICE: &str = "sms";
const CONTENT_TYPE: &str = "application/json";
/// A frequency limit whose window the code does not name.
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// API-level throttling (`RequestLimitExceeded`) clears within seconds.
const THROTTLING_WAIT: Duration = Duration::from_secs(5);

/// The account settings from the rules.
#[derive(Debug, Clone)]
pub struct TencentSmsSettings {
    pub base_url: String,
    pub secret_id: String,
    pub sdk_app_id: String,
    pub sign_name: String,
    pub template_id: Option<String>,
    pub region: String,
}

pub struct TencentSmsChannel {
    settings: TencentSmsSettings,
    /// The `host` the signature covers: what the HTTP client sends for `base_url`.
    host: String,
    secret_key: SecretString,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for TencentSmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TencentSmsChannel")
            .field("settings", &self.settings)
            .field("secret_key", &"[redacted]")
            .finish()
    }
}

/// The pieces of a TC3-HMAC-SHA256 signature, kept for tests and error details.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tc3 {
    canonical_request: String,
    string_to_sign: String,
    authorization: String,
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Signs a POST of `body` to `/` of `host`, per Tencent Cloud's API 3.0 signature v3.
/// The date of the credential scope is the UTC date of `timestamp`.
fn tc3_sign(
    secret_id: &str,
    secret_key: &SecretString,
    host: &str,
    body: &[u8],
    timestamp: i64,
) -> Tc3 {
    let date = jiff::Timestamp::from_second(timestamp)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n\ncontent-type;host\n{}",
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{SERVICE}/tc3_request");
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = format!("TC3{}", secret_key.expose_secret());
    let k_date = hmac_sha256(key.as_bytes(), &date);
    let k_service = hmac_sha256(&k_date, SERVICE);
    let k_signing = hmac_sha256(&k_service, "tc3_request");
    let signature = hex::encode(hmac_sha256(&k_signing, &string_to_sign));
    let authorization = format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, \
         Signature={signature}"
    );
    Tc3 {
        canonical_request,
        string_to_sign,
        authorization,
    }
}

/// The values of `TemplateParamSet`, from keys `1`..`n` (see the module docs).
fn template_param_set(message: &Message) -> Result<Vec<String>, ContentError> {
    let count = message.template_params.len();
    (1..=count)
        .map(|position| {
            message
                .template_params
                .get(&position.to_string())
                .cloned()
                .ok_or_else(|| {
                    let keys: Vec<&str> =
                        message.template_params.keys().map(String::as_str).collect();
                    ContentError::new(format!(
                        "tencent_sms template parameters are positional: use the keys \"1\" to \
                         \"{count}\" for the template's {{1}} to {{{count}}}, not {keys:?}"
                    ))
                })
        })
        .collect()
}

/// The number as written, when it can be one: E.164 (`+8613800000000`) or a bare
/// mainland number.
fn tencent_number(recipient: &str) -> Option<&str> {
    let number = recipient.trim();
    let digits = number.strip_prefix('+').unwrap_or(number);
    let plausible = (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    plausible.then_some(number)
}

/// Tencent refuses a call that mixes mainland and international numbers
/// (`UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber`).
fn is_mainland(number: &str) -> bool {
    number.starts_with("+86") || number.starts_with("0086") || !number.starts_with(['+', '0'])
}

/// Whether the number Tencent reports is the one we sent: it answers in E.164, so a
/// bare mainland number comes back with `+86`.
fn same_number(sent: &str, reported: &str) -> bool {
    // Digits without the international prefix (`00` or `+`).
    let digits = |n: &str| -> String {
        let all: String = n.chars().filter(char::is_ascii_digit).collect();
        all.strip_prefix("00").map(str::to_string).unwrap_or(all)
    };
    let (sent, reported) = (digits(sent), digits(reported));
    !sent.is_empty()
        && (sent == reported || format!("86{sent}") == reported || sent == format!("86{reported}"))
}

impl TencentSmsChannel {
    pub fn new(
        settings: TencentSmsSettings,
        secret_key: SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(&settings.base_url)
            .map_err(|error| format!("`base_url` is not a URL: {error}"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err("`base_url` has no host".to_string()),
        };
        Ok(Self {
            settings,
            host,
            secret_key,
            client: client(timeout),
            clock,
        })
    }

    fn template_id<'m>(&'m self, message: &'m Message) -> Option<&'m str> {
        message
            .template_id
            .as_deref()
            .or(self.settings.template_id.as_deref())
            .filter(|id| !id.trim().is_empty())
    }

    /// One call for `numbers`: a result per number, in order.
    async fn call(
        &self,
        numbers: &[&str],
        message: &Message,
        template_id: &str,
    ) -> Vec<SendResult> {
        let mut body = serde_json::json!({
            "PhoneNumberSet": numbers,
            "SmsSdkAppId": self.settings.sdk_app_id,
            "SignName": self.settings.sign_name,
            "TemplateId": template_id,
        });
        if let Ok(params) = template_param_set(message)
            && !params.is_empty()
        {
            body["TemplateParamSet"] = serde_json::json!(params);
        }
        let body = body.to_string().into_bytes();
        let now_ms = self.clock.now_ms();
        let timestamp = now_ms.div_euclid(1000);
        let signed = tc3_sign(
            &self.settings.secret_id,
            &self.secret_key,
            &self.host,
            &body,
            timestamp,
        );
        let response = self
            .client
            .post(format!("{}/", self.settings.base_url))
            .header("content-type", CONTENT_TYPE)
            .header("authorization", signed.authorization)
            .header("x-tc-action", "SendSms")
            .header("x-tc-version", "2021-01-11")
            .header("x-tc-timestamp", timestamp.to_string())
            .header("x-tc-region", &self.settings.region)
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return vec![transport_failure(&error); numbers.len()],
        };
        let status = response.status().as_u16();
        let wait = retry_after(response.headers(), now_ms);
        let answer = read_answer(response, ANSWER_LIMIT).await;
        interpret(numbers, status, wait, answer.as_deref(), now_ms)
    }
}

#[async_trait::async_trait]
impl Channel for TencentSmsChannel {
    fn kind(&self) -> &'static str {
        "tencent_sms"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::Phone)
    }

    fn max_batch(&self) -> usize {
        MAX_NUMBERS_PER_CALL
    }

    /// Tencent sends only approved templates: the message supplies the positional
    /// parameters, and its text is not sent.
    fn check(&self, message: &Message) -> Result<(), ContentError> {
        if self.template_id(message).is_none() {
            return Err(ContentError::new(
                "tencent_sms sends approved templates only: set `template_id` on the channel \
                 or in the message",
            ));
        }
        template_param_set(message).map(|_| ())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let mut results = self.send_batch(std::slice::from_ref(ctx), message).await;
        results.pop().unwrap_or_else(|| {
            SendResult::new(Verdict::Retryable { after: None }, None, "no result")
        })
    }

    async fn send_batch(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        let template_id = match (self.check(message), self.template_id(message)) {
            (Ok(()), Some(id)) => id.to_string(),
            (Err(error), _) => {
                return batch
                    .iter()
                    .map(|_| SendResult::unsendable(&error))
                    .collect();
            }
            (Ok(()), None) => {
                let error = ContentError::new("no template id");
                return batch
                    .iter()
                    .map(|_| SendResult::unsendable(&error))
                    .collect();
            }
        };
        let mut results: Vec<Option<SendResult>> = vec![None; batch.len()];
        let mut mainland: Vec<(usize, &str)> = Vec::new();
        let mut international: Vec<(usize, &str)> = Vec::new();
        for (index, ctx) in batch.iter().enumerate() {
            match tencent_number(ctx.recipient) {
                Some(number) if is_mainland(number) => mainland.push((index, number)),
                Some(number) => international.push((index, number)),
                None => {
                    results[index] = Some(SendResult::new(
                        Verdict::RecipientInvalid,
                        None,
                        format!("`{}` is not a phone number", truncate(ctx.recipient, 64)),
                    ));
                }
            }
        }
        for group in [mainland, international] {
            for chunk in group.chunks(MAX_NUMBERS_PER_CALL) {
                let numbers: Vec<&str> = chunk.iter().map(|(_, number)| *number).collect();
                let answers = self.call(&numbers, message, &template_id).await;
                for ((index, _), result) in chunk.iter().zip(answers) {
                    results[*index] = Some(result);
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    SendResult::new(Verdict::Retryable { after: None }, None, "not sent")
                })
            })
            .collect()
    }
}

/// Maps an answer back to each number sent: a request-level `Error` applies to all, a
/// `SendStatusSet` entry to its own number. Tencent answers HTTP 200 either way.
fn interpret(
    numbers: &[&str],
    status: u16,
    wait: Option<Duration>,
    answer: Option<&[u8]>,
    now_ms: i64,
) -> Vec<SendResult> {
    let json: Option<serde_json::Value> =
        answer.and_then(|bytes| serde_json::from_slice(bytes).ok());
    let response = json.as_ref().map(|value| &value["Response"]);
    let request_id = response
        .and_then(|r| r["RequestId"].as_str())
        .unwrap_or_default();
    let whole_call = |verdict: Verdict, detail: String| {
        vec![SendResult::new(verdict, Some(status), detail); numbers.len()]
    };
    let Some(response) = response.filter(|r| r.is_object()) else {
        let detail = answer
            .map(|bytes| truncate(&String::from_utf8_lossy(bytes), DETAIL_LIMIT))
            .unwrap_or_else(|| "unreadable answer".to_string());
        let verdict = match status {
            429 => Verdict::RateLimited {
                wait: wait.unwrap_or(THROTTLING_WAIT),
            },
            400..=499 => Verdict::ContentBlocked,
            // No readable answer: the call may not have been processed.
            _ => Verdict::Retryable { after: wait },
        };
        return whole_call(verdict, detail);
    };
    if let Some(error) = response.get("Error") {
        let code = error["Code"].as_str().unwrap_or_default();
        let text = error["Message"].as_str().unwrap_or_default();
        return whole_call(
            classify(code, now_ms),
            format!("{code}: {text} (RequestId {request_id})"),
        );
    }
    let mut statuses: Vec<Option<&serde_json::Value>> = response["SendStatusSet"]
        .as_array()
        .map(|set| set.iter().map(Some).collect())
        .unwrap_or_default();
    numbers
        .iter()
        .map(|number| {
            // Each status is used once, so a number sent twice in one call maps to two.
            let found = statuses.iter_mut().find(|slot| {
                slot.is_some_and(|s| {
                    same_number(number, s["PhoneNumber"].as_str().unwrap_or_default())
                })
            });
            let Some(entry) = found.and_then(Option::take) else {
                return SendResult::new(
                    Verdict::Retryable { after: None },
                    Some(status),
                    format!("the answer has no status for this number (RequestId {request_id})"),
                );
            };
            let code = entry["Code"].as_str().unwrap_or_default();
            let text = entry["Message"].as_str().unwrap_or_default();
            let result = SendResult::new(
                classify(code, now_ms),
                Some(status),
                format!("{code}: {text} (RequestId {request_id})"),
            );
            match entry["SerialNo"]
                .as_str()
                .filter(|s| !s.is_empty() && code == "Ok")
            {
                Some(serial) => result.with_ref(serial),
                None => result,
            }
        })
        .collect()
}

/// Tencent's codes, per number (`SendStatusSet[].Code`) or for the call (`Error.Code`):
/// protocols.md 8.2 and section 10, with the names Tencent's error list gives.
fn classify(code: &str, now_ms: i64) -> Verdict {
    match code {
        "Ok" => Verdict::Delivered,
        "LimitExceeded.PhoneNumberThirtySecondLimit" => Verdict::RateLimited {
            wait: Duration::from_secs(30),
        },
        "LimitExceeded.PhoneNumberOneHourLimit" => Verdict::RateLimited {
            wait: Duration::from_secs(3600),
        },
        "LimitExceeded.PhoneNumberDailyLimit"
        | "LimitExceeded.PhoneNumberSameContentDailyLimit"
        | "LimitExceeded.DailyLimit"
        | "LimitExceeded.AppDailyLimit"
        | "LimitExceeded.AppGlobalDailyLimit"
        | "LimitExceeded.AppMainlandChinaDailyLimit"
        | "LimitExceeded.AppCountryOrRegionDailyLimit" => Verdict::RateLimited {
            wait: until_china_midnight(now_ms),
        },
        // More numbers than one call takes: the request itself is wrong, not the pace.
        "LimitExceeded.PhoneNumberCountLimit" => Verdict::ContentBlocked,
        "LimitExceeded.AppCountryOrRegionInBlacklist" => Verdict::RecipientInvalid,
        code if code.starts_with("LimitExceeded.") => Verdict::RateLimited {
            wait: DEFAULT_LIMIT_WAIT,
        },
        "RequestLimitExceeded" => Verdict::RateLimited {
            wait: THROTTLING_WAIT,
        },
        "InvalidParameterValue.IncorrectPhoneNumber" | "UnsupportedOperation.UnsupportedRegion" => {
            Verdict::RecipientInvalid
        }
        code if code.ends_with("PhoneNumberInBlacklist") => Verdict::RecipientInvalid,
        "FailedOperation.ContainSensitiveWord"
        | "FailedOperation.SignatureIncorrectOrUnapproved"
        | "FailedOperation.TemplateIncorrectOrUnapproved"
        | "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
        | "FailedOperation.MissingSignature"
        | "InvalidParameterValue.ContentLengthLimit"
        | "InvalidParameterValue.TemplateParameterFormatError"
        | "InvalidParameterValue.TemplateParameterLengthLimit"
        | "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"
        | "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber" => {
            Verdict::ContentBlocked
        }
        code if code.starts_with("AuthFailure.")
            || code.starts_with("UnauthorizedOperation.")
            || code.contains("InsufficientBalance") =>
        {
            Verdict::AccountDisabled
        }
        code if code.starts_with("InternalError") || code.starts_with("ResourceUnavailable") => {
            Verdict::Retryable { after: None }
        }
        // Any other code refuses the request as written.
        _ => Verdict::ContentBlocked,
    }
}

#[cfg(test)]
#[path = "tencent_sms_tests.rs"]
mod tests;

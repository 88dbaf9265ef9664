//! Aliyun (Alibaba Cloud) SMS: template SMS through the `SendSms` RPC action, signed with
//! the RPC signature v1 (HMAC-SHA1 over the sorted, specially percent-encoded
//! parameters). One call carries up to 1000 numbers that share one template and one set
//! of parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;

use super::answer::{ANSWER_LIMIT, read_answer};
use super::http::{client, retry_after, transport_failure};
use super::{AddressKind, Audience, Channel, ContentError, Message, SendContext, SendResult};
use super::{DETAIL_LIMIT, Verdict, truncate};
use crate::clock::SharedClock;

/// Most numbers one `SendSms` call takes.
pub const MAX_NUMBERS_PER_CALL: usize = 1000;
/// Flow control whose window the answer does not name.
const DEFAULT_FLOW_CONTROL_WAIT: Duration = Duration::from_secs(60);
/// API-level throttling (`Throttling.User`) clears within seconds.
const THROTTLING_WAIT: Duration = Duration::from_secs(5);

/// RFC 3986 unreserved characters stay; everything else is `%XX` in upper-case hex, so a
/// space is `%20` (not `+`), `*` is `%2A` and `~` stays, as Aliyun's signer requires.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The account settings from the rules.
#[derive(Debug, Clone)]
pub struct AliyunSmsSettings {
    pub base_url: String,
    pub access_key_id: String,
    pub sign_name: String,
    pub template_code: Option<String>,
    pub region_id: String,
}

pub struct AliyunSmsChannel {
    settings: AliyunSmsSettings,
    access_key_secret: SecretString,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for AliyunSmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunSmsChannel")
            .field("settings", &self.settings)
            .field("access_key_secret", &"[redacted]")
            .finish()
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// `METHOD & enc("/") & enc(sorted enc(k)=enc(v) joined by &)`.
fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    let canonical = canonical_query(params);
    format!("{method}&{}&{}", encode("/"), encode(&canonical))
}

fn canonical_query(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// base64 HMAC-SHA1 keyed with the secret followed by `&` (the empty token secret).
fn sign(access_key_secret: &SecretString, string_to_sign: &str) -> String {
    let key = format!("{}&", access_key_secret.expose_secret());
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The number as Aliyun takes it: digits only, the country code first for numbers
/// outside the mainland. Aliyun documents `+86`, `0086`, `86` or no prefix for mainland
/// numbers and "country code + number" elsewhere, so dropping the `+` of E.164 fits both.
fn aliyun_number(recipient: &str) -> Option<String> {
    let digits = recipient.trim().trim_start_matches('+');
    let plausible = (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    plausible.then(|| digits.to_string())
}

impl AliyunSmsChannel {
    pub fn new(
        settings: AliyunSmsSettings,
        access_key_secret: SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            settings,
            access_key_secret,
            client: client(timeout),
            clock,
        }
    }

    fn template_code<'m>(&'m self, message: &'m Message) -> Option<&'m str> {
        message
            .template_id
            .as_deref()
            .or(self.settings.template_code.as_deref())
            .filter(|code| !code.trim().is_empty())
    }

    /// The signed form body of one `SendSms` call.
    fn request_body(&self, numbers: &[String], message: &Message, template_code: &str) -> String {
        let now_ms = self.clock.now_ms();
        let timestamp = jiff::Timestamp::from_millisecond(now_ms)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let mut params: BTreeMap<String, String> = [
            ("AccessKeyId", self.settings.access_key_id.clone()),
            ("Action", "SendSms".to_string()),
            ("Format", "JSON".to_string()),
            ("RegionId", self.settings.region_id.clone()),
            ("SignatureMethod", "HMAC-SHA1".to_string()),
            // Aliyun refuses a nonce it has seen (SignatureNonceUsed), so every call,
            // retries included, gets a fresh one.
            ("SignatureNonce", uuid::Uuid::new_v4().to_string()),
            ("SignatureVersion", "1.0".to_string()),
            ("Timestamp", timestamp),
            ("Version", "2017-05-25".to_string()),
            ("PhoneNumbers", numbers.join(",")),
            ("SignName", self.settings.sign_name.clone()),
            ("TemplateCode", template_code.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
        if !message.template_params.is_empty()
            && let Ok(json) = serde_json::to_string(&message.template_params)
        {
            params.insert("TemplateParam".to_string(), json);
        }
        // Every parameter travels in the POST body and is signed with the method POST,
        // as the official core SDK does for body parameters; 1000 numbers would not fit
        // in a URL.
        let signature = sign(&self.access_key_secret, &string_to_sign("POST", &params));
        format!(
            "{}&Signature={}",
            canonical_query(&params),
            encode(&signature)
        )
    }

    async fn call(&self, numbers: &[String], message: &Message, template_code: &str) -> SendResult {
        let body = self.request_body(numbers, message, template_code);
        let response = self
            .client
            .post(format!("{}/", self.settings.base_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return transport_failure(&error),
        };
        let status = response.status().as_u16();
        let now_ms = self.clock.now_ms();
        let wait = retry_after(response.headers(), now_ms);
        let answer = read_answer(response, ANSWER_LIMIT).await;
        interpret(status, wait, answer.as_deref(), now_ms)
    }
}

#[async_trait::async_trait]
impl Channel for AliyunSmsChannel {
    fn kind(&self) -> &'static str {
        "aliyun_sms"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::Phone)
    }

    fn max_batch(&self) -> usize {
        MAX_NUMBERS_PER_CALL
    }

    /// Aliyun sends only approved templates: the message supplies the template's
    /// parameters, and its text is not sent.
    fn check(&self, message: &Message) -> Result<(), ContentError> {
        if self.template_code(message).is_none() {
            return Err(ContentError::new(
                "aliyun_sms sends approved templates only: set `template_code` on the channel \
                 or `template_id` in the message",
            ));
        }
        Ok(())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let mut results = self.send_batch(std::slice::from_ref(ctx), message).await;
        results.pop().unwrap_or_else(|| {
            SendResult::new(Verdict::Retryable { after: None }, None, "no result")
        })
    }

    async fn send_batch(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        let template_code = match (self.check(message), self.template_code(message)) {
            (Ok(()), Some(code)) => code.to_string(),
            (Err(error), _) => {
                return batch
                    .iter()
                    .map(|_| SendResult::unsendable(&error))
                    .collect();
            }
            (Ok(()), None) => {
                let error = ContentError::new("no template code");
                return batch
                    .iter()
                    .map(|_| SendResult::unsendable(&error))
                    .collect();
            }
        };
        let mut results: Vec<Option<SendResult>> = batch
            .iter()
            .map(|ctx| match aliyun_number(ctx.recipient) {
                Some(_) => None,
                None => Some(SendResult::new(
                    Verdict::RecipientInvalid,
                    None,
                    format!("`{}` is not a phone number", truncate(ctx.recipient, 64)),
                )),
            })
            .collect();
        let sendable: Vec<(usize, String)> = batch
            .iter()
            .enumerate()
            .filter_map(|(index, ctx)| aliyun_number(ctx.recipient).map(|number| (index, number)))
            .collect();
        for chunk in sendable.chunks(MAX_NUMBERS_PER_CALL) {
            let numbers: Vec<String> = chunk.iter().map(|(_, number)| number.clone()).collect();
            // One answer covers the whole call: Aliyun reports no per-number outcome.
            let result = self.call(&numbers, message, &template_code).await;
            for (index, _) in chunk {
                results[*index] = Some(result.clone());
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

/// Turns an answer (`{"Code","Message","BizId","RequestId"}`) into a result.
fn interpret(
    status: u16,
    wait: Option<Duration>,
    answer: Option<&[u8]>,
    now_ms: i64,
) -> SendResult {
    let detail = answer
        .map(|bytes| truncate(&String::from_utf8_lossy(bytes), DETAIL_LIMIT))
        .unwrap_or_else(|| "unreadable answer".to_string());
    let json: Option<serde_json::Value> =
        answer.and_then(|bytes| serde_json::from_slice(bytes).ok());
    let field = |name: &str| {
        json.as_ref()
            .and_then(|value| value[name].as_str())
            .map(str::to_string)
    };
    let code = field("Code");
    let text = field("Message").unwrap_or_default();
    let verdict = classify(status, code.as_deref(), &text, wait, now_ms);
    let result = SendResult::new(verdict, Some(status), detail);
    match field("BizId").filter(|_| code.as_deref() == Some("OK")) {
        Some(biz_id) => result.with_ref(biz_id),
        None => result,
    }
}

/// Aliyun's codes (protocols.md 8.1 and section 10; names marked unverified there are
/// matched as documented). `OK` is the only success; HTTP 200 carries errors too.
fn classify(
    status: u16,
    code: Option<&str>,
    message: &str,
    retry_after: Option<Duration>,
    now_ms: i64,
) -> Verdict {
    let Some(code) = code else {
        return match status {
            429 => Verdict::RateLimited {
                wait: retry_after.unwrap_or(THROTTLING_WAIT),
            },
            // No JSON from the API or a proxy in front of it: the call may not have
            // been processed.
            500..=599 | 200..=299 => Verdict::Retryable { after: retry_after },
            _ => Verdict::ContentBlocked,
        };
    };
    match code {
        "OK" => Verdict::Delivered,
        "isv.BUSINESS_LIMIT_CONTROL" => Verdict::RateLimited {
            wait: flow_control_wait(message, now_ms),
        },
        "isv.DAY_LIMIT_CONTROL" => Verdict::RateLimited {
            wait: until_china_midnight(now_ms),
        },
        "Throttling" | "Throttling.User" | "Throttling.Api" => Verdict::RateLimited {
            wait: retry_after.unwrap_or(THROTTLING_WAIT),
        },
        "isv.MOBILE_NUMBER_ILLEGAL" | "isv.DOMESTIC_NUMBER_NOT_SUPPORTED" => {
            Verdict::RecipientInvalid
        }
        "isv.BLACK_KEY_CONTROL_LIMIT"
        | "isv.SMS_TEMPLATE_ILLEGAL"
        | "isv.SMS_SIGNATURE_ILLEGAL"
        | "isv.SMS_SIGN_ILLEGAL"
        | "isv.TEMPLATE_MISSING_PARAMETERS"
        | "isv.TEMPLATE_PARAMS_ILLEGAL"
        | "isv.INVALID_JSON_PARAM"
        | "isv.PARAM_LENGTH_LIMIT"
        | "isv.PARAM_NOT_SUPPORT_URL"
        | "isv.SMS_CONTENT_ILLEGAL"
        | "isv.MOBILE_COUNT_OVER_LIMIT"
        | "isv.INVALID_PARAMETERS" => Verdict::ContentBlocked,
        "isv.OUT_OF_SERVICE"
        | "isv.AMOUNT_NOT_ENOUGH"
        | "isv.ACCOUNT_NOT_EXISTS"
        | "isv.ACCOUNT_ABNORMAL"
        | "isv.DENY_IP_RANGE"
        | "isv.PRODUCT_UN_SUBSCRIPT"
        | "isv.PRODUCT_UNSUBSCRIBE"
        | "isp.RAM_PERMISSION_DENY"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "Forbidden.RAM"
        | "Forbidden.AccessKeyDisabled" => Verdict::AccountDisabled,
        code if code.starts_with("InvalidAccessKeyId") => Verdict::AccountDisabled,
        // A clock off by minutes or a reused nonce: the next attempt signs afresh.
        "InvalidTimeStamp.Expired" | "SignatureNonceUsed" => Verdict::Retryable { after: None },
        code if code.starts_with("isp.")
            || code == "ServiceUnavailable"
            || code == "InternalError" =>
        {
            Verdict::Retryable { after: retry_after }
        }
        _ if (500..=599).contains(&status) => Verdict::Retryable { after: retry_after },
        // Any other code refuses the request as written.
        _ => Verdict::ContentBlocked,
    }
}

/// `isv.BUSINESS_LIMIT_CONTROL` names its window in the message ("触发分钟级流控",
/// "触发小时级流控", "触发天级流控"): wait out that window.
fn flow_control_wait(message: &str, now_ms: i64) -> Duration {
    if message.contains("天级") || message.contains("日级") {
        until_china_midnight(now_ms)
    } else if message.contains("小时级") {
        Duration::from_secs(3600)
    } else {
        DEFAULT_FLOW_CONTROL_WAIT
    }
}

/// Daily quotas of the China SMS providers restart at midnight Beijing time (UTC+8, no
/// daylight saving) [unverified: calendar day rather than a rolling 24 hours].
pub(super) fn until_china_midnight(now_ms: i64) -> Duration {
    const DAY_MS: i64 = 86_400_000;
    const UTC_PLUS_8_MS: i64 = 8 * 3_600_000;
    let local = now_ms.saturating_add(UTC_PLUS_8_MS);
    let next_midnight = (local.div_euclid(DAY_MS) + 1).saturating_mul(DAY_MS);
    Duration::from_millis(u64::try_from(next_midnight - local).unwrap_or(0))
}

#[cfg(test)]
#[path = "aliyun_sms_tests.rs"]
mod tests;

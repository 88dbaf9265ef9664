//! Reads the SMS and e-mail channel kinds: `twilio_sms`, `aliyun_sms`, `tencent_sms`,
//! `smtp` and `sendgrid`.

use base64::Engine as _;
use p256::pkcs8::DecodePublicKey as _;

use super::accounts::{check_url, read_secret_env};
use crate::rules::model::{ChannelKind, SmtpTls};
use crate::rules::problem::{At, Problem};
use crate::rules::reader::Fields;

const TWILIO_BASE_URL: &str = "https://api.twilio.com";
const ALIYUN_SMS_BASE_URL: &str = "https://dysmsapi.aliyuncs.com";
const TENCENT_SMS_BASE_URL: &str = "https://sms.tencentcloudapi.com";
const SENDGRID_BASE_URL: &str = "https://api.sendgrid.com";

/// Twilio bills and counts in segments; its own recommendation is at most 10, and no
/// body longer than 1600 characters is accepted (24 UCS-2 segments).
const TWILIO_DEFAULT_MAX_SEGMENTS: usize = 10;
const TWILIO_MOST_SEGMENTS: i64 = 24;

pub(super) fn read_twilio_sms_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let base_url = base_url(fields, TWILIO_BASE_URL, problems);
    let account_sid = required(fields, "account_sid", problems)
        .and_then(|sid| twilio_sid(sid, "AC", "account_sid", problems));
    let auth_token = read_secret_env(fields, "auth_token_env", problems);
    let from = optional(fields, "from", problems);
    let messaging_service_sid = match optional(fields, "messaging_service_sid", problems) {
        Some(sid) => twilio_sid(sid, "MG", "messaging_service_sid", problems).map(Some),
        None => Some(None),
    };
    let status_callback_url = match fields.string("status_callback_url", problems) {
        Some(url) => check_url(url, problems).map(Some),
        None => Some(None),
    };
    let max_segments = match fields.integer("max_segments", problems) {
        Some(value) if (1..=TWILIO_MOST_SEGMENTS).contains(&value.value) => {
            usize::try_from(value.value).ok()
        }
        Some(value) => {
            problems.push(Problem::at(
                &value.pos,
                format!(
                    "`max_segments` must be between 1 and {TWILIO_MOST_SEGMENTS} (Twilio refuses \
                     bodies over 1600 characters)"
                ),
            ));
            None
        }
        None => Some(TWILIO_DEFAULT_MAX_SEGMENTS),
    };
    if from.is_none() && matches!(messaging_service_sid, Some(None)) {
        problems.push(Problem::at(
            fields.pos(),
            format!(
                "{} of kind `twilio_sms` needs `from` (the sending number) or \
                 `messaging_service_sid`",
                fields.what()
            ),
        ));
        return None;
    }
    Some(ChannelKind::TwilioSms {
        base_url: base_url?,
        account_sid: account_sid?,
        auth_token: auth_token?,
        from: from.map(|from| from.value),
        messaging_service_sid: messaging_service_sid?,
        status_callback_url: status_callback_url?,
        max_segments: max_segments?,
    })
}

pub(super) fn read_aliyun_sms_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let base_url = base_url(fields, ALIYUN_SMS_BASE_URL, problems);
    let access_key_id = required(fields, "access_key_id", problems);
    let access_key_secret = read_secret_env(fields, "access_key_secret_env", problems);
    let sign_name = required(fields, "sign_name", problems);
    let template_code = optional(fields, "template_code", problems);
    let region_id = optional(fields, "region_id", problems);
    Some(ChannelKind::AliyunSms {
        base_url: base_url?,
        access_key_id: access_key_id?.value,
        access_key_secret: access_key_secret?,
        sign_name: sign_name?.value,
        template_code: template_code.map(|code| code.value),
        region_id: region_id.map_or_else(|| "cn-hangzhou".to_string(), |region| region.value),
    })
}

pub(super) fn read_tencent_sms_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let base_url = base_url(fields, TENCENT_SMS_BASE_URL, problems);
    let secret_id = required(fields, "secret_id", problems);
    let secret_key = read_secret_env(fields, "secret_key_env", problems);
    let sdk_app_id =
        required(fields, "sdk_app_id", problems).and_then(|id| digits(id, "sdk_app_id", problems));
    let sign_name = required(fields, "sign_name", problems);
    let template_id = match optional(fields, "template_id", problems) {
        Some(id) => digits(id, "template_id", problems).map(Some),
        None => Some(None),
    };
    let region = optional(fields, "region", problems);
    Some(ChannelKind::TencentSms {
        base_url: base_url?,
        secret_id: secret_id?.value,
        secret_key: secret_key?,
        sdk_app_id: sdk_app_id?,
        sign_name: sign_name?.value,
        template_id: template_id?,
        region: region.map_or_else(|| "ap-guangzhou".to_string(), |region| region.value),
    })
}

pub(super) fn read_smtp_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let host = required(fields, "host", problems);
    let tls = match optional(fields, "tls", problems) {
        None => Some(SmtpTls::Starttls),
        Some(tls) => match tls.value.as_str() {
            "starttls" => Some(SmtpTls::Starttls),
            "implicit" => Some(SmtpTls::Implicit),
            "none" => Some(SmtpTls::None),
            other => {
                problems.push(Problem::at(
                    &tls.pos,
                    format!(
                        "`tls` must be \"starttls\" (port 587), \"implicit\" (port 465) or \
                         \"none\", found \"{other}\""
                    ),
                ));
                None
            }
        },
    };
    let port = match fields.integer("port", problems) {
        Some(port) => match u16::try_from(port.value) {
            Ok(value) if value > 0 => Some(value),
            _ => {
                problems.push(Problem::at(&port.pos, "`port` must be between 1 and 65535"));
                None
            }
        },
        None => tls.map(|tls| match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        }),
    };
    let username = optional(fields, "username", problems);
    let password = if fields.contains("password_env") {
        read_secret_env(fields, "password_env", problems).map(Some)
    } else {
        fields.item("password_env");
        Some(None)
    };
    let from = required(fields, "from", problems).and_then(|from| mailbox(from, problems));
    let (host, tls, port, password) = (host?, tls?, port?, password?);
    match (&username, &password) {
        (Some(_), None) | (None, Some(_)) => {
            problems.push(Problem::at(
                fields.pos(),
                format!(
                    "{} of kind `smtp` needs both `username` and `password_env`, or neither",
                    fields.what()
                ),
            ));
            return None;
        }
        (Some(user), Some(_)) if tls == SmtpTls::None && !is_loopback(&host.value) => {
            problems.push(Problem::at(
                &user.pos,
                "`tls = \"none\"` would send the password in clear text; use \"starttls\" or \
                 \"implicit\" (a server on this machine, such as localhost, is the one exception)",
            ));
            return None;
        }
        _ => {}
    }
    Some(ChannelKind::Smtp {
        host: host.value,
        port,
        tls,
        username: username.map(|user| user.value),
        password,
        from: from?,
    })
}

pub(super) fn read_sendgrid_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let base_url = base_url(fields, SENDGRID_BASE_URL, problems);
    let api_key = read_secret_env(fields, "api_key_env", problems);
    let from = required(fields, "from", problems).and_then(|from| mailbox(from, problems));
    let event_public_key = match optional(fields, "event_public_key", problems) {
        Some(key) if is_p256_public_key(&key.value) => Some(Some(key.value)),
        Some(key) => {
            problems.push(Problem::at(
                &key.pos,
                "`event_public_key` must be the verification key SendGrid shows for the signed \
                 Event Webhook: base64 of a P-256 public key (SPKI DER)",
            ));
            None
        }
        None => Some(None),
    };
    Some(ChannelKind::Sendgrid {
        base_url: base_url?,
        api_key: api_key?,
        from: from?,
        event_public_key: event_public_key?,
    })
}

/// A required string that is not blank, trimmed.
fn required(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<At<String>> {
    let value = fields.string(key, problems);
    let value = fields.require(value, key, problems)?;
    non_blank(value, key, fields.what(), problems)
}

/// An optional string; when present it must not be blank.
fn optional(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<At<String>> {
    let value = fields.string(key, problems)?;
    non_blank(value, key, fields.what(), problems)
}

fn non_blank(
    value: At<String>,
    key: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<At<String>> {
    let trimmed = value.value.trim();
    if trimmed.is_empty() {
        problems.push(Problem::at(
            &value.pos,
            format!("`{key}` in {what} must not be empty"),
        ));
        return None;
    }
    Some(At {
        value: trimmed.to_string(),
        pos: value.pos,
    })
}

/// The provider's API root unless the rules point elsewhere (a proxy, a test server).
fn base_url(
    fields: &mut Fields<'_, '_>,
    default: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match fields.string("base_url", problems) {
        Some(url) => check_url(url, problems).map(|url| url.trim_end_matches('/').to_string()),
        None if fields.contains("base_url") => None,
        None => Some(default.to_string()),
    }
}

/// Twilio SIDs are a two-letter type prefix and 32 hex digits; a typo here would only
/// surface as 20404 answers at send time.
fn twilio_sid(
    sid: At<String>,
    prefix: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let valid = sid.value.len() == 34
        && sid.value.starts_with(prefix)
        && sid.value[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        problems.push(Problem::at(
            &sid.pos,
            format!("`{key}` must be `{prefix}` followed by 32 hex digits, as the Twilio console shows it"),
        ));
        return None;
    }
    Some(sid.value)
}

fn digits(value: At<String>, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
    if !value.value.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(Problem::at(
            &value.pos,
            format!(
                "`{key}` must be the numeric id the Tencent Cloud SMS console shows, such as \
                 \"1400000000\""
            ),
        ));
        return None;
    }
    Some(value.value)
}

fn mailbox(from: At<String>, problems: &mut Vec<Problem>) -> Option<String> {
    match from.value.parse::<lettre::message::Mailbox>() {
        Ok(_) => Some(from.value),
        Err(error) => {
            problems.push(Problem::at(
                &from.pos,
                format!(
                    "`from` must be an e-mail address, optionally with a name \
                     (\"Campaigns <bot@example.com>\"): {error}"
                ),
            ));
            None
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `key` is a P-256 public key as SendGrid shows it (base64 SPKI DER; a PEM
/// wrapper is tolerated).
fn is_p256_public_key(key: &str) -> bool {
    let body: String = key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .flat_map(str::split_whitespace)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .is_some_and(|der| p256::PublicKey::from_public_key_der(&der).is_ok())
}

#[cfg(test)]
#[path = "sms_email_tests.rs"]
mod tests;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::clock::ManualClock;

const NOW_MS: i64 = 1_700_000_000_000;
const SECRET_ID: &str = "AKIDEXAMPLE0000000000000000000000000";
const SECRET_KEY: &str = "SECRETKEYEXAMPLE000000000000000000";

#[test]
fn the_sdk_vector_signs_identically() {
    // [vec tencent_sms-01]: the payload bytes exactly as the Python SDK sent them.
    let payload = r#"{"PhoneNumberSet": ["+8613800000000"], "SmsSdkAppId": "1400000000", "SignName": "\u817e\u8baf\u4e91", "TemplateId": "1234567", "TemplateParamSet": ["1234", "5"]}"#;
    let signed = tc3_sign(
        SECRET_ID,
        &SecretString::from(SECRET_KEY),
        "sms.tencentcloudapi.com",
        payload.as_bytes(),
        1_700_000_000,
    );
    assert_eq!(
        signed.canonical_request,
        "POST\n/\n\ncontent-type:application/json\nhost:sms.tencentcloudapi.com\n\ncontent-type;host\n7cd1dea60654579d3b7824ec62a94fe989ce3cf03bb066d468c8a7a01f6f5d5b"
    );
    assert_eq!(
        signed.string_to_sign,
        "TC3-HMAC-SHA256\n1700000000\n2023-11-14/sms/tc3_request\n4fd8e9b6dc31595fa00e7b3caedceeab3ed0a86115a8963bda0a473b3ffa0ad5"
    );
    assert_eq!(
        signed.authorization,
        "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE0000000000000000000000000/2023-11-14/sms/tc3_request, SignedHeaders=content-type;host, Signature=64cf7eedd11b0ad03fa338cbeacca72bca1fd7a2a93c45fb6ecc3887f3b9b6e8"
    );
}

#[test]
fn template_params_are_positional() {
    let with = |pairs: &[(&str, &str)]| Message {
        template_params: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Message::default()
    };
    // Keys sort as strings ("10" before "2"); positions do not.
    let many: Vec<(String, String)> = (1..=10).map(|i| (i.to_string(), format!("v{i}"))).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        template_param_set(&with(&many)).unwrap(),
        (1..=10).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        template_param_set(&with(&[])).unwrap(),
        Vec::<String>::new()
    );
    assert!(template_param_set(&with(&[("1", "a"), ("3", "c")])).is_err());
    let named = template_param_set(&with(&[("code", "1234")])).unwrap_err();
    assert!(named.to_string().contains("positional"), "{named}");
}

#[test]
fn numbers_are_matched_back_through_e164() {
    assert!(same_number("13800000000", "+8613800000000"));
    assert!(same_number("+8613800000000", "+8613800000000"));
    assert!(same_number("008613800000000", "+8613800000000"));
    assert!(!same_number("13800000000", "+8613800000001"));
    assert!(!same_number("", ""));
    assert!(is_mainland("+8613800000000") && is_mainland("13800000000"));
    assert!(!is_mainland("+85261234567") && !is_mainland("0085261234567"));
    assert_eq!(tencent_number(" +8613800000000 "), Some("+8613800000000"));
    assert_eq!(tencent_number("+86 138"), None);
}

#[test]
fn every_row_of_the_code_table() {
    let day_end = until_china_midnight(NOW_MS);
    let rows: &[(&str, Verdict)] = &[
        ("Ok", Verdict::Delivered),
        (
            "LimitExceeded.PhoneNumberThirtySecondLimit",
            Verdict::RateLimited {
                wait: Duration::from_secs(30),
            },
        ),
        (
            "LimitExceeded.PhoneNumberOneHourLimit",
            Verdict::RateLimited {
                wait: Duration::from_secs(3600),
            },
        ),
        (
            "LimitExceeded.PhoneNumberDailyLimit",
            Verdict::RateLimited { wait: day_end },
        ),
        (
            "LimitExceeded.PhoneNumberSameContentDailyLimit",
            Verdict::RateLimited { wait: day_end },
        ),
        (
            "LimitExceeded.AppDailyLimit",
            Verdict::RateLimited { wait: day_end },
        ),
        (
            "LimitExceeded.DeliveryFrequencyLimit",
            Verdict::RateLimited {
                wait: DEFAULT_LIMIT_WAIT,
            },
        ),
        (
            "LimitExceeded.PhoneNumberCountLimit",
            Verdict::ContentBlocked,
        ),
        (
            "RequestLimitExceeded",
            Verdict::RateLimited {
                wait: THROTTLING_WAIT,
            },
        ),
        (
            "InvalidParameterValue.IncorrectPhoneNumber",
            Verdict::RecipientInvalid,
        ),
        (
            "FailedOperation.PhoneNumberInBlacklist",
            Verdict::RecipientInvalid,
        ),
        (
            "LimitExceeded.AppCountryOrRegionInBlacklist",
            Verdict::RecipientInvalid,
        ),
        (
            "FailedOperation.ContainSensitiveWord",
            Verdict::ContentBlocked,
        ),
        (
            "FailedOperation.SignatureIncorrectOrUnapproved",
            Verdict::ContentBlocked,
        ),
        (
            "FailedOperation.TemplateIncorrectOrUnapproved",
            Verdict::ContentBlocked,
        ),
        (
            "InvalidParameterValue.TemplateParameterFormatError",
            Verdict::ContentBlocked,
        ),
        ("AuthFailure.SignatureFailure", Verdict::AccountDisabled),
        ("AuthFailure.SignatureExpire", Verdict::AccountDisabled),
        ("AuthFailure.SecretIdNotFound", Verdict::AccountDisabled),
        (
            "UnauthorizedOperation.SdkAppidIsDisabled",
            Verdict::AccountDisabled,
        ),
        (
            "UnauthorizedOperation.RequestIpNotInWhitelist",
            Verdict::AccountDisabled,
        ),
        (
            "FailedOperation.InsufficientBalanceInSmsPackage",
            Verdict::AccountDisabled,
        ),
        ("InternalError.Timeout", Verdict::Retryable { after: None }),
        ("FailedOperation.SomethingNew", Verdict::ContentBlocked),
    ];
    for (code, expected) in rows {
        assert_eq!(classify(code, NOW_MS), *expected, "{code}");
    }
}

#[test]
fn an_answer_without_json_is_retried_only_when_it_may_not_have_been_processed() {
    let numbers = ["+8613800000000"];
    let gateway = interpret(&numbers, 502, None, Some(b"<html>"), NOW_MS);
    assert_eq!(gateway[0].verdict, Verdict::Retryable { after: None });
    let refused = interpret(&numbers, 400, None, Some(b"bad"), NOW_MS);
    assert_eq!(refused[0].verdict, Verdict::ContentBlocked);
    let missing = interpret(
        &numbers,
        200,
        None,
        Some(br#"{"Response":{"SendStatusSet":[],"RequestId":"r"}}"#),
        NOW_MS,
    );
    assert_eq!(missing[0].verdict, Verdict::Retryable { after: None });
}

// -- against a mock of sms.tencentcloudapi.com

#[derive(Clone, Default)]
struct Mock {
    calls: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// Checks a call the way Tencent Cloud does (headers, TC3 signature over the raw body and
/// the Host it received) and answers per number like SendSms.
async fn sms_api(
    State(mock): State<Mock>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<serde_json::Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let refuse = |code: &str| {
        axum::Json(
            json!({"Response": {"Error": {"Code": code, "Message": "refused"}, "RequestId": "req-err"}}),
        )
    };
    if header("x-tc-action") != "SendSms"
        || header("x-tc-version") != "2021-01-11"
        || header("x-tc-region") != "ap-guangzhou"
    {
        return refuse("InvalidAction");
    }
    let timestamp: i64 = header("x-tc-timestamp").parse().unwrap_or_default();
    if timestamp != NOW_MS / 1000 {
        return refuse("AuthFailure.SignatureExpire");
    }
    let expected = tc3_sign(
        SECRET_ID,
        &SecretString::from(SECRET_KEY),
        &header("host"),
        &body,
        timestamp,
    );
    if header("authorization") != expected.authorization
        || header("content-type") != "application/json"
    {
        return refuse("AuthFailure.SignatureFailure");
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    mock.calls.lock().unwrap().push(request.clone());
    if request["TemplateId"] == "666" {
        return refuse("FailedOperation.TemplateIncorrectOrUnapproved");
    }
    let numbers: Vec<String> = request["PhoneNumberSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    // Tencent answers in E.164 and in no promised order: reverse it to prove the
    // mapping goes by number.
    let statuses: Vec<serde_json::Value> = numbers
        .iter()
        .rev()
        .map(|number| {
            let e164 = if number.starts_with('+') { number.clone() } else { format!("+86{number}") };
            let (code, message) = match e164.as_str() {
                "+8613800000001" => ("InvalidParameterValue.IncorrectPhoneNumber", "incorrect number"),
                "+8613800000002" => ("LimitExceeded.PhoneNumberThirtySecondLimit", "30s limit"),
                _ => ("Ok", "send success"),
            };
            json!({"SerialNo": format!("2640:{e164}"), "PhoneNumber": e164, "Fee": 1, "SessionContext": "", "Code": code, "Message": message, "IsoCode": "CN"})
        })
        .collect();
    axum::Json(json!({"Response": {"SendStatusSet": statuses, "RequestId": "req-1"}}))
}

async fn mock_tencent() -> (String, Mock) {
    let mock = Mock::default();
    let router = axum::Router::new()
        .route("/", post(sms_api))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, mock)
}

fn channel(base_url: &str, secret_key: &str) -> TencentSmsChannel {
    TencentSmsChannel::new(
        TencentSmsSettings {
            base_url: base_url.to_string(),
            secret_id: SECRET_ID.to_string(),
            sdk_app_id: "1400000000".to_string(),
            sign_name: "腾讯云".to_string(),
            template_id: Some("1234567".to_string()),
            region: "ap-guangzhou".to_string(),
        },
        SecretString::from(secret_key),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(NOW_MS)),
    )
    .unwrap()
}

fn contexts<'a>(recipients: &'a [&'a str]) -> Vec<SendContext<'a>> {
    recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| SendContext {
            job_id: i as i64 + 1,
            idempotency_key: "k",
            attempt: 1,
            recipient,
        })
        .collect()
}

fn code_message() -> Message {
    Message {
        template_params: [
            ("1".to_string(), "1234".to_string()),
            ("2".to_string(), "5".to_string()),
        ]
        .into(),
        ..Message::default()
    }
}

#[tokio::test]
async fn each_number_gets_its_own_status_and_serial_number() {
    let (url, mock) = mock_tencent().await;
    let channel = channel(&url, SECRET_KEY);
    let recipients = [
        "+8613800000000",
        "13800000001",
        "bogus",
        "+8613800000002",
        "13900000000",
    ];
    let results = channel
        .send_batch(&contexts(&recipients), &code_message())
        .await;
    let verdicts: Vec<&Verdict> = results.iter().map(|r| &r.verdict).collect();
    assert_eq!(
        verdicts,
        [
            &Verdict::Delivered,
            &Verdict::RecipientInvalid,
            &Verdict::RecipientInvalid,
            &Verdict::RateLimited {
                wait: Duration::from_secs(30)
            },
            &Verdict::Delivered,
        ]
    );
    assert_eq!(
        results[0].provider_ref.as_deref(),
        Some("2640:+8613800000000")
    );
    assert_eq!(
        results[4].provider_ref.as_deref(),
        Some("2640:+8613900000000")
    );
    assert_eq!(results[1].provider_ref, None);
    assert!(results[1].detail.contains("IncorrectPhoneNumber"));
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0],
        json!({
            "PhoneNumberSet": ["+8613800000000", "13800000001", "+8613800000002", "13900000000"],
            "SmsSdkAppId": "1400000000",
            "SignName": "腾讯云",
            "TemplateId": "1234567",
            "TemplateParamSet": ["1234", "5"],
        })
    );
}

#[tokio::test]
async fn mainland_and_international_numbers_go_in_separate_calls() {
    let (url, mock) = mock_tencent().await;
    let channel = channel(&url, SECRET_KEY);
    let recipients = ["+85261234567", "+8613800000000", "+14155550100"];
    let results = channel
        .send_batch(&contexts(&recipients), &code_message())
        .await;
    assert!(results.iter().all(|r| r.verdict == Verdict::Delivered));
    assert_eq!(
        results[0].provider_ref.as_deref(),
        Some("2640:+85261234567")
    );
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["PhoneNumberSet"], json!(["+8613800000000"]));
    assert_eq!(
        calls[1]["PhoneNumberSet"],
        json!(["+85261234567", "+14155550100"])
    );
}

#[tokio::test]
async fn a_request_level_error_applies_to_every_number() {
    let (url, _mock) = mock_tencent().await;
    let wrong = channel(&url, "not the key");
    let results = wrong
        .send_batch(
            &contexts(&["+8613800000000", "13900000000"]),
            &code_message(),
        )
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.verdict == Verdict::AccountDisabled)
    );
    assert!(results[0].detail.contains("AuthFailure.SignatureFailure"));
    assert!(!format!("{wrong:?}").contains("not the key"));

    let channel = channel(&url, SECRET_KEY);
    let mut message = code_message();
    message.template_id = Some("666".into());
    let result = channel
        .send(&contexts(&["+8613800000000"])[0], &message)
        .await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
}

#[tokio::test]
async fn misnumbered_parameters_are_refused_before_any_call() {
    let (url, mock) = mock_tencent().await;
    let channel = channel(&url, SECRET_KEY);
    let message = Message {
        template_params: [("code".to_string(), "1234".to_string())].into(),
        ..Message::default()
    };
    assert!(channel.check(&message).is_err());
    let result = channel
        .send(&contexts(&["+8613800000000"])[0], &message)
        .await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert!(mock.calls.lock().unwrap().is_empty());
    assert_eq!(channel.max_batch(), 200);
}

proptest! {
    #[test]
    fn signing_checking_and_answers_never_panic(
        text in "\\PC{0,60}",
        keys in prop::collection::btree_map("\\PC{0,3}", "\\PC{0,5}", 0..5),
        answer in prop::collection::vec(any::<u8>(), 0..200),
        timestamp in any::<i64>(),
    ) {
        let _ = tc3_sign(&text, &SecretString::from(text.clone()), &text, text.as_bytes(), timestamp);
        let message = Message { template_params: keys, ..Message::default() };
        let _ = template_param_set(&message);
        let _ = tencent_number(&text);
        let _ = same_number(&text, &text);
        let _ = interpret(&[text.as_str()], 200, None, Some(&answer), NOW_MS);
        let _ = classify(&text, NOW_MS);
    }
}

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

/// 2023-11-14T22:13:20Z.
const NOW_MS: i64 = 1_700_000_000_000;
const SECRET: &str = "testSecret";

#[test]
fn the_official_example_signs_as_documented() {
    // [vec aliyun_sms-01]
    let params: BTreeMap<String, String> = [
        ("AccessKeyId", "testId"),
        ("Action", "SendSms"),
        ("Format", "XML"),
        ("OutId", "123"),
        ("PhoneNumbers", "15300000001"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "阿里云短信测试专用"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_71390007"),
        ("TemplateParam", "{\"customer\":\"test\"}"),
        ("Timestamp", "2017-07-12T02:42:19Z"),
        ("Version", "2017-05-25"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let to_sign = string_to_sign("GET", &params);
    assert_eq!(
        to_sign,
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123%26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0%26TemplateCode%3DSMS_71390007%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D%26Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25"
    );
    let signature = sign(&SecretString::from(SECRET), &to_sign);
    assert_eq!(signature, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    assert_eq!(encode(&signature), "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D");
}

#[test]
fn percent_encoding_follows_aliyuns_rules() {
    assert_eq!(encode("a b*c~d-e_f.g+h/"), "a%20b%2Ac~d-e_f.g%2Bh%2F");
    assert_eq!(encode("验"), "%E9%AA%8C");
}

#[test]
fn numbers_lose_the_plus_and_anything_else_is_refused() {
    assert_eq!(
        aliyun_number(" +8613800000000 ").as_deref(),
        Some("8613800000000")
    );
    assert_eq!(aliyun_number("13800000000").as_deref(), Some("13800000000"));
    assert_eq!(aliyun_number("85200000000").as_deref(), Some("85200000000"));
    for bad in [
        "",
        "+",
        "1380000000a",
        "138,139",
        "1234",
        "+86 138 0000 0000",
    ] {
        assert_eq!(aliyun_number(bad), None, "{bad}");
    }
}

#[test]
fn every_row_of_the_code_table() {
    let day_end = until_china_midnight(NOW_MS);
    // 22:13:20 UTC is 06:13:20 in Beijing: 17h46m40s to midnight there.
    assert_eq!(day_end, Duration::from_secs(17 * 3600 + 46 * 60 + 40));
    let rows: &[(u16, Option<&str>, &str, Verdict)] = &[
        (200, Some("OK"), "OK", Verdict::Delivered),
        (
            200,
            Some("isv.BUSINESS_LIMIT_CONTROL"),
            "触发分钟级流控Permits:1",
            Verdict::RateLimited {
                wait: Duration::from_secs(60),
            },
        ),
        (
            200,
            Some("isv.BUSINESS_LIMIT_CONTROL"),
            "触发小时级流控Permits:5",
            Verdict::RateLimited {
                wait: Duration::from_secs(3600),
            },
        ),
        (
            200,
            Some("isv.BUSINESS_LIMIT_CONTROL"),
            "触发天级流控Permits:10",
            Verdict::RateLimited { wait: day_end },
        ),
        (
            200,
            Some("isv.BUSINESS_LIMIT_CONTROL"),
            "",
            Verdict::RateLimited {
                wait: DEFAULT_FLOW_CONTROL_WAIT,
            },
        ),
        (
            200,
            Some("isv.DAY_LIMIT_CONTROL"),
            "触发日发送限额",
            Verdict::RateLimited { wait: day_end },
        ),
        (
            400,
            Some("Throttling.User"),
            "Request was denied due to user flow control.",
            Verdict::RateLimited {
                wait: THROTTLING_WAIT,
            },
        ),
        (
            200,
            Some("isv.MOBILE_NUMBER_ILLEGAL"),
            "非法手机号",
            Verdict::RecipientInvalid,
        ),
        (
            200,
            Some("isv.BLACK_KEY_CONTROL_LIMIT"),
            "黑名单管控",
            Verdict::ContentBlocked,
        ),
        (
            200,
            Some("isv.SMS_TEMPLATE_ILLEGAL"),
            "",
            Verdict::ContentBlocked,
        ),
        (
            200,
            Some("isv.SMS_SIGNATURE_ILLEGAL"),
            "",
            Verdict::ContentBlocked,
        ),
        (
            200,
            Some("isv.TEMPLATE_MISSING_PARAMETERS"),
            "",
            Verdict::ContentBlocked,
        ),
        (
            200,
            Some("isv.PARAM_NOT_SUPPORT_URL"),
            "",
            Verdict::ContentBlocked,
        ),
        (
            200,
            Some("isv.OUT_OF_SERVICE"),
            "业务停机",
            Verdict::AccountDisabled,
        ),
        (
            200,
            Some("isv.AMOUNT_NOT_ENOUGH"),
            "账户余额不足",
            Verdict::AccountDisabled,
        ),
        (200, Some("isv.DENY_IP_RANGE"), "", Verdict::AccountDisabled),
        (
            400,
            Some("SignatureDoesNotMatch"),
            "",
            Verdict::AccountDisabled,
        ),
        (
            404,
            Some("InvalidAccessKeyId.NotFound"),
            "",
            Verdict::AccountDisabled,
        ),
        (
            400,
            Some("InvalidAccessKeyId"),
            "",
            Verdict::AccountDisabled,
        ),
        (
            400,
            Some("InvalidTimeStamp.Expired"),
            "",
            Verdict::Retryable { after: None },
        ),
        (
            400,
            Some("SignatureNonceUsed"),
            "",
            Verdict::Retryable { after: None },
        ),
        (
            200,
            Some("isp.SYSTEM_ERROR"),
            "",
            Verdict::Retryable { after: None },
        ),
        (
            503,
            Some("ServiceUnavailable"),
            "",
            Verdict::Retryable { after: None },
        ),
        (
            500,
            Some("Something.New"),
            "",
            Verdict::Retryable { after: None },
        ),
        (200, Some("isv.SOMETHING_NEW"), "", Verdict::ContentBlocked),
        (502, None, "", Verdict::Retryable { after: None }),
        (
            429,
            None,
            "",
            Verdict::RateLimited {
                wait: THROTTLING_WAIT,
            },
        ),
        (403, None, "", Verdict::ContentBlocked),
    ];
    for (status, code, message, expected) in rows {
        assert_eq!(
            classify(*status, *code, message, None, NOW_MS),
            *expected,
            "HTTP {status} {code:?} {message}"
        );
    }
}

#[test]
fn only_ok_keeps_the_biz_id() {
    let ok = interpret(
        200,
        None,
        Some(br#"{"Code":"OK","Message":"OK","BizId":"900619746936498440^0","RequestId":"F655A8D5"}"#),
        NOW_MS,
    );
    assert_eq!(ok.verdict, Verdict::Delivered);
    assert_eq!(ok.provider_ref.as_deref(), Some("900619746936498440^0"));
    let refused = interpret(
        200,
        None,
        Some(br#"{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"x","BizId":"1","RequestId":"r"}"#),
        NOW_MS,
    );
    assert_eq!(refused.verdict, Verdict::RecipientInvalid);
    assert_eq!(refused.provider_ref, None);
}

// -- against a mock of dysmsapi

#[derive(Clone, Default)]
struct Mock {
    calls: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

/// Checks a call the way Aliyun does: the signature over every other parameter with the
/// method POST, the timestamp, a fresh nonce; then answers per number like SendSms.
async fn dysmsapi(State(mock): State<Mock>, body: String) -> axum::Json<serde_json::Value> {
    use serde_json::json;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
    let mut params: BTreeMap<String, String> = pairs.into_iter().collect();
    let signature = params.remove("Signature").unwrap_or_default();
    let expected = sign(
        &SecretString::from(SECRET),
        &string_to_sign("POST", &params),
    );
    if signature != expected || params["AccessKeyId"] != "LTAI5tTestKeyId" {
        return axum::Json(
            json!({"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched with our calculation.", "RequestId": "R0"}),
        );
    }
    if params["Timestamp"] != "2023-11-14T22:13:20Z" {
        return axum::Json(
            json!({"Code": "InvalidTimeStamp.Expired", "Message": "expired", "RequestId": "R0"}),
        );
    }
    let nonce_seen = {
        let calls = mock.calls.lock().unwrap();
        calls
            .iter()
            .any(|call| call["SignatureNonce"] == params["SignatureNonce"])
    };
    if nonce_seen {
        return axum::Json(
            json!({"Code": "SignatureNonceUsed", "Message": "used", "RequestId": "R0"}),
        );
    }
    mock.calls.lock().unwrap().push(params.clone());
    let numbers = &params["PhoneNumbers"];
    if numbers.contains("13800000001") {
        return axum::Json(
            json!({"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": "R1"}),
        );
    }
    if numbers.contains("13800000002") {
        return axum::Json(
            json!({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发小时级流控Permits:5", "RequestId": "R2"}),
        );
    }
    axum::Json(
        json!({"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "R3"}),
    )
}

async fn mock_aliyun() -> (String, Mock) {
    let mock = Mock::default();
    let router = axum::Router::new()
        .route("/", post(dysmsapi))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, mock)
}

fn channel(base_url: &str, secret: &str, template_code: Option<&str>) -> AliyunSmsChannel {
    AliyunSmsChannel::new(
        AliyunSmsSettings {
            base_url: base_url.to_string(),
            access_key_id: "LTAI5tTestKeyId".to_string(),
            sign_name: "阿里云短信测试".to_string(),
            template_code: template_code.map(str::to_string),
            region_id: "cn-hangzhou".to_string(),
        },
        SecretString::from(secret),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(NOW_MS)),
    )
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
        text: "您的验证码是 1234".into(),
        template_params: [("code".to_string(), "1234".to_string())].into(),
        ..Message::default()
    }
}

#[tokio::test]
async fn a_batch_is_one_signed_call_and_every_number_gets_the_biz_id() {
    let (url, mock) = mock_aliyun().await;
    let channel = channel(&url, SECRET, Some("SMS_0001"));
    let recipients = [
        "+8613800000000",
        "not a phone",
        "13900000000",
        "+85200000000",
    ];
    let results = channel
        .send_batch(&contexts(&recipients), &code_message())
        .await;
    assert_eq!(results.len(), 4);
    for index in [0, 2, 3] {
        assert_eq!(
            results[index].verdict,
            Verdict::Delivered,
            "{}",
            results[index].detail
        );
        assert_eq!(
            results[index].provider_ref.as_deref(),
            Some("900619746936498440^0")
        );
    }
    assert_eq!(results[1].verdict, Verdict::RecipientInvalid);
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call["PhoneNumbers"],
        "8613800000000,13900000000,85200000000"
    );
    assert_eq!(call["TemplateCode"], "SMS_0001");
    assert_eq!(call["TemplateParam"], r#"{"code":"1234"}"#);
    assert_eq!(call["SignName"], "阿里云短信测试");
    assert_eq!(call["Action"], "SendSms");
    assert_eq!(call["Version"], "2017-05-25");
    assert_eq!(call["Format"], "JSON");
    assert_eq!(call["SignatureMethod"], "HMAC-SHA1");
    assert_eq!(call["SignatureVersion"], "1.0");
}

#[tokio::test]
async fn the_message_template_overrides_the_channel_default_and_nonces_are_fresh() {
    let (url, mock) = mock_aliyun().await;
    let channel = channel(&url, SECRET, Some("SMS_0001"));
    let mut message = code_message();
    message.template_id = Some("SMS_0002".into());
    for _ in 0..2 {
        let result = channel.send(&contexts(&["13900000000"])[0], &message).await;
        assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    }
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["TemplateCode"], "SMS_0002");
    assert_ne!(calls[0]["SignatureNonce"], calls[1]["SignatureNonce"]);
}

#[tokio::test]
async fn aliyun_refusals_apply_to_the_whole_call() {
    let (url, _mock) = mock_aliyun().await;
    let channel = channel(&url, SECRET, Some("SMS_0001"));
    let results = channel
        .send_batch(&contexts(&["13800000001", "13900000000"]), &code_message())
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.verdict == Verdict::RecipientInvalid)
    );
    let limited = channel
        .send(&contexts(&["13800000002"])[0], &code_message())
        .await;
    assert_eq!(
        limited.verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(3600)
        }
    );
    let wrong_secret = self::channel(&url, "not the secret", Some("SMS_0001"));
    let refused = wrong_secret
        .send(&contexts(&["13900000000"])[0], &code_message())
        .await;
    assert_eq!(refused.verdict, Verdict::AccountDisabled);
    assert!(!format!("{wrong_secret:?}").contains("not the secret"));
}

#[tokio::test]
async fn without_a_template_nothing_is_sent() {
    let (url, mock) = mock_aliyun().await;
    let channel = channel(&url, SECRET, None);
    assert!(channel.check(&code_message()).is_err());
    let results = channel
        .send_batch(&contexts(&["13900000000", "13900000001"]), &code_message())
        .await;
    assert!(results.iter().all(|r| r.verdict == Verdict::ContentBlocked));
    assert!(mock.calls.lock().unwrap().is_empty());
    assert_eq!(channel.max_batch(), 1000);
}

proptest! {
    #[test]
    fn signing_and_answers_never_panic(
        value in "\\PC{0,60}",
        answer in prop::collection::vec(any::<u8>(), 0..200),
        status in 100u16..600,
    ) {
        let params: BTreeMap<String, String> = [("K".to_string(), value.clone())].into();
        let to_sign = string_to_sign("POST", &params);
        prop_assert!(to_sign.is_ascii());
        let _ = sign(&SecretString::from(value.clone()), &to_sign);
        let _ = aliyun_number(&value);
        let _ = interpret(status, None, Some(&answer), NOW_MS);
        let _ = flow_control_wait(&value, i64::MAX);
        let _ = until_china_midnight(i64::MIN);
    }
}

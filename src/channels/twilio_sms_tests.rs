use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fixtures' parameters (twilio-01 and -02 differ only in the caller's number).
fn fixture_params(caller: &str) -> Vec<(String, String)> {
    params(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", caller),
        ("Digits", "1234"),
        ("From", caller),
        ("To", "+18005551212"),
    ])
}

const FIXTURE_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

#[test]
fn the_sdk_fixtures_verify() {
    let token = SecretString::from("12345");
    // [vec twilio-01]
    let first = fixture_params("+14158675309");
    assert_eq!(
        signature(&token, FIXTURE_URL, &first),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    assert!(verify_status_callback(
        &token,
        FIXTURE_URL,
        &first,
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
    // [vec twilio-02]
    let second = fixture_params("+14158675310");
    assert!(verify_status_callback(
        &token,
        FIXTURE_URL,
        &second,
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    ));
    // Each signature is bound to its own parameters.
    assert!(!verify_status_callback(
        &token,
        FIXTURE_URL,
        &first,
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    ));
}

#[test]
fn a_status_callback_vector_verifies_and_parses() {
    // [vec twilio-03]
    let token = SecretString::from("0123456789abcdef0123456789abcdef");
    let url = "https://bot.example.com/twilio/status?campaign=42";
    let form = params(&[
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("MessageSid", "SM00000000000000000000000000000001"),
        ("MessageStatus", "undelivered"),
        ("SmsSid", "SM00000000000000000000000000000001"),
        ("SmsStatus", "undelivered"),
        ("To", "+15005550009"),
        ("ErrorCode", "30003"),
    ]);
    let expected = "mpKWr7q6AbqgrzSFhsdWZV3ciYQ=";
    assert!(verify_status_callback(&token, url, &form, expected));
    // Tampering with any value, the URL or the token fails.
    let mut tampered = form.clone();
    tampered[0].1.push('0');
    assert!(!verify_status_callback(&token, url, &tampered, expected));
    assert!(!verify_status_callback(
        &token,
        "https://bot.example.com/twilio/status?campaign=43",
        &form,
        expected
    ));
    assert!(!verify_status_callback(
        &SecretString::from("wrong"),
        url,
        &form,
        expected
    ));
    assert!(!verify_status_callback(&token, url, &form, ""));

    let receipt = parse_status_callback(&form).unwrap();
    assert_eq!(
        receipt,
        Receipt {
            event_key: "SM00000000000000000000000000000001:undelivered".into(),
            provider_ref: "SM00000000000000000000000000000001".into(),
            status: ReceiptStatus::Failed,
            detail: "undelivered (Twilio error 30003)".into(),
        }
    );
}

fn callback(
    headers: &[(&'static str, &str)],
    body: &[u8],
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    (map, body.to_vec())
}

#[test]
fn the_channel_takes_signed_status_callbacks_at_its_status_callback_url() {
    // [vec twilio-03], posted as Twilio posts it: a form body and the signature header.
    let form = serde_urlencoded::to_string([
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("MessageSid", "SM00000000000000000000000000000001"),
        ("MessageStatus", "undelivered"),
        ("SmsSid", "SM00000000000000000000000000000001"),
        ("SmsStatus", "undelivered"),
        ("To", "+15005550009"),
        ("ErrorCode", "30003"),
    ])
    .unwrap();
    let mut settings = settings("http://127.0.0.1:9");
    settings.status_callback_url = Some("https://bot.example.com/twilio/status?campaign=42".into());
    let channel = TwilioSmsChannel::new(
        settings.clone(),
        SecretString::from("0123456789abcdef0123456789abcdef"),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(0)),
    );
    let receive = |channel: &TwilioSmsChannel, signature: Option<&str>, body: &[u8]| {
        let headers: Vec<(&'static str, &str)> = signature
            .map(|s| ("x-twilio-signature", s))
            .into_iter()
            .collect();
        let (headers, body) = callback(&headers, body);
        channel
            .receipts(&ReceiptRequest {
                headers: &headers,
                body: &body,
                now_ms: 0,
            })
            .unwrap()
    };
    let receipts = receive(
        &channel,
        Some("mpKWr7q6AbqgrzSFhsdWZV3ciYQ="),
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].status, ReceiptStatus::Failed);
    assert_eq!(
        receipts[0].provider_ref,
        "SM00000000000000000000000000000001"
    );

    let forged =
        |result: Result<Vec<Receipt>, ReceiptError>| matches!(result, Err(ReceiptError::Forged(_)));
    assert!(forged(receive(
        &channel,
        Some("mpKWr7q6AbqgrzSFhsdWZV3ciYQ="),
        form.replace("30003", "30007").as_bytes()
    )));
    assert!(forged(receive(&channel, None, form.as_bytes())));
    settings.status_callback_url = None;
    let unconfigured = TwilioSmsChannel::new(
        settings,
        SecretString::from("0123456789abcdef0123456789abcdef"),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(0)),
    );
    assert!(forged(receive(
        &unconfigured,
        Some("mpKWr7q6AbqgrzSFhsdWZV3ciYQ="),
        form.as_bytes()
    )));
}

#[test]
fn a_json_callback_vector_checks_the_body_hash_and_the_url() {
    // [vec twilio-04]
    let token = SecretString::from("0123456789abcdef0123456789abcdef");
    let url = "https://bot.example.com/twilio/json?bodySHA256=ce8c3c8da52a17f7dd3e526b3b67d41402b438513f6b2faf55189573f2873f02";
    let body = br#"{"MessageSid":"SM1","MessageStatus":"delivered"}"#;
    let expected = "n75mh5kUMCVFy9s/bxWqVlT6tFs=";
    assert!(verify_json_callback(&token, url, body, expected));
    assert!(!verify_json_callback(
        &token,
        url,
        br#"{"MessageSid":"SM1","MessageStatus":"failed"}"#,
        expected
    ));
    assert!(!verify_json_callback(
        &token,
        "https://bot.example.com/twilio/json",
        body,
        expected
    ));
}

#[test]
fn a_signature_made_by_the_official_sdk_verifies_with_and_without_the_default_port() {
    // Produced once with twilio 9.13.0 in a venv:
    //   RequestValidator("0123456789abcdef0123456789abcdef").compute_signature(
    //       "https://qunfa.example.com/webhooks/twilio-status?channel=sms",
    //       {"AccountSid": "AC0123456789abcdef0123456789abcdef", "MessageSid": "SM5a",
    //        "MessageStatus": "delivered", "To": "+8613800000000", "Body": "双十一 a&b=c"})
    // and RequestValidator.validate(...) of the same URL with ":443" returned True.
    let token = SecretString::from(TOKEN);
    let form = params(&[
        ("AccountSid", SID),
        ("MessageSid", "SM5a"),
        ("MessageStatus", "delivered"),
        ("To", "+8613800000000"),
        ("Body", "双十一 a&b=c"),
    ]);
    let sdk_signature = "n4a8upjWAP9bc4KgWJETzdCgK0g=";
    for url in [
        "https://qunfa.example.com/webhooks/twilio-status?channel=sms",
        "https://qunfa.example.com:443/webhooks/twilio-status?channel=sms",
    ] {
        assert!(
            verify_status_callback(&token, url, &form, sdk_signature),
            "{url}"
        );
    }
    assert!(!verify_status_callback(
        &token,
        "https://qunfa.example.com:8443/webhooks/twilio-status?channel=sms",
        &form,
        "not the signature"
    ));
}

#[test]
fn url_variants_add_and_remove_the_port_like_the_sdk() {
    assert_eq!(
        url_variants("https://a.example/x?y=1"),
        vec!["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
    );
    assert_eq!(
        url_variants("http://a.example:8080"),
        vec!["http://a.example:8080", "http://a.example"]
    );
    assert_eq!(
        url_variants("https://[::1]:8443/cb"),
        vec!["https://[::1]:8443/cb", "https://[::1]/cb"]
    );
    assert_eq!(url_variants("not a url"), vec!["not a url"]);
}

#[test]
fn repeated_parameters_are_sorted_by_value_and_counted_once() {
    let token = SecretString::from("12345");
    let unsorted = params(&[("MediaUrl", "b"), ("MediaUrl", "a"), ("MediaUrl", "a")]);
    let sorted = params(&[("MediaUrl", "a"), ("MediaUrl", "b")]);
    assert_eq!(
        signature(&token, "https://x", &unsorted),
        signature(&token, "https://x", &sorted)
    );
}

#[test]
fn callbacks_without_sid_or_status_are_refused() {
    assert!(parse_status_callback(&params(&[("MessageStatus", "sent")])).is_err());
    assert!(parse_status_callback(&params(&[("MessageSid", "SM1")])).is_err());
    let old_style = parse_status_callback(&params(&[("SmsSid", "SM1"), ("SmsStatus", "sent")]));
    assert_eq!(
        old_style.unwrap().status,
        ReceiptStatus::Other("sent".into())
    );
    let read = parse_status_callback(&params(&[
        ("MessageSid", "SM1"),
        ("MessageStatus", "delivered"),
        ("ErrorCode", ""),
    ]))
    .unwrap();
    assert_eq!(read.status, ReceiptStatus::Delivered);
    assert_eq!(
        (read.detail.as_str(), read.event_key.as_str()),
        ("delivered", "SM1:delivered")
    );
}

#[test]
fn every_row_of_the_answer_table() {
    let wait = Some(Duration::from_secs(7));
    let rows: &[(u16, Option<i64>, Option<Duration>, Verdict)] = &[
        (201, None, None, Verdict::Delivered),
        (
            429,
            Some(20429),
            wait,
            Verdict::RateLimited {
                wait: Duration::from_secs(7),
            },
        ),
        (
            429,
            None,
            None,
            Verdict::RateLimited {
                wait: DEFAULT_RATE_LIMIT_WAIT,
            },
        ),
        (
            400,
            Some(20429),
            None,
            Verdict::RateLimited {
                wait: DEFAULT_RATE_LIMIT_WAIT,
            },
        ),
        (401, Some(20003), None, Verdict::AccountDisabled),
        (401, None, None, Verdict::AccountDisabled),
        (404, Some(20404), None, Verdict::AccountDisabled),
        (400, Some(21606), None, Verdict::AccountDisabled),
        (400, Some(21211), None, Verdict::RecipientInvalid),
        (400, Some(21614), None, Verdict::RecipientInvalid),
        (400, Some(21612), None, Verdict::RecipientInvalid),
        (400, Some(21610), None, Verdict::RecipientInvalid),
        (400, Some(21408), None, Verdict::RecipientInvalid),
        (400, Some(21608), None, Verdict::RecipientInvalid),
        (201, Some(30003), None, Verdict::RecipientInvalid),
        (400, Some(30007), None, Verdict::ContentBlocked),
        (400, Some(30004), None, Verdict::ContentBlocked),
        (400, Some(21617), None, Verdict::ContentBlocked),
        (500, None, wait, Verdict::Retryable { after: wait }),
        (503, Some(20500), None, Verdict::Retryable { after: None }),
        (400, Some(21999), None, Verdict::ContentBlocked),
    ];
    for (status, code, wait, expected) in rows {
        assert_eq!(
            classify(*status, *code, *wait),
            *expected,
            "HTTP {status} code {code:?}"
        );
    }
}

#[test]
fn a_created_message_that_already_failed_is_not_delivered() {
    let answer = br#"{"sid":"SM1","status":"failed","error_code":30007}"#;
    let result = interpret(201, None, Some(answer));
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert_eq!(result.provider_ref.as_deref(), Some("SM1"));
    let queued = interpret(
        201,
        None,
        Some(br#"{"sid":"SM2","status":"queued","error_code":null}"#),
    );
    assert_eq!(queued.verdict, Verdict::Delivered);
    assert_eq!(queued.provider_ref.as_deref(), Some("SM2"));
    let garbled = interpret(502, None, None);
    assert_eq!(garbled.verdict, Verdict::Retryable { after: None });
}

// -- against a mock of the Messages API

#[derive(Clone, Default)]
struct Mock {
    calls: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

/// Answers like Twilio: checks Basic auth and the form, and refuses the test numbers
/// the way Twilio refuses real ones.
async fn messages(
    State(mock): State<Mock>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    let error = |status: StatusCode, code: i64| {
        let body = serde_json::json!({"code": code, "message": "refused", "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()});
        (status, axum::Json(body)).into_response()
    };
    if sid != SID
        || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected_auth)
    {
        return error(StatusCode::UNAUTHORIZED, 20003);
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return error(StatusCode::BAD_REQUEST, 20001);
    }
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap();
    mock.calls.lock().unwrap().push(form.clone());
    let to = form.get("To").cloned().unwrap_or_default();
    match to.as_str() {
        "+15005550001" => error(StatusCode::BAD_REQUEST, 21211),
        "+15005550002" => error(StatusCode::BAD_REQUEST, 21610),
        "+15005550003" => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, 20429);
            response
                .headers_mut()
                .insert("retry-after", "7".parse().unwrap());
            response
        }
        "+15005550004" => (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").into_response(),
        _ => {
            let segments = crate::channels::render::sms_segments(&form["Body"]).segments;
            let body = serde_json::json!({
                "sid": "SM0123456789abcdef0123456789abcdef",
                "status": "queued",
                "to": to,
                "from": form.get("From"),
                "body": form["Body"],
                "num_segments": segments.to_string(),
                "direction": "outbound-api",
                "error_code": null,
            });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
    }
}

async fn mock_twilio() -> (String, Mock) {
    let mock = Mock::default();
    let router = axum::Router::new()
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(messages))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, mock)
}

fn settings(base_url: &str) -> TwilioSmsSettings {
    TwilioSmsSettings {
        base_url: base_url.to_string(),
        account_sid: SID.to_string(),
        from: Some("+15005550006".to_string()),
        messaging_service_sid: None,
        status_callback_url: Some("https://qunfa.example.com/webhooks/twilio-status".into()),
        max_segments: 10,
    }
}

fn channel(settings: TwilioSmsSettings, token: &str) -> TwilioSmsChannel {
    TwilioSmsChannel::new(
        settings,
        SecretString::from(token),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    )
}

fn ctx(recipient: &str) -> SendContext<'_> {
    SendContext {
        job_id: 1,
        idempotency_key: "k1",
        attempt: 1,
        recipient,
    }
}

#[tokio::test]
async fn a_send_posts_the_form_twilio_expects_and_keeps_the_sid() {
    let (url, mock) = mock_twilio().await;
    let channel = channel(settings(&url), TOKEN);
    let message = Message {
        format: super::super::Format::Markdown,
        text: "**验证码** 1234".into(),
        ..Message::default()
    };
    let result = channel.send(&ctx("+8613800000000"), &message).await;
    assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    assert_eq!(result.status, Some(201));
    assert_eq!(
        result.provider_ref.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["To"], "+8613800000000");
    assert_eq!(calls[0]["From"], "+15005550006");
    // Markdown is flattened to plain text: SMS shows every character literally.
    assert_eq!(calls[0]["Body"], "验证码 1234");
    assert_eq!(
        calls[0]["StatusCallback"],
        "https://qunfa.example.com/webhooks/twilio-status"
    );
    assert!(!calls[0].contains_key("MessagingServiceSid"));
}

#[tokio::test]
async fn a_messaging_service_replaces_from() {
    let (url, mock) = mock_twilio().await;
    let mut settings = settings(&url);
    settings.from = None;
    settings.status_callback_url = None;
    settings.messaging_service_sid = Some("MG0123456789abcdef0123456789abcdef".into());
    let result = channel(settings, TOKEN)
        .send(&ctx("+15005550006"), &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::Delivered);
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0]["MessagingServiceSid"],
        "MG0123456789abcdef0123456789abcdef"
    );
    assert!(!calls[0].contains_key("From") && !calls[0].contains_key("StatusCallback"));
}

#[tokio::test]
async fn twilio_refusals_are_classified() {
    let (url, _mock) = mock_twilio().await;
    let channel = channel(settings(&url), TOKEN);
    let message = Message::text("hello");
    let cases = [
        ("+15005550001", Verdict::RecipientInvalid),
        ("+15005550002", Verdict::RecipientInvalid),
        (
            "+15005550003",
            Verdict::RateLimited {
                wait: Duration::from_secs(7),
            },
        ),
        ("+15005550004", Verdict::Retryable { after: None }),
    ];
    for (to, expected) in cases {
        let result = channel.send(&ctx(to), &message).await;
        assert_eq!(result.verdict, expected, "{to}: {}", result.detail);
        assert_eq!(result.provider_ref, None);
    }
    let wrong_token = super::TwilioSmsChannel::new(
        settings(&url),
        SecretString::from("not the token"),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(0)),
    );
    let refused = wrong_token.send(&ctx("+15005550006"), &message).await;
    assert_eq!(refused.verdict, Verdict::AccountDisabled);
    assert!(!format!("{wrong_token:?}").contains("not the token"));
    assert!(!refused.detail.contains("not the token"));
}

#[tokio::test]
async fn a_text_over_the_segment_limit_is_refused_before_any_call() {
    let (url, mock) = mock_twilio().await;
    let mut settings = settings(&url);
    settings.max_segments = 2;
    let channel = channel(settings, TOKEN);
    assert!(channel.check(&Message::text("验".repeat(134))).is_ok());
    let long = Message::text("验".repeat(135));
    let error = channel.check(&long).unwrap_err();
    assert!(error.to_string().contains("3 segments"), "{error}");
    let result = channel.send(&ctx("+15005550006"), &long).await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert!(
        channel.send(&ctx(" "), &Message::text("x")).await.verdict == Verdict::RecipientInvalid
    );
    assert!(channel.check(&Message::text("a".repeat(1601))).is_err());
    assert!(mock.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_api_is_retryable_and_the_detail_has_no_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let result = channel(settings(&url), TOKEN)
        .send(&ctx("+15005550006"), &Message::text("hi"))
        .await;
    assert!(matches!(result.verdict, Verdict::Retryable { .. }));
    assert!(!result.detail.contains(TOKEN));
}

proptest! {
    #[test]
    fn checking_and_callbacks_never_panic(
        text in "\\PC{0,400}",
        url in "\\PC{0,80}",
        pairs in prop::collection::vec(("\\PC{0,12}", "\\PC{0,12}"), 0..6),
        signature_header in "\\PC{0,40}",
    ) {
        let channel = channel(settings("http://127.0.0.1:9"), TOKEN);
        let _ = channel.check(&Message::text(text.clone()));
        let form: Vec<(String, String)> = pairs;
        let token = SecretString::from(TOKEN);
        let _ = verify_status_callback(&token, &url, &form, &signature_header);
        let _ = verify_json_callback(&token, &url, text.as_bytes(), &signature_header);
        let _ = parse_status_callback(&form);
        let _ = interpret(201, None, Some(text.as_bytes()));
    }
}

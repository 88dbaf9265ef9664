use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

const NOW_MS: i64 = 1_700_000_000_000;
const API_KEY: &str = "SG.test-key.0123456789";

// [vec sendgrid-01]
const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAExg9I/37guUnhtEw3CA2Ab8YIAoWJRpLdaUBW/r8zt8baa9mTw9aSD2mmNLdQqd2TUvN+0fjzBbvd9rIpyP3Kfg==";
const TIMESTAMP: &str = "1700000000";
const BODY: &str = "[{\"email\":\"ops@example.com\",\"timestamp\":1700000000,\"event\":\"delivered\",\"sg_message_id\":\"abc.filter0001\",\"campaign_id\":\"c_42\"}]\r\n";
const SIGNATURE: &str = "MEUCIHzCQguNlke2HpSY1S/V8/jpEULzr8JUAeGpF2dClmQtAiEA7424+m1joRmAMsTUWNm0/syuc5MERBXBIri0KU28k1M=";

#[test]
fn the_event_webhook_vector_verifies_and_tampering_fails() {
    assert!(verify_event_signature(
        PUBLIC_KEY,
        TIMESTAMP,
        BODY.as_bytes(),
        SIGNATURE
    ));
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
        &PUBLIC_KEY[..64],
        &PUBLIC_KEY[64..]
    );
    assert!(verify_event_signature(
        &pem,
        TIMESTAMP,
        BODY.as_bytes(),
        SIGNATURE
    ));
    // The signed bytes are the raw body: without its trailing CRLF it no longer verifies.
    assert!(!verify_event_signature(
        PUBLIC_KEY,
        TIMESTAMP,
        BODY.trim_end().as_bytes(),
        SIGNATURE
    ));
    assert!(!verify_event_signature(
        PUBLIC_KEY,
        "1700000001",
        BODY.as_bytes(),
        SIGNATURE
    ));
    assert!(!verify_event_signature(
        PUBLIC_KEY,
        TIMESTAMP,
        BODY.as_bytes(),
        "MEUCIQ=="
    ));
    assert!(!verify_event_signature(
        "not a key",
        TIMESTAMP,
        BODY.as_bytes(),
        SIGNATURE
    ));
    let other_key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let other_public = {
        use p256::pkcs8::EncodePublicKey as _;
        let der = p256::PublicKey::from(other_key.verifying_key())
            .to_public_key_der()
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    };
    assert!(!verify_event_signature(
        &other_public,
        TIMESTAMP,
        BODY.as_bytes(),
        SIGNATURE
    ));
}

#[test]
fn events_become_receipts_keyed_by_the_message_id_prefix() {
    let receipts = parse_events(BODY.as_bytes()).unwrap();
    // No sg_event_id in the vector: a key from message, event and time.
    assert_eq!(
        receipts,
        [Receipt {
            event_key: "abc.filter0001:delivered:1700000000".into(),
            provider_ref: "abc".into(),
            status: ReceiptStatus::Delivered,
            detail: "delivered".into(),
        }]
    );

    let body = br#"[
        {"email":"a@example.com","timestamp":1700000100,"event":"bounce","sg_event_id":"ev-1","sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0","status":"5.1.1","type":"bounce","qunfa_idempotency_key":"k1"},
        {"email":"a@example.com","timestamp":1700000200,"event":"click","sg_event_id":"ev-2","sg_message_id":"14c5d75ce93.dfd.x","url":"https://x.example"},
        {"email":"a@example.com","event":"group_unsubscribe","sg_event_id":"ev-3"},
        {"email":"a@example.com","event":"spamreport","sg_event_id":"ev-4","sg_message_id":"m2.x"},
        {"event":"processed","sg_message_id":"m3.filter"}
    ]"#;
    let receipts = parse_events(body).unwrap();
    let summary: Vec<(&str, &str, &str)> = receipts
        .iter()
        .map(|r| {
            (
                r.provider_ref.as_str(),
                r.event_key.as_str(),
                r.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("14c5d75ce93", "ev-1", "failed"),
            ("14c5d75ce93", "ev-2", "click"),
            ("m2", "ev-4", "spamreport"),
            ("m3", "m3.filter:processed:0", "processed"),
        ]
    );
    assert_eq!(receipts[0].detail, "bounce: bounce 5.1.1");
    assert!(parse_events(b"{\"event\":\"delivered\"}").is_err());
    assert!(parse_events(b"").is_err());
}

#[test]
fn every_row_of_the_status_table() {
    let wait = Some(Duration::from_secs(30));
    let recipient_error = r#"{"errors":[{"message":"Does not contain a valid address.","field":"personalizations.0.to.0.email","help":"http://sendgrid.com/docs"}]}"#;
    let content_error = r#"{"errors":[{"message":"The content value must be a string at least one character in length.","field":"content.0.value","help":null}]}"#;
    let rows: &[(u16, Option<Duration>, &str, Verdict)] = &[
        (202, None, "", Verdict::Delivered),
        (200, None, "", Verdict::Delivered),
        (
            429,
            wait,
            "",
            Verdict::RateLimited {
                wait: Duration::from_secs(30),
            },
        ),
        (
            429,
            None,
            "",
            Verdict::RateLimited {
                wait: DEFAULT_RATE_LIMIT_WAIT,
            },
        ),
        (401, None, "", Verdict::AccountDisabled),
        (
            403,
            None,
            r#"{"errors":[{"message":"The from address does not match a verified Sender Identity."}]}"#,
            Verdict::AccountDisabled,
        ),
        (400, None, recipient_error, Verdict::RecipientInvalid),
        (400, None, content_error, Verdict::ContentBlocked),
        (400, None, "not json", Verdict::ContentBlocked),
        (413, None, "", Verdict::ContentBlocked),
        (500, None, "", Verdict::Retryable { after: None }),
        (503, wait, "", Verdict::Retryable { after: wait }),
    ];
    for (status, wait, body, expected) in rows {
        assert_eq!(classify(*status, *wait, body), *expected, "{status} {body}");
    }
}

#[test]
fn the_channel_takes_signed_events_only_with_its_public_key() {
    let receive = |key: Option<&str>, headers: &[(&'static str, &str)], body: &str| {
        let mut channel = channel("http://127.0.0.1:9", API_KEY);
        channel.settings.event_public_key = key.map(str::to_string);
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        channel
            .receipts(&ReceiptRequest {
                headers: &map,
                body: body.as_bytes(),
                now_ms: NOW_MS,
            })
            .unwrap()
    };
    let signed = [
        ("x-twilio-email-event-webhook-signature", SIGNATURE),
        ("x-twilio-email-event-webhook-timestamp", TIMESTAMP),
    ];
    let receipts = receive(Some(PUBLIC_KEY), &signed, BODY).unwrap();
    assert_eq!(receipts[0].provider_ref, "abc");
    let forged =
        |result: Result<Vec<Receipt>, ReceiptError>| matches!(result, Err(ReceiptError::Forged(_)));
    assert!(forged(receive(
        Some(PUBLIC_KEY),
        &signed,
        &BODY.replace("delivered", "bounce")
    )));
    assert!(forged(receive(Some(PUBLIC_KEY), &signed[..1], BODY)));
    assert!(forged(receive(None, &signed, BODY)));
}

// -- against a mock of api.sendgrid.com

#[derive(Clone, Default)]
struct Mock {
    calls: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// Checks the bearer key and the body shape the way Mail Send validates them, and
/// answers like SendGrid: 202 with `X-Message-Id`, or its error bodies.
async fn mail_send(
    State(mock): State<Mock>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let errors = |status: StatusCode, field: &str| {
        (status, axum::Json(serde_json::json!({"errors": [{"message": "refused", "field": field, "help": null}]}))).into_response()
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return errors(StatusCode::UNAUTHORIZED, "");
    }
    let Ok(request) = serde_json::from_str::<serde_json::Value>(&body) else {
        return errors(StatusCode::BAD_REQUEST, "");
    };
    let content = request["content"].as_array().cloned().unwrap_or_default();
    let shape_ok = request["from"]["email"].is_string()
        && request["subject"].as_str().is_some_and(|s| !s.is_empty())
        && content.first().is_some_and(|c| c["type"] == "text/plain")
        && content.iter().skip(1).all(|c| c["type"] == "text/html");
    if !shape_ok {
        return errors(StatusCode::BAD_REQUEST, "content");
    }
    mock.calls.lock().unwrap().push(request.clone());
    match request["personalizations"][0]["to"][0]["email"]
        .as_str()
        .unwrap_or_default()
    {
        "limited@example.com" => {
            let mut response = errors(StatusCode::TOO_MANY_REQUESTS, "");
            response.headers_mut().insert(
                "x-ratelimit-reset",
                (NOW_MS / 1000 + 30).to_string().parse().unwrap(),
            );
            response
        }
        "bounced@example.com" => errors(StatusCode::BAD_REQUEST, "personalizations.0.to.0.email"),
        "down@example.com" => (StatusCode::SERVICE_UNAVAILABLE, "").into_response(),
        _ => {
            let mut response = StatusCode::ACCEPTED.into_response();
            response
                .headers_mut()
                .insert("x-message-id", "W86EgYT6SQKk0lRflfLRsA".parse().unwrap());
            response
        }
    }
}

async fn mock_sendgrid() -> (String, Mock) {
    let mock = Mock::default();
    let router = axum::Router::new()
        .route("/v3/mail/send", post(mail_send))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, mock)
}

fn channel(base_url: &str, api_key: &str) -> SendgridChannel {
    SendgridChannel::new(
        SendgridSettings {
            base_url: base_url.to_string(),
            from: "Campaign Bot <bot@example.com>".to_string(),
            event_public_key: None,
        },
        SecretString::from(api_key),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(NOW_MS)),
    )
    .unwrap()
}

fn ctx(recipient: &str) -> SendContext<'_> {
    SendContext {
        job_id: 42,
        idempotency_key: "cmp-42.u-7.step-2",
        attempt: 1,
        recipient,
    }
}

#[tokio::test]
async fn a_mail_is_sent_with_plain_then_html_and_the_idempotency_key() {
    let (url, mock) = mock_sendgrid().await;
    let message = Message {
        text: "Your order shipped".into(),
        html: Some("<p>Your order <b>shipped</b></p>".into()),
        title: Some("Shipping update".into()),
        ..Message::default()
    };
    let result = channel(&url, API_KEY)
        .send(&ctx("ops@example.com"), &message)
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    assert_eq!(result.status, Some(202));
    assert_eq!(
        result.provider_ref.as_deref(),
        Some("W86EgYT6SQKk0lRflfLRsA")
    );
    let calls = mock.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0],
        serde_json::json!({
            "personalizations": [{"to": [{"email": "ops@example.com"}]}],
            "from": {"email": "bot@example.com", "name": "Campaign Bot"},
            "subject": "Shipping update",
            "content": [
                {"type": "text/plain", "value": "Your order shipped"},
                {"type": "text/html", "value": "<p>Your order <b>shipped</b></p>"},
            ],
            "custom_args": {"qunfa_idempotency_key": "cmp-42.u-7.step-2", "qunfa_job_id": "42"},
        })
    );
}

#[tokio::test]
async fn sendgrid_refusals_are_classified() {
    let (url, mock) = mock_sendgrid().await;
    let channel = channel(&url, API_KEY);
    let message = Message::text("hello");
    let cases = [
        (
            "limited@example.com",
            Verdict::RateLimited {
                wait: Duration::from_secs(30),
            },
        ),
        ("bounced@example.com", Verdict::RecipientInvalid),
        ("down@example.com", Verdict::Retryable { after: None }),
    ];
    for (to, expected) in cases {
        let result = channel.send(&ctx(to), &message).await;
        assert_eq!(result.verdict, expected, "{to}: {}", result.detail);
        assert_eq!(result.provider_ref, None);
    }
    let wrong = self::channel(&url, "SG.wrong");
    let refused = wrong.send(&ctx("ops@example.com"), &message).await;
    assert_eq!(refused.verdict, Verdict::AccountDisabled);
    assert!(!format!("{wrong:?}").contains("SG.wrong"));

    let before = mock.calls.lock().unwrap().len();
    assert_eq!(
        channel.send(&ctx("no-at-sign"), &message).await.verdict,
        Verdict::RecipientInvalid
    );
    assert_eq!(
        channel
            .send(&ctx("ops@example.com"), &Message::text(""))
            .await
            .verdict,
        Verdict::ContentBlocked
    );
    assert_eq!(mock.calls.lock().unwrap().len(), before, "nothing was sent");
}

#[tokio::test]
async fn a_mail_over_the_size_limit_is_refused_before_sending() {
    let (url, mock) = mock_sendgrid().await;
    let channel = channel(&url, API_KEY);
    let huge = Message {
        text: "x".repeat(16 * 1024 * 1024),
        html: Some("y".repeat(15 * 1024 * 1024)),
        ..Message::default()
    };
    let error = channel.check(&huge).unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
    let result = channel.send(&ctx("ops@example.com"), &huge).await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert!(mock.calls.lock().unwrap().is_empty());
}

proptest! {
    #[test]
    fn verifying_and_parsing_never_panic(
        key in "\\PC{0,120}",
        timestamp in "\\PC{0,12}",
        body in prop::collection::vec(any::<u8>(), 0..300),
        signature in "[A-Za-z0-9+/=]{0,100}",
    ) {
        let _ = verify_event_signature(&key, &timestamp, &body, &signature);
        let _ = verify_event_signature(PUBLIC_KEY, &timestamp, &body, &signature);
        let _ = parse_events(&body);
        let _ = classify(400, None, &String::from_utf8_lossy(&body));
    }
}

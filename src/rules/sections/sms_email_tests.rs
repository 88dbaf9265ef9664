//! The SMS and e-mail channel kinds as read from rules files: defaults, every check with
//! its position, and the limits and batch sizes each kind brings.

use crate::rules::model::{ChannelAccount, ChannelKind, Limits, SecretRef, SmtpTls};
use crate::rules::{RulesError, load};

fn load_one(toml: &str) -> Result<ChannelAccount, Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.toml"), toml).expect("write");
    match load(dir.path()) {
        Ok(rules) => Ok(rules.channels.into_iter().next().expect("one channel")),
        Err(RulesError { problems, .. }) => Err(problems
            .iter()
            .map(|p| {
                let shown = p.to_string();
                let prefix = format!("{}/", dir.path().display());
                shown
                    .strip_prefix(&prefix)
                    .map(str::to_string)
                    .unwrap_or(shown)
            })
            .collect()),
    }
}

#[track_caller]
fn one_problem(toml: &str, location: &str, fragment: &str) {
    let problems = load_one(toml).expect_err("expected a problem");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!("{location}: ")),
        "{problems:?}"
    );
    assert!(problems[0].contains(fragment), "{problems:?}");
}

const TWILIO: &str = "[[channel]]\nid = \"sms\"\nkind = \"twilio_sms\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token_env = \"TWILIO_TOKEN\"\n";

#[test]
fn twilio_reads_with_defaults() {
    let account = load_one(&format!("{TWILIO}from = \"+15005550006\"\n")).unwrap();
    assert_eq!(
        account.kind,
        ChannelKind::TwilioSms {
            base_url: "https://api.twilio.com".into(),
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: SecretRef::new("TWILIO_TOKEN"),
            from: Some("+15005550006".into()),
            messaging_service_sid: None,
            status_callback_url: None,
            max_segments: 10,
        }
    );
    assert_eq!(account.limits.per_minute, Some(60));
    assert_eq!(account.kind.max_batch(), 1);

    let full = load_one(&format!(
        "{TWILIO}messaging_service_sid = \"MG0123456789abcdef0123456789abcdef\"\n\
         status_callback_url = \"https://q.example.com/cb\"\nmax_segments = 3\n\
         base_url = \"http://127.0.0.1:9/\"\nper_minute = 0\n"
    ))
    .unwrap();
    let ChannelKind::TwilioSms {
        base_url,
        from,
        max_segments,
        messaging_service_sid,
        status_callback_url,
        ..
    } = full.kind
    else {
        panic!("{:?}", full.kind);
    };
    assert_eq!(base_url, "http://127.0.0.1:9");
    assert_eq!((from, max_segments), (None, 3));
    assert!(messaging_service_sid.is_some() && status_callback_url.is_some());
    assert_eq!(full.limits, Limits::default());
}

#[test]
fn twilio_checks_point_at_the_value() {
    one_problem(
        TWILIO,
        "a.toml:1:1",
        "needs `from` (the sending number) or `messaging_service_sid`",
    );
    one_problem(
        "[[channel]]\nid = \"sms\"\nkind = \"twilio_sms\"\naccount_sid = \"SK123\"\nauth_token_env = \"T\"\nfrom = \"+1\"\n",
        "a.toml:4:15",
        "`account_sid` must be `AC` followed by 32 hex digits",
    );
    one_problem(
        &format!("{TWILIO}from = \"+1\"\nmax_segments = 25\n"),
        "a.toml:7:16",
        "between 1 and 24",
    );
    one_problem(
        &format!("{TWILIO}from = \"+1\"\nstatus_callback_url = \"ftp://x\"\n"),
        "a.toml:7:23",
        "http://",
    );
    one_problem(
        &format!("{TWILIO}form = \"+1\"\nfrom = \"+1\"\n"),
        "a.toml:6:1",
        "did you mean `from`?",
    );
    one_problem(
        &format!(
            "{TWILIO}from = \"  \"\nmessaging_service_sid = \"MG0123456789abcdef0123456789abcdef\"\n"
        ),
        "a.toml:6:8",
        "must not be empty",
    );
}

#[test]
fn aliyun_and_tencent_read_with_defaults_and_batch_up_to_their_caps() {
    let aliyun = load_one(
        "[[channel]]\nid = \"sms\"\nkind = \"aliyun_sms\"\naccess_key_id = \"LTAI\"\n\
         access_key_secret_env = \"ALIYUN_SECRET\"\nsign_name = \"阿里云短信测试\"\nbatch_size = 1000\n",
    )
    .unwrap();
    assert_eq!(
        aliyun.kind,
        ChannelKind::AliyunSms {
            base_url: "https://dysmsapi.aliyuncs.com".into(),
            access_key_id: "LTAI".into(),
            access_key_secret: SecretRef::new("ALIYUN_SECRET"),
            sign_name: "阿里云短信测试".into(),
            template_code: None,
            region_id: "cn-hangzhou".into(),
        }
    );
    assert_eq!(aliyun.batch_size, Some(1000));
    assert_eq!(aliyun.limits.recipient_per_minute, Some(1));
    assert_eq!(aliyun.limits.recipient_per_day, Some(10));

    let tencent = "[[channel]]\nid = \"sms\"\nkind = \"tencent_sms\"\nsecret_id = \"AKID\"\n\
                   secret_key_env = \"TENCENT_KEY\"\nsdk_app_id = \"1400000000\"\nsign_name = \"腾讯云\"\n";
    let account = load_one(&format!("{tencent}template_id = \"1234567\"\n")).unwrap();
    assert_eq!(
        account.kind,
        ChannelKind::TencentSms {
            base_url: "https://sms.tencentcloudapi.com".into(),
            secret_id: "AKID".into(),
            secret_key: SecretRef::new("TENCENT_KEY"),
            sdk_app_id: "1400000000".into(),
            sign_name: "腾讯云".into(),
            template_id: Some("1234567".into()),
            region: "ap-guangzhou".into(),
        }
    );
    assert_eq!(account.kind.max_batch(), 200);
    one_problem(
        &format!("{tencent}batch_size = 201\n"),
        "a.toml:8:14",
        "between 1 and 200",
    );
    one_problem(
        &format!("{tencent}template_id = \"SMS_1\"\n"),
        "a.toml:8:15",
        "numeric id",
    );
    one_problem(
        "[[channel]]\nid = \"sms\"\nkind = \"aliyun_sms\"\naccess_key_id = \"LTAI\"\naccess_key_secret_env = \"S\"\n",
        "a.toml:1:1",
        "missing the required key `sign_name`",
    );
}

const SMTP: &str =
    "[[channel]]\nid = \"mail\"\nkind = \"smtp\"\nfrom = \"Campaigns <bot@example.com>\"\n";

#[test]
fn smtp_reads_with_tls_dependent_ports_and_checks_credentials() {
    let account = load_one(&format!(
        "{SMTP}host = \"smtp.example.com\"\nusername = \"bot\"\npassword_env = \"SMTP_PASSWORD\"\n"
    ))
    .unwrap();
    assert_eq!(
        account.kind,
        ChannelKind::Smtp {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: Some("bot".into()),
            password: Some(SecretRef::new("SMTP_PASSWORD")),
            from: "Campaigns <bot@example.com>".into(),
        }
    );
    let implicit = load_one(&format!(
        "{SMTP}host = \"smtp.example.com\"\ntls = \"implicit\"\n"
    ))
    .unwrap();
    assert!(matches!(
        implicit.kind,
        ChannelKind::Smtp {
            port: 465,
            tls: SmtpTls::Implicit,
            password: None,
            ..
        }
    ));
    let local = load_one(&format!(
        "{SMTP}host = \"127.0.0.1\"\ntls = \"none\"\nport = 2525\nusername = \"u\"\npassword_env = \"P\"\n"
    ))
    .unwrap();
    assert!(matches!(
        local.kind,
        ChannelKind::Smtp {
            port: 2525,
            tls: SmtpTls::None,
            ..
        }
    ));

    one_problem(
        &format!(
            "{SMTP}host = \"smtp.example.com\"\ntls = \"none\"\nusername = \"u\"\npassword_env = \"P\"\n"
        ),
        "a.toml:7:12",
        "clear text",
    );
    one_problem(
        &format!("{SMTP}host = \"h\"\nusername = \"u\"\n"),
        "a.toml:1:1",
        "both `username` and `password_env`",
    );
    one_problem(
        &format!("{SMTP}host = \"h\"\ntls = \"ssl\"\n"),
        "a.toml:6:7",
        "\"starttls\" (port 587)",
    );
    one_problem(
        &format!("{SMTP}host = \"h\"\nport = 70000\n"),
        "a.toml:6:8",
        "between 1 and 65535",
    );
    one_problem(
        "[[channel]]\nid = \"mail\"\nkind = \"smtp\"\nhost = \"h\"\nfrom = \"not an address\"\n",
        "a.toml:5:8",
        "`from` must be an e-mail address",
    );
}

#[test]
fn sendgrid_reads_and_checks_the_event_key() {
    let base = "[[channel]]\nid = \"mail\"\nkind = \"sendgrid\"\napi_key_env = \"SENDGRID_KEY\"\nfrom = \"bot@example.com\"\n";
    // [vec sendgrid-01]'s key.
    let key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAExg9I/37guUnhtEw3CA2Ab8YIAoWJRpLdaUBW/r8zt8baa9mTw9aSD2mmNLdQqd2TUvN+0fjzBbvd9rIpyP3Kfg==";
    let account = load_one(&format!("{base}event_public_key = \"{key}\"\n")).unwrap();
    assert_eq!(
        account.kind,
        ChannelKind::Sendgrid {
            base_url: "https://api.sendgrid.com".into(),
            api_key: SecretRef::new("SENDGRID_KEY"),
            from: "bot@example.com".into(),
            event_public_key: Some(key.into()),
        }
    );
    one_problem(
        &format!("{base}event_public_key = \"bm90IGEga2V5\"\n"),
        "a.toml:6:20",
        "P-256 public key",
    );
}

#[test]
fn channels_are_built_or_disabled_by_their_secrets() {
    use crate::channels::{ChannelRegistry, ChannelStatus};
    use crate::rules::model::test_secrets;
    test_secrets::set(
        "QUNFA_UNIT_SMSMAIL_TOKEN",
        "0123456789abcdef0123456789abcdef",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        format!(
            "{}from = \"+1\"\n\n{}host = \"localhost\"\ntls = \"none\"\n\n\
             [[channel]]\nid = \"tencent\"\nkind = \"tencent_sms\"\nsecret_id = \"AKID\"\n\
             secret_key_env = \"QUNFA_UNIT_SMSMAIL_NEVER_SET\"\nsdk_app_id = \"1\"\nsign_name = \"s\"\n",
            TWILIO.replace("TWILIO_TOKEN", "QUNFA_UNIT_SMSMAIL_TOKEN"),
            SMTP,
        ),
    )
    .unwrap();
    let rules = load(dir.path()).unwrap();
    let clock: crate::clock::SharedClock = std::sync::Arc::new(crate::clock::ManualClock::new(0));
    let registry = ChannelRegistry::build(&rules, &clock);
    let kind = |id: &str| match registry.get(id) {
        Some(ChannelStatus::Ready(channel)) => channel.kind().to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(kind("sms"), "twilio_sms");
    assert_eq!(kind("mail"), "smtp");
    let disabled: Vec<(&str, &str)> = registry.disabled().collect();
    assert_eq!(
        disabled,
        [(
            "tencent",
            "environment variable `QUNFA_UNIT_SMSMAIL_NEVER_SET` is not set"
        )]
    );
    assert_eq!(registry.batch_size("tencent"), 200);
}

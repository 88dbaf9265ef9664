//! The directory as a whole: the shipped rules, files and their order, defaults, and
//! arbitrary input.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::rules::{
    ChannelKind, DeliverySettings, InboundPlatform, Role, check, default_command, secret_warnings,
};

fn shipped_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bot-rules")
}

#[test]
fn the_shipped_rules_load_with_no_problems_and_no_warnings() {
    let report = check(&shipped_dir());
    assert_eq!(report.problems, Vec::new());
    assert_eq!(report.warnings, Vec::<String>::new());
    let rules = load(&shipped_dir()).expect("shipped rules load");
    assert_eq!(rules.delivery, DeliverySettings::default());
    assert_eq!(
        rules.inbound_account("shell").map(|a| &a.platform),
        Some(&InboundPlatform::Shell)
    );
    assert!(matches!(
        rules.channel("log").map(|c| &c.kind),
        Some(ChannelKind::Log { path }) if path == Path::new("qunfa-outbox.jsonl")
    ));
    assert_eq!(rules.role_of("shell", "local"), Some(Role::Admin));
    assert_eq!(rules.command("帮助").map(|c| c.name.as_str()), Some("help"));
    assert_eq!(rules.command("我是谁").and_then(|c| c.role), None);
    assert_eq!(
        rules.commands.get("help").and_then(|c| c.role),
        Some(Role::Viewer)
    );
}

#[test]
fn an_empty_file_gets_every_default() {
    let rules = loads(&[("empty.toml", "# nothing yet\n")]);
    assert_eq!(rules.delivery, DeliverySettings::default());
    assert!(rules.inbound.is_empty() && rules.channels.is_empty() && rules.operators.is_empty());
    assert_eq!(rules.commands.get("help"), default_command("help").as_ref());
    assert_eq!(
        rules.commands.get("whoami"),
        default_command("whoami").as_ref()
    );
}

#[test]
fn a_missing_builtin_gets_its_default_without_clashing_aliases() {
    let rules = loads(&[(
        "commands.toml",
        "[[command]]\nname = \"help\"\naliases = [\"我是谁\"]\nsummary = \"Help\"\n",
    )]);
    let whoami = rules.commands.get("whoami").expect("default whoami");
    assert!(
        whoami.aliases.is_empty(),
        "the configured alias wins: {whoami:?}"
    );
    assert_eq!(
        rules.command("我是谁").map(|c| c.name.as_str()),
        Some("help")
    );
}

#[test]
fn files_merge_in_name_order_and_other_files_are_ignored() {
    let rules = loads(&[
        (
            "b.toml",
            "[[channel]]\nid = \"second\"\nkind = \"log\"\npath = \"b.jsonl\"\n",
        ),
        (
            "a.toml",
            "[[channel]]\nid = \"first\"\nkind = \"log\"\npath = \"a.jsonl\"\n",
        ),
        ("notes.txt", "not toml at all ["),
        (".#a.toml", "editor lock file ["),
    ]);
    let ids: Vec<&str> = rules.channels.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["first", "second"]);
}

#[test]
fn inline_tables_are_accepted() {
    let rules = loads(&[(
        "rules.toml",
        "inbound = [{ id = \"shell\", platform = \"shell\" }]\ndelivery = { concurrency = 4, retry = { jitter = 0 } }\n",
    )]);
    assert_eq!(rules.inbound.len(), 1);
    assert_eq!(rules.delivery.concurrency, 4);
    assert_eq!(rules.delivery.retry.jitter, 0.0);
}

#[test]
fn delivery_values_are_read() {
    let rules = loads(&[(
        "delivery.toml",
        "[delivery]\nhttp_timeout = \"1s\"\nlease = \"1m 30s\"\n[delivery.retry]\nschedule = [\"1s\"]\nmax_age = \"1h\"\n",
    )]);
    assert_eq!(rules.delivery.http_timeout, Duration::from_secs(1));
    assert_eq!(rules.delivery.lease, Duration::from_secs(90));
    assert_eq!(rules.delivery.retry.schedule, [Duration::from_secs(1)]);
    assert_eq!(rules.delivery.retry.max_age, Duration::from_secs(3600));
}

#[test]
fn a_missing_directory_is_one_problem_at_the_directory() {
    let dir = rules_dir(&[]);
    let missing = dir.path().join("nope");
    let error = load(&missing).expect_err("missing directory");
    assert_eq!(error.problems.len(), 1);
    let shown = error.problems[0].to_string();
    assert!(
        shown.starts_with(&format!("{}:1:1: ", missing.display())),
        "{shown}"
    );
    assert!(shown.contains("does not exist"), "{shown}");
}

#[test]
fn a_directory_without_rules_files_is_a_problem() {
    let dir = rules_dir(&[("README.md", "# rules")]);
    let error = load(dir.path()).expect_err("no rules files");
    assert_eq!(error.problems.len(), 1);
    assert!(error.problems[0].message.contains("no *.toml files"));
    assert_eq!((error.problems[0].line, error.problems[0].column), (1, 1));
}

#[test]
fn a_file_that_is_not_utf8_points_at_the_first_bad_byte() {
    let dir = rules_dir(&[]);
    std::fs::write(dir.path().join("bad.toml"), b"# ok\nx = \"\xff\"\n").expect("write");
    let error = load(dir.path()).expect_err("not UTF-8");
    assert_eq!(
        relative(dir.path(), &error),
        ["bad.toml:2:6: the file is not valid UTF-8; save it as UTF-8"]
    );
}

#[test]
fn secrets_that_do_not_resolve_are_warnings_naming_the_variable() {
    let files = [(
        "channels.toml",
        "[[channel]]\nid = \"hooks\"\nkind = \"webhook\"\nurl = \"https://example.com/q\"\nsecret_env = \"QUNFA_TEST_SECRET_THAT_IS_NEVER_SET\"\n\n\
         [[channel]]\nid = \"set\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/q\"\nsecret_env = \"PATH\"\n",
    )];
    let rules = loads(&files);
    assert_eq!(
        secret_warnings(&rules),
        [
            "channel `hooks` is disabled: environment variable `QUNFA_TEST_SECRET_THAT_IS_NEVER_SET` is not set"
        ]
    );
}

#[test]
fn check_reports_problems_and_warnings_together() {
    let dir = rules_dir(&[
        (
            "channels.toml",
            "[[channel]]\nid = \"hooks\"\nkind = \"webhook\"\nurl = \"https://example.com/q\"\nsecret_env = \"QUNFA_TEST_SECRET_THAT_IS_NEVER_SET\"\n",
        ),
        ("delivery.toml", "[delivery]\nconcurrency = 0\n"),
    ]);
    let report = check(dir.path());
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_text_loads_or_yields_positioned_problems(text in "\\PC{0,200}") {
        let dir = rules_dir(&[("fuzz.toml", &text)]);
        if let Err(error) = load(dir.path()) {
            prop_assert!(!error.problems.is_empty());
            for problem in &error.problems {
                prop_assert!(problem.line >= 1 && problem.column >= 1, "{}", problem);
                prop_assert!(!problem.message.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_values_in_known_keys_never_panic(
        key in prop::sample::select(vec!["id", "platform", "kind", "path", "url", "secret_env", "role", "user", "name", "aliases", "summary", "sha256"]),
        value in prop::sample::select(vec!["\"\"", "1", "-1", "1.5", "true", "[]", "[\"a\", 2]", "{}", "1979-05-27", "\"x y\"", "\"名字\""]),
        section in prop::sample::select(vec!["inbound", "channel", "operator", "command", "api_token"]),
    ) {
        let text = format!("{SHELL}[[{section}]]\n{key} = {value}\n");
        let dir = rules_dir(&[("fuzz.toml", &text)]);
        if let Err(error) = load(dir.path()) {
            prop_assert!(error.problems.iter().all(|p| p.line >= 1));
        }
    }
}

/// The examples in bot-rules/README.md, taken together, are valid rules: the schema
/// documentation cannot drift from the loader unnoticed.
#[test]
fn the_readme_examples_are_valid_rules() {
    let readme = std::fs::read_to_string(shipped_dir().join("README.md")).expect("README");
    let mut examples = String::new();
    let mut in_toml = false;
    for line in readme.lines() {
        match (in_toml, line.trim_end()) {
            (false, "```toml") => in_toml = true,
            (true, "```") => in_toml = false,
            (true, line) => {
                examples.push_str(line);
                examples.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        examples.contains("[[api_token]]"),
        "every section has an example"
    );
    let rules = loads(&[("examples.toml", &examples)]);
    // Every channel kind this version reads has an example (counting them instead would
    // change with each new kind).
    for kind in crate::rules::sections::CHANNEL_KINDS {
        assert!(
            rules
                .channels
                .iter()
                .any(|channel| channel.kind.name() == *kind),
            "bot-rules/README.md has no example of channel kind `{kind}`"
        );
    }
    assert_eq!(rules.api_tokens.len(), 1);
    assert_eq!(rules.command("h").map(|c| c.name.as_str()), Some("help"));
}

#[test]
fn circuit_alerts_and_quota_zone_are_read() {
    let rules = loads(&[(
        "delivery.toml",
        "[delivery]\nalerts_channel = \"ops\"\nquota_time_zone = \"UTC\"\n[delivery.circuit]\nfailures = 3\ncooldown = \"30s\"\n\n[[channel]]\nid = \"ops\"\nkind = \"log\"\npath = \"ops.jsonl\"\nper_minute = 20\nrecipient_per_day = 0\n",
    )]);
    assert_eq!(rules.delivery.circuit.failures, 3);
    assert_eq!(rules.delivery.circuit.cooldown, Duration::from_secs(30));
    assert_eq!(
        rules.delivery.circuit.disabled_cooldown,
        Duration::from_secs(600),
        "the default"
    );
    let alerts = rules.delivery.alerts.as_ref().unwrap();
    assert_eq!((alerts.channel.as_str(), alerts.to.as_str()), ("ops", ""));
    assert_eq!(rules.delivery.quota_time_zone, "UTC");
    let ops = rules.channel("ops").unwrap();
    assert_eq!(ops.limits.per_minute, Some(20));
    assert_eq!(ops.limits.recipient_per_day, None);
}

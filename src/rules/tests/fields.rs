//! One test per check made inside a single entry, each with the exact position reported.

use super::*;

#[test]
fn a_toml_syntax_error_points_at_the_broken_header() {
    assert_one_problem(
        &[("inbound.toml", "# accounts\n[[inbound]\nid = \"shell\"\n")],
        "inbound.toml:2:10",
        &["TOML syntax error", "invalid table header"],
    );
}

#[test]
fn an_unknown_key_points_at_the_key_and_suggests_the_right_one() {
    assert_one_problem(
        &[(
            "inbound.toml",
            "[[inbound]]\nid = \"shell\"\nplatfrom = \"shell\"\nplatform = \"shell\"\n",
        )],
        "inbound.toml:3:1",
        &[
            "unknown key `platfrom` in [[inbound]]",
            "did you mean `platform`?",
            "known keys: id, platform",
        ],
    );
}

#[test]
fn an_unknown_section_is_named_with_the_known_ones() {
    assert_one_problem(
        &[("a.toml", "[[operators]]\nplatform = \"shell\"\n")],
        "a.toml:1:3",
        &[
            "unknown section `operators`",
            "did you mean `operator`?",
            "sections: delivery,",
        ],
    );
}

#[test]
fn a_wrong_type_says_what_was_expected_and_found() {
    assert_one_problem(
        &[(
            "a.toml",
            &format!("{SHELL}[[operator]]\nplatform = \"shell\"\nuser = 10086\nrole = \"admin\"\n"),
        )],
        "a.toml:6:8",
        &[
            "`user` in [[operator]] must be a string, found an integer",
            "double quotes",
        ],
    );
}

#[test]
fn a_section_written_as_a_plain_table_asks_for_double_brackets() {
    assert_one_problem(
        &[(
            "a.toml",
            "[inbound]\nid = \"shell\"\nplatform = \"shell\"\n",
        )],
        "a.toml:1:2",
        &["`inbound` must be an array of tables", "[[inbound]]"],
    );
}

#[test]
fn a_missing_required_key_points_at_the_table() {
    assert_one_problem(
        &[("a.toml", "\n[[channel]]\nid = \"log\"\nkind = \"log\"\n")],
        "a.toml:2:1",
        &["[[channel]] is missing the required key `path`"],
    );
}

#[test]
fn every_problem_of_one_entry_is_reported() {
    let problems = problems_in(&[(
        "a.toml",
        "[[api_token]]\nname = \"\"\nrole = \"root\"\nsha256 = \"abc\"\nextra = 1\n",
    )]);
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn a_bad_id_says_which_characters_are_allowed() {
    assert_one_problem(
        &[(
            "a.toml",
            "[[inbound]]\nid = \"Ops Chat\"\nplatform = \"shell\"\n",
        )],
        "a.toml:2:6",
        &["invalid id `Ops Chat`", "lowercase letters, digits"],
    );
    let long = "a".repeat(65);
    let problems = problems_in(&[(
        "a.toml",
        &format!("[[inbound]]\nid = \"{long}\"\nplatform = \"shell\"\n"),
    )]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems_in(&[(
            "a.toml",
            &format!(
                "[[inbound]]\nid = \"{}\"\nplatform = \"shell\"\n",
                &long[1..]
            )
        )])
        .is_empty()
    );
}

#[test]
fn every_platform_is_served_and_a_typo_is_unknown() {
    // Every platform named in the design has a handler now, so none is "not supported yet".
    for name in crate::rules::InboundPlatform::NAMES {
        let problems = problems_in(&[(
            "a.toml",
            &format!("[[inbound]]\nid = \"ops\"\nplatform = \"{name}\"\n"),
        )]);
        assert!(
            problems
                .iter()
                .all(|p| !p.to_string().contains("not supported by this version")),
            "{name}: {problems:#?}"
        );
    }
    assert_one_problem(
        &[("a.toml", "[[inbound]]\nid = \"ops\"\nplatform = \"shel\"\n")],
        "a.toml:3:12",
        &[
            "unknown platform `shel`",
            "did you mean `shell`?",
            "supported: shell",
        ],
    );
}

#[test]
fn a_misspelt_channel_kind_gets_the_nearest_one() {
    assert_one_problem(
        &[(
            "a.toml",
            "[[channel]]\nid = \"sms\"\nkind = \"twillio_sms\"\n",
        )],
        "a.toml:3:8",
        &[
            "unknown channel kind `twillio_sms`",
            "did you mean `twilio_sms`?",
        ],
    );
}

const WEBHOOK: &str = "[[channel]]\nid = \"hooks\"\nkind = \"webhook\"\n";

#[test]
fn secret_env_must_be_a_variable_name_not_a_secret() {
    assert_one_problem(
        &[(
            "a.toml",
            &format!("{WEBHOOK}url = \"https://example.com/\"\nsecret_env = \"whsec_c2VjcmV0\"\n"),
        )],
        "a.toml:5:14",
        &[
            "`secret_env` must be the NAME of an environment variable",
            "never put the secret itself",
        ],
    );
}

#[test]
fn a_webhook_url_must_be_http_or_https_without_credentials() {
    let cases = [
        ("not a url", "is not a valid URL"),
        ("ftp://example.com/x", "must start with http:// or https://"),
        (
            "https://user:pw@example.com/",
            "secrets never live in rules files",
        ),
    ];
    for (url, fragment) in cases {
        assert_one_problem(
            &[(
                "a.toml",
                &format!("{WEBHOOK}url = \"{url}\"\nsecret_env = \"HOOK\"\n"),
            )],
            "a.toml:4:7",
            &[fragment],
        );
    }
}

#[test]
fn a_bad_duration_points_at_the_value_and_shows_the_syntax() {
    assert_one_problem(
        &[(
            "delivery.toml",
            "[delivery]\nhttp_timeout = \"5s\"\nlease = \"6Os\"\n",
        )],
        "delivery.toml:3:9",
        &[
            "invalid duration `6Os` for `lease` in [delivery]",
            "unknown unit `Os`",
            "\"1h 30m\"",
        ],
    );
}

#[test]
fn lease_must_exceed_http_timeout_even_when_one_is_a_default() {
    assert_one_problem(
        &[(
            "d.toml",
            "[delivery]\nhttp_timeout = \"30s\"\nlease = \"30s\"\n",
        )],
        "d.toml:3:9",
        &["`lease` (30s) must be longer than `http_timeout` (30s)"],
    );
    assert_one_problem(
        &[("d.toml", "[delivery]\nhttp_timeout = \"2m\"\n")],
        "d.toml:2:16",
        &["`lease` (1m, the default) must be longer than `http_timeout` (2m)"],
    );
}

#[test]
fn concurrency_must_be_between_1_and_1024() {
    for value in ["0", "1025", "-3"] {
        assert_one_problem(
            &[("d.toml", &format!("[delivery]\nconcurrency = {value}\n"))],
            "d.toml:2:15",
            &["`concurrency` must be between 1 and 1024"],
        );
    }
    assert!(problems_in(&[("d.toml", "[delivery]\nconcurrency = 1024\n")]).is_empty());
}

#[test]
fn jitter_must_be_at_least_zero_and_below_one() {
    for value in ["1", "1.0", "-0.1", "nan"] {
        assert_one_problem(
            &[("d.toml", &format!("[delivery.retry]\njitter = {value}\n"))],
            "d.toml:2:10",
            &["`jitter` must be at least 0 and below 1"],
        );
    }
}

#[test]
fn the_retry_schedule_must_not_be_empty_and_each_wait_must_parse() {
    assert_one_problem(
        &[("d.toml", "[delivery.retry]\nschedule = []\n")],
        "d.toml:2:1",
        &["`schedule` in [delivery.retry] is empty"],
    );
    assert_one_problem(
        &[(
            "d.toml",
            "[delivery.retry]\nschedule = [\"5s\", \"soon\"]\n",
        )],
        "d.toml:2:19",
        &["invalid duration `soon` for `schedule`"],
    );
}

#[test]
fn roles_must_be_known() {
    assert_one_problem(
        &[(
            "a.toml",
            &format!("{SHELL}[[operator]]\nplatform = \"shell\"\nuser = \"u\"\nrole = \"Admin\"\n"),
        )],
        "a.toml:7:8",
        &[
            "unknown role `Admin`",
            "did you mean `admin`?",
            "roles: viewer, operator, approver, admin",
        ],
    );
    // "anyone" exists for commands only: an operator or token always has a real role.
    assert_one_problem(
        &[(
            "a.toml",
            &format!(
                "{SHELL}[[operator]]\nplatform = \"shell\"\nuser = \"u\"\nrole = \"anyone\"\n"
            ),
        )],
        "a.toml:7:8",
        &["unknown role `anyone`"],
    );
}

#[test]
fn a_command_needs_a_summary() {
    assert_one_problem(
        &[("c.toml", "[[command]]\nname = \"help\"\n")],
        "c.toml:1:1",
        &["[[command]] is missing the required key `summary`"],
    );
    assert_one_problem(
        &[("c.toml", "[[command]]\nname = \"help\"\nsummary = \"  \"\n")],
        "c.toml:3:11",
        &["`summary` in [[command]] must not be empty"],
    );
}

#[test]
fn aliases_are_single_words_without_a_slash() {
    assert_one_problem(
        &[(
            "c.toml",
            "[[command]]\nname = \"help\"\nsummary = \"s\"\naliases = [\"h\", \"/帮助\"]\n",
        )],
        "c.toml:4:17",
        &["alias `/帮助` must be one word", "without the leading `/`"],
    );
}

#[test]
fn an_api_token_digest_must_be_64_hex_characters() {
    let short = "ab".repeat(31);
    assert_one_problem(
        &[(
            "t.toml",
            &format!("[[api_token]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"{short}\"\n"),
        )],
        "t.toml:4:10",
        &["`sha256` must be 64 hexadecimal characters"],
    );
    let upper = "AB".repeat(32);
    let rules = loads(&[(
        "t.toml",
        &format!("[[api_token]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"{upper}\"\n"),
    )]);
    assert_eq!(rules.api_tokens[0].sha256, [0xab; 32]);
}

//! Checks that need several entries or files: duplicates, cross references, and that a
//! problem in one file never hides those in another.

use super::*;

#[test]
fn a_duplicate_inbound_id_names_where_the_first_one_is() {
    assert_one_problem(
        &[("a.toml", SHELL), ("b.toml", &format!("\n{SHELL}"))],
        "b.toml:3:6",
        &[
            "duplicate inbound id `shell`: already used at",
            "a.toml:2:6",
        ],
    );
}

#[test]
fn a_duplicate_channel_id_names_where_the_first_one_is() {
    let log = "[[channel]]\nid = \"log\"\nkind = \"log\"\npath = \"x.jsonl\"\n";
    assert_one_problem(
        &[("a.toml", &format!("{log}{log}"))],
        "a.toml:6:6",
        &["duplicate channel id `log`", "a.toml:2:6"],
    );
    // Inbound and channel ids live in different namespaces.
    assert!(
        problems_in(&[(
            "a.toml",
            &format!("{SHELL}[[channel]]\nid = \"shell\"\nkind = \"log\"\npath = \"x\"\n")
        )])
        .is_empty()
    );
}

#[test]
fn delivery_may_be_defined_in_one_file_only() {
    assert_one_problem(
        &[
            ("a.toml", "[delivery]\nconcurrency = 4\n"),
            ("b.toml", "# more\n[delivery]\n"),
        ],
        "b.toml:2:1",
        &["[delivery] is already defined at", "a.toml:1:1"],
    );
}

#[test]
fn an_operator_platform_must_be_used_by_an_inbound_account() {
    let operator = "[[operator]]\nplatform = \"dingtalk\"\nuser = \"u\"\nrole = \"viewer\"\n";
    assert_one_problem(
        &[("a.toml", operator)],
        "a.toml:2:12",
        &[
            "no [[inbound]] account uses platform `dingtalk`",
            "add an [[inbound]] account",
        ],
    );
    assert_one_problem(
        &[("a.toml", SHELL), ("b.toml", operator)],
        "b.toml:2:12",
        &["platforms in use: shell"],
    );
}

#[test]
fn an_operator_on_a_refused_platform_is_not_reported_twice() {
    let problems = problems_in(&[(
        "a.toml",
        "[[inbound]]\nid = \"ops\"\nplatform = \"dingtalk\"\n[[operator]]\nplatform = \"dingtalk\"\nuser = \"u\"\nrole = \"viewer\"\n",
    )]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn an_operator_is_listed_once() {
    let operator = "[[operator]]\nplatform = \"shell\"\nuser = \"local\"\nrole = \"viewer\"\n";
    assert_one_problem(
        &[
            ("a.toml", SHELL),
            ("b.toml", &format!("{operator}{operator}")),
        ],
        "b.toml:7:8",
        &[
            "operator `local` on platform `shell` is already listed at",
            "b.toml:3:8",
        ],
    );
}

#[test]
fn a_command_must_be_a_known_builtin_configured_once() {
    assert_one_problem(
        &[("c.toml", "[[command]]\nname = \"hepl\"\nsummary = \"s\"\n")],
        "c.toml:2:8",
        &[
            "unknown command `hepl`",
            "did you mean `help`?",
            "built-in commands: help, whoami",
        ],
    );
    let help = "[[command]]\nname = \"help\"\nsummary = \"s\"\n";
    assert_one_problem(
        &[("a.toml", help), ("b.toml", help)],
        "b.toml:2:8",
        &["command `help` is already configured at", "a.toml:2:8"],
    );
}

#[test]
fn aliases_are_unique_across_commands_ignoring_case() {
    assert_one_problem(
        &[
            (
                "a.toml",
                "[[command]]\nname = \"help\"\nsummary = \"s\"\naliases = [\"Info\"]\n",
            ),
            (
                "b.toml",
                "[[command]]\nname = \"whoami\"\nsummary = \"s\"\naliases = [\"info\"]\n",
            ),
        ],
        "b.toml:4:12",
        &[
            "alias `info` of `whoami` is already an alias of `help` at",
            "a.toml:4:12",
            "ignoring case",
        ],
    );
}

#[test]
fn an_alias_may_not_be_a_command_name() {
    assert_one_problem(
        &[(
            "c.toml",
            "[[command]]\nname = \"help\"\nsummary = \"s\"\naliases = [\"WhoAmI\"]\n",
        )],
        "c.toml:4:12",
        &["alias `WhoAmI` of `help` is the name of the built-in command `whoami`"],
    );
    assert_one_problem(
        &[(
            "c.toml",
            "[[command]]\nname = \"help\"\nsummary = \"s\"\naliases = [\"help\"]\n",
        )],
        "c.toml:4:12",
        &["repeats the command's own name"],
    );
}

#[test]
fn api_token_names_and_digests_are_unique() {
    let token = |name: &str, byte: &str| {
        format!(
            "[[api_token]]\nname = \"{name}\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            byte.repeat(32)
        )
    };
    assert_one_problem(
        &[(
            "t.toml",
            &format!("{}{}", token("ci", "01"), token("ci", "02")),
        )],
        "t.toml:6:8",
        &["duplicate api_token name `ci`", "t.toml:2:8"],
    );
    assert_one_problem(
        &[(
            "t.toml",
            &format!("{}{}", token("ci", "01"), token("cron", "01")),
        )],
        "t.toml:6:8",
        &[
            "api_token `cron` has the same sha256 as `ci` at",
            "t.toml:2:8",
        ],
    );
}

#[test]
fn problems_in_every_file_are_all_reported_in_order() {
    let problems = problems_in(&[
        ("a.toml", "[[inbound]\n"),
        (
            "b.toml",
            "[delivery]\nlease = \"forever\"\nconcurrency = 0\n",
        ),
        (
            "c.toml",
            &format!(
                "{SHELL}[[channel]]\nid = \"Bad\"\nkind = \"log\"\npath = \"x\"\ncolour = \"red\"\n"
            ),
        ),
    ]);
    let locations: Vec<&str> = problems
        .iter()
        .filter_map(|p| p.split(": ").next())
        .collect();
    assert_eq!(
        locations,
        [
            "a.toml:1:10",
            "b.toml:2:9",
            "b.toml:3:15",
            "c.toml:5:6",
            "c.toml:8:1"
        ],
        "{problems:#?}"
    );
}

#[test]
fn the_alerts_channel_must_exist_and_limits_must_be_sane() {
    assert_one_problem(
        &[("a.toml", "[delivery]\nalerts_channel = \"ops\"\n")],
        "a.toml:1:1",
        &["alerts_channel names `ops`, which is no [[channel]] id"],
    );
    assert_one_problem(
        &[("a.toml", "[delivery]\nquota_time_zone = \"Mars/Olympus\"\n")],
        "a.toml:2:19",
        &["`quota_time_zone` must be an IANA time zone"],
    );
    assert_one_problem(
        &[(
            "a.toml",
            "[[channel]]\nid = \"log\"\nkind = \"log\"\npath = \"x\"\nbatch_size = 2\n",
        )],
        "a.toml:5:14",
        &["`batch_size` must be between 1 and 1"],
    );
    assert_one_problem(
        &[(
            "a.toml",
            "[[channel]]\nid = \"log\"\nkind = \"log\"\npath = \"x\"\nper_day = -1\n",
        )],
        "a.toml:5:11",
        &["`per_day` must be between 0 (no limit)"],
    );
}

//! Unit and property tests of the command-line grammar.

use proptest::prelude::*;

use super::*;

fn parsed(text: &str) -> ParsedCommand {
    match parse(text) {
        Ok(Some(command)) => command,
        other => panic!("{text:?} did not parse as a command: {other:?}"),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

#[test]
fn slash_full_width_slash_and_bare_words_are_command_words() {
    assert_eq!(
        command_word("/help me"),
        Some(CommandWord {
            name: "help",
            slashed: true
        })
    );
    assert_eq!(
        command_word("／帮助"),
        Some(CommandWord {
            name: "帮助",
            slashed: true
        })
    );
    assert_eq!(
        command_word("帮助\u{3000}whoami"),
        Some(CommandWord {
            name: "帮助",
            slashed: false
        })
    );
    assert_eq!(command_word("/"), None);
    assert_eq!(command_word("  \n "), None);
    assert_eq!(command_word(""), None);
}

#[test]
fn leading_mentions_are_stripped() {
    let command = parsed("@qunfa @机器人\u{2005}/help whoami");
    assert_eq!(command.name, "help");
    assert_eq!(command.args, strings(&["whoami"]));
    assert_eq!(command_word("＠bot 帮助").map(|w| w.name), Some("帮助"));
    assert_eq!(command_word("@bot"), None);
}

#[test]
fn quotes_of_every_kind_group_words() {
    let command = parsed(r#"/x "a b" 'c d' “e f” 「g h」 plain"#);
    assert_eq!(
        command.args,
        strings(&["a b", "c d", "e f", "g h", "plain"])
    );
}

#[test]
fn escaped_quotes_and_backslashes_inside_quotes() {
    let command = parsed(r#"/x "say \"hi\"" “a\”b” "c:\dir" "end\\""#);
    assert_eq!(
        command.args,
        strings(&[r#"say "hi""#, "a”b", r"c:\dir", r"end\"])
    );
}

#[test]
fn apostrophes_inside_words_are_literal() {
    let command = parsed("/send-test log u1 don't panic, it's fine");
    assert_eq!(
        command.args,
        strings(&["log", "u1", "don't", "panic,", "it's", "fine"])
    );
}

#[test]
fn flags_take_values_in_both_spellings_and_are_boolean_before_a_flag_or_the_end() {
    let command = parsed(
        "/campaign new 双十一 --segment high_value --route=a,b --dry-run --note \"x y\" --force",
    );
    assert_eq!(command.args, strings(&["new", "双十一"]));
    assert_eq!(
        command.flags,
        vec![
            ("segment".to_string(), Some("high_value".to_string())),
            ("route".to_string(), Some("a,b".to_string())),
            ("dry-run".to_string(), None),
            ("note".to_string(), Some("x y".to_string())),
            ("force".to_string(), None),
        ]
    );
    assert_eq!(command.flag("route"), Some(Some("a,b")));
    assert_eq!(command.flag("force"), Some(None));
    assert_eq!(command.flag("absent"), None);
}

#[test]
fn ime_dashes_quoted_flag_values_and_the_double_dash() {
    let command = parsed("/x ——segment 高价值 --subject=\"双 十一\" -- --not-a-flag");
    assert_eq!(
        command.flags,
        vec![
            ("segment".to_string(), Some("高价值".to_string())),
            ("subject".to_string(), Some("双 十一".to_string())),
        ]
    );
    assert_eq!(command.args, strings(&["--not-a-flag"]));
}

#[test]
fn a_quoted_token_is_an_argument_even_when_it_looks_like_a_flag() {
    let command = parsed(r#"/x "--literal" --name "--value""#);
    assert_eq!(command.args, strings(&["--literal"]));
    assert_eq!(
        command.flags,
        vec![("name".to_string(), Some("--value".to_string()))]
    );
}

#[test]
fn body_is_every_line_after_the_first_verbatim() {
    let command =
        parsed("/campaign new 双十一 --segment vip\r\n亲爱的 {name}：\n\n  双十一快乐！\n");
    assert_eq!(command.args, strings(&["new", "双十一"]));
    assert_eq!(
        command.body.as_deref(),
        Some("亲爱的 {name}：\n\n  双十一快乐！\n")
    );
    assert_eq!(parsed("/help\n").body, None);
}

#[test]
fn unterminated_quotes_are_errors_that_point_at_the_spot() {
    assert_eq!(
        parse("/x ok \"never closed"),
        Err(ParseError::UnterminatedQuote {
            open: '"',
            close: '"',
            near: "never closed".to_string()
        })
    );
    let error = parse("/x 「开始").unwrap_err();
    assert!(error.to_string().contains('」'), "{error}");
    // Quotes on the body lines are free text.
    assert!(parse("/x\n\"unclosed").is_ok());
}

#[test]
fn a_flag_without_a_name_is_an_error() {
    assert_eq!(parse("/x --=3"), Err(ParseError::EmptyFlagName));
}

#[test]
fn quote_leaves_plain_words_bare() {
    assert_eq!(quote("abc"), "abc");
    assert_eq!(quote("a b"), "\"a b\"");
    assert_eq!(quote(""), "\"\"");
    assert_eq!(quote("--x"), "\"--x\"");
    assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
}

fn single_line() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|text| text.replace(['\n', '\r'], " "))
}

fn flag_name_strategy() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,12}"
}

proptest! {
    #[test]
    fn parsing_never_panics(text in any::<String>()) {
        let _ = parse(&text);
        let _ = command_word(&text);
    }

    #[test]
    fn quoted_arguments_round_trip(args in proptest::collection::vec(single_line(), 0..6)) {
        let line: Vec<String> = args.iter().map(|arg| quote(arg)).collect();
        let text = format!("/cmd {}", line.join(" "));
        let command = parse(&text).expect("quoted text parses").expect("has a word");
        prop_assert_eq!(command.name, "cmd");
        prop_assert_eq!(command.args, args);
        prop_assert!(command.flags.is_empty());
        prop_assert_eq!(command.body, None);
    }

    #[test]
    fn flags_round_trip_in_both_spellings(
        flags in proptest::collection::vec((flag_name_strategy(), single_line(), any::<bool>()), 0..5),
        args in proptest::collection::vec(single_line(), 0..3),
    ) {
        let mut line: Vec<String> = args.iter().map(|arg| quote(arg)).collect();
        for (name, value, with_equals) in &flags {
            if *with_equals {
                line.push(format!("--{name}={}", quote(value)));
            } else {
                line.push(format!("--{name} {}", quote(value)));
            }
        }
        let text = format!("／cmd {}", line.join(" "));
        let command = parse(&text).expect("quoted text parses").expect("has a word");
        let expected: Vec<(String, Option<String>)> = flags
            .iter()
            .map(|(name, value, _)| (name.clone(), Some(value.clone())))
            .collect();
        prop_assert_eq!(command.flags, expected);
        prop_assert_eq!(command.args, args);
    }

    #[test]
    fn body_round_trips(body in any::<String>()) {
        let command = parse(&format!("/cmd a\n{body}")).expect("no quotes on line one").expect("word");
        prop_assert_eq!(command.body, Some(body).filter(|body| !body.is_empty()));
    }
}

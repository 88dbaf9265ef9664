use proptest::prelude::*;

use super::*;
use crate::channels::Button;

#[test]
fn the_common_markdown_subset_becomes_mrkdwn() {
    assert_eq!(
        mrkdwn(
            "## Sale *today*\n**Big** and *small* ~~old~~ [the page](https://x.example/a?b=1&c=2)"
        ),
        "*Sale today*\n*Big* and _small_ ~old~ <https://x.example/a?b=1&c=2|the page>"
    );
    assert_eq!(
        mrkdwn("- one\n  * two\n> quoted"),
        "• one\n  • two\n> quoted"
    );
    assert_eq!(mrkdwn("snake_case and 2 * 3"), "snake_case and 2 * 3");
    assert_eq!(
        mrkdwn("[https://x.example](https://x.example)"),
        "<https://x.example>"
    );
}

#[test]
fn control_characters_are_escaped_outside_links_and_code_is_kept() {
    assert_eq!(
        mrkdwn("a < b & c > d `x <y>` and [R&D](https://x.example/a|b)"),
        "a &lt; b &amp; c &gt; d `x &lt;y&gt;` and <https://x.example/a%7Cb|R&amp;D>"
    );
    assert_eq!(
        mrkdwn("```\nlet **x** = a < b;\n```\n**after**"),
        "```\nlet **x** = a &lt; b;\n```\n*after*"
    );
    assert_eq!(escape("<@U1> & more"), "&lt;@U1&gt; &amp; more");
}

#[test]
fn mentions_are_slack_ids_and_everyone_is_the_channel() {
    let ids = safe_ids(["U1", "U2>", "U1", ""]);
    assert_eq!(ids, vec!["U1".to_string(), "U2".to_string()]);
    assert_eq!(mention_prefix(&ids, true), "<@U1> <@U2> <!channel> ");
    assert_eq!(mention_prefix(&[], false), "");
}

#[test]
fn plain_text_is_escaped_and_prefixed_with_mentions() {
    let rendered = render(&Message::text("a <b>"), "<@U1> ").expect("fits");
    assert_eq!(
        rendered,
        Rendered {
            text: "<@U1> a &lt;b&gt;".into(),
            blocks: None
        }
    );
}

#[test]
fn a_link_is_a_bold_titled_link_with_its_description() {
    let message = Message {
        format: Format::Link,
        title: Some("Flash sale".into()),
        text: "Starts at 8pm".into(),
        url: Some("https://x.example/s".into()),
        ..Message::default()
    };
    assert_eq!(
        render(&message, "").expect("fits").text,
        "*<https://x.example/s|Flash sale>*\nStarts at 8pm"
    );
}

#[test]
fn a_card_is_header_section_and_buttons_with_a_plain_fallback() {
    let message = Message {
        format: Format::Card,
        title: Some("Release".into()),
        text: "**v2** is out".into(),
        buttons: vec![Button {
            text: "Notes".into(),
            url: "https://x.example/n".into(),
        }],
        ..Message::default()
    };
    let rendered = render(&message, "<@U1> ").expect("fits");
    assert_eq!(
        rendered.text,
        "<@U1> Release\nv2 is out\nNotes: https://x.example/n"
    );
    assert_eq!(
        rendered.blocks,
        Some(json!([
            {"type": "header", "text": {"type": "plain_text", "text": "Release"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "<@U1> *v2* is out"}},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Notes"}, "url": "https://x.example/n"},
            ]},
        ]))
    );
}

#[test]
fn slacks_limits_are_errors_before_sending() {
    assert!(render(&Message::text("a".repeat(TEXT_LIMIT)), "").is_ok());
    let error = render(&Message::text("a".repeat(TEXT_LIMIT + 1)), "").expect_err("too long");
    assert!(error.to_string().contains("at most 40000"), "{error}");
    // Escaping counts: `&` is five characters once sent.
    assert!(render(&Message::text("&".repeat(TEXT_LIMIT / 5 + 1)), "").is_err());

    let card = |title: &str, text: &str, buttons: usize, label: &str| Message {
        format: Format::Card,
        title: Some(title.into()),
        text: text.into(),
        buttons: (0..buttons)
            .map(|_| Button {
                text: label.into(),
                url: "https://x.example".into(),
            })
            .collect(),
        ..Message::default()
    };
    assert!(render(&card(&"t".repeat(150), "x", 25, &"b".repeat(75)), "").is_ok());
    assert!(render(&card(&"t".repeat(151), "x", 0, "b"), "").is_err());
    assert!(render(&card("t", &"x".repeat(3001), 0, "b"), "").is_err());
    assert!(render(&card("t", "x", 26, "b"), "").is_err());
    assert!(render(&card("t", "x", 1, &"b".repeat(76)), "").is_err());
    assert!(render(&Message::text(" "), "").is_err());
}

proptest! {
    #[test]
    fn rendering_never_panics(text in "\\PC{0,300}", format in 0..4usize) {
        let format = [Format::Text, Format::Markdown, Format::Link, Format::Card][format];
        let _ = mrkdwn(&text);
        let _ = render(&Message { format, text, ..Message::default() }, "<@U1> ");
    }

    #[test]
    fn plain_words_pass_through_mrkdwn_unchanged(text in "[a-zA-Z0-9 ,.!?]{0,100}") {
        prop_assert_eq!(mrkdwn(&text), text.lines().collect::<Vec<_>>().join("\n"));
    }
}

//! Query decoding, the timestamp window and the flat XML reader/writer.

use proptest::prelude::*;

use super::*;

#[test]
fn query_keeps_plus_and_decodes_percent_escapes() {
    let params = query_params(Some(
        "msg_signature=ab&timestamp=1700000000&nonce=1&echostr=a+b%2Bc%3D%3D&x&msg_signature=zz",
    ));
    assert_eq!(params.get("echostr").map(String::as_str), Some("a+b+c=="));
    assert_eq!(params.get("msg_signature").map(String::as_str), Some("ab"));
    assert_eq!(params.get("x").map(String::as_str), Some(""));
    assert!(query_params(None).is_empty());
}

#[test]
fn window_accepts_five_minutes_either_way_and_refuses_beyond() {
    let now_ms = 1_700_000_000_000;
    assert_eq!(check_window("1700000000", now_ms), Ok(()));
    assert_eq!(check_window("1699999700", now_ms), Ok(()));
    assert_eq!(check_window("1700000300", now_ms), Ok(()));
    assert_eq!(
        check_window("1699999699", now_ms),
        Err(WindowError::Outside(-301))
    );
    assert_eq!(
        check_window("1700000301", now_ms),
        Err(WindowError::Outside(301))
    );
    // Milliseconds by mistake are far outside, not accepted.
    assert!(check_window("1700000000000", now_ms).is_err());
    assert_eq!(check_window("soon", now_ms), Err(WindowError::NotSeconds));
    assert!(check_window("-9223372036854775808", now_ms).is_err());
}

#[test]
fn flat_xml_reads_cdata_text_and_escapes() {
    let fields = parse_xml(
        "<?xml version=\"1.0\"?><xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n\
         <CreateTime>1700000000</CreateTime><Content><![CDATA[a]]]]><![CDATA[>b]]></Content>\
         <Esc>x &amp; y</Esc><Empty/><Nested><item><Count>3</Count></item></Nested></xml>",
    );
    let fields = match fields {
        Ok(fields) => fields,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(fields.get("ToUserName"), Some("gh_1"));
    assert_eq!(fields.get("CreateTime"), Some("1700000000"));
    assert_eq!(fields.get("Content"), Some("a]]>b"));
    assert_eq!(fields.get("Esc"), Some("x & y"));
    assert_eq!(fields.get("Empty"), Some(""));
    assert_eq!(fields.text("Empty"), None);
    assert_eq!(fields.get("Nested"), Some(""));
    assert_eq!(fields.get("Count"), None);
}

#[test]
fn malformed_xml_is_refused() {
    for (document, expected) in [
        ("", XmlError::Empty),
        ("<xml><a>1</a></xml><xml/>", XmlError::SeveralRoots),
        (
            "<xml><a>1</a><a>2</a></xml>",
            XmlError::Duplicate("a".to_string()),
        ),
    ] {
        assert_eq!(parse_xml(document), Err(expected), "{document}");
    }
    for document in [
        "<xml><a>1</a>",
        "<xml><a>1</b></xml>",
        "{\"encrypt\":\"x\"}",
        "<!DOCTYPE x [<!ENTITY e \"boom\">]><xml><a>&e;</a></xml>",
        "<xml><a>&unknown;</a></xml>",
    ] {
        assert!(
            matches!(parse_xml(document), Err(XmlError::Syntax(_))),
            "{document}"
        );
    }
}

#[test]
fn cdata_writer_survives_section_terminators() {
    let mut out = String::from("<xml>");
    push_cdata(&mut out, "Content", "x]]><evil/>");
    push_number(&mut out, "CreateTime", 42);
    out.push_str("</xml>");
    let fields = parse_xml(&out).unwrap_or_default();
    assert_eq!(fields.get("Content"), Some("x]]><evil/>"));
    assert_eq!(fields.get("CreateTime"), Some("42"));
}

proptest! {
    #[test]
    fn cdata_round_trips_any_text(text in "\\PC{0,200}") {
        let mut out = String::from("<xml>");
        push_cdata(&mut out, "Content", &text);
        out.push_str("</xml>");
        let fields = parse_xml(&out);
        prop_assert_eq!(fields.map(|f| f.get("Content").map(str::to_string)), Ok(Some(text)));
    }

    #[test]
    fn xml_reader_never_panics(document in ".{0,300}") {
        let _ = parse_xml(&document);
    }

    #[test]
    fn xml_reader_never_panics_on_tag_soup(parts in proptest::collection::vec(
        prop_oneof![
            Just("<xml>"), Just("</xml>"), Just("<a>"), Just("</a>"), Just("<b/>"),
            Just("<![CDATA["), Just("]]>"), Just("&amp;"), Just("&"), Just("text"), Just("<!--"),
        ], 0..30)) {
        let _ = parse_xml(&parts.concat());
    }

    #[test]
    fn query_and_window_never_panic(query in ".{0,200}", timestamp in ".{0,25}", now in any::<i64>()) {
        let _ = query_params(Some(&query));
        let _ = check_window(&timestamp, now);
    }
}

//! Splits Markdown into the pieces that providers with a markup of their own must treat
//! apart: the block marker of a line (heading, quote, bullet), inline `[label](url)` links
//! and emphasis markers. Feishu rich text wants links as separate `a` elements and Slack's
//! mrkdwn writes them `<url|label>`, so the shared `render::strip_markdown` (which flattens
//! links into text) is not enough for them.

/// What a line starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block<'a> {
    /// `# Title` (one to six `#`): the title.
    Heading(&'a str),
    /// `> quoted`: the quoted text.
    Quote(&'a str),
    /// `- item`, `* item` or `+ item`: the indentation and the item.
    Bullet {
        indent: &'a str,
        item: &'a str,
    },
    Plain(&'a str),
}

pub fn block(line: &str) -> Block<'_> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let hashes = trimmed.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&hashes) {
        let rest = &trimmed[hashes..];
        if rest.is_empty() || rest.starts_with(' ') {
            return Block::Heading(rest.trim());
        }
    }
    if let Some(quoted) = trimmed.strip_prefix('>') {
        return Block::Quote(quoted.trim_start());
    }
    for marker in ["- ", "* ", "+ "] {
        if let Some(item) = trimmed.strip_prefix(marker) {
            return Block::Bullet { indent, item };
        }
    }
    Block::Plain(line)
}

/// Text or a link, in the order they appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    /// `[label](url)` (or `![alt](url)`); an empty label is the URL itself.
    Link {
        label: &'a str,
        url: &'a str,
    },
}

/// Splits `text` at its `[label](url)` links. Brackets that do not form a link (no URL,
/// a URL with spaces) stay text.
pub fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut found = Vec::new();
    let mut text_start = 0;
    let mut search_from = 0;
    while let Some(offset) = text[search_from..].find('[') {
        let open = search_from + offset;
        search_from = open + 1;
        let Some(close) = text[open + 1..].find(']').map(|at| open + 1 + at) else {
            break;
        };
        let label = &text[open + 1..close];
        if label.contains('[') || !text[close + 1..].starts_with('(') {
            continue;
        }
        let url_start = close + 2;
        let Some(end) = text[url_start..].find(')').map(|at| url_start + at) else {
            continue;
        };
        let url = text[url_start..end].trim();
        if url.is_empty() || url.contains(char::is_whitespace) {
            continue;
        }
        // An image `![alt](src)` becomes a link to the image; its `!` is markup.
        let before = text[text_start..open]
            .strip_suffix('!')
            .unwrap_or(&text[text_start..open]);
        if !before.is_empty() {
            found.push(Piece::Text(before));
        }
        let label = label.trim();
        found.push(Piece::Link {
            label: if label.is_empty() { url } else { label },
            url,
        });
        text_start = end + 1;
        search_from = end + 1;
    }
    if text_start < text.len() {
        found.push(Piece::Text(&text[text_start..]));
    }
    found
}

/// Removes emphasis and code markers (`*`, `_`, `` ` ``, `~~`) that touch a word; a `_`
/// inside a word (`snake_case`), a lone `~` and a marker standing alone (`2 * 3`) are text.
pub fn strip_emphasis(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !matches!(c, '*' | '_' | '`' | '~') {
            out.push(c);
            i += 1;
            continue;
        }
        let end = (i..chars.len())
            .find(|&j| chars[j] != c)
            .unwrap_or(chars.len());
        let before = i.checked_sub(1).map(|j| chars[j]);
        let after = chars.get(end).copied();
        let touches_word = |side: Option<char>| side.is_some_and(|ch| !ch.is_whitespace());
        let is_text = (c == '_'
            && before.is_some_and(char::is_alphanumeric)
            && after.is_some_and(char::is_alphanumeric))
            || (c == '~' && end - i == 1)
            || (!touches_word(before) && !touches_word(after));
        if is_text {
            out.extend(&chars[i..end]);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_told_apart_by_their_block_marker() {
        assert_eq!(block("## 双十一 "), Block::Heading("双十一"));
        assert_eq!(block("#hashtag"), Block::Plain("#hashtag"));
        assert_eq!(block("####### seven"), Block::Plain("####### seven"));
        assert_eq!(block("> said"), Block::Quote("said"));
        assert_eq!(
            block("  - item"),
            Block::Bullet {
                indent: "  ",
                item: "item"
            }
        );
        assert_eq!(block("**bold** start"), Block::Plain("**bold** start"));
    }

    #[test]
    fn links_are_split_out_and_brackets_that_are_not_links_stay_text() {
        assert_eq!(
            pieces("see [the page](https://x.example/a) now"),
            vec![
                Piece::Text("see "),
                Piece::Link {
                    label: "the page",
                    url: "https://x.example/a"
                },
                Piece::Text(" now"),
            ]
        );
        assert_eq!(
            pieces("[a] (b) and [c](has space) [[d](u)"),
            vec![
                Piece::Text("[a] (b) and [c](has space) ["),
                Piece::Link {
                    label: "d",
                    url: "u"
                },
            ]
        );
        assert_eq!(
            pieces("![](https://i.example/p.png)"),
            vec![Piece::Link {
                label: "https://i.example/p.png",
                url: "https://i.example/p.png"
            }]
        );
        assert_eq!(pieces("[unclosed"), vec![Piece::Text("[unclosed")]);
        assert!(pieces("").is_empty());
    }

    #[test]
    fn emphasis_markers_go_and_text_that_looks_like_them_stays() {
        assert_eq!(
            strip_emphasis("**Big** _sale_ `code` ~~old~~"),
            "Big sale code old"
        );
        assert_eq!(strip_emphasis("snake_case_name"), "snake_case_name");
        assert_eq!(strip_emphasis("2 * 3 ~ 4"), "2 * 3 ~ 4");
    }

    proptest! {
        #[test]
        fn splitting_never_panics_and_keeps_every_character_of_plain_text(text in "\\PC{0,120}") {
            let _ = block(&text);
            let _ = strip_emphasis(&text);
            let rebuilt: String = pieces(&text)
                .iter()
                .map(|piece| match piece {
                    Piece::Text(text) => (*text).to_string(),
                    Piece::Link { label, url } => format!("[{label}]({url})"),
                })
                .collect();
            if !text.contains('[') {
                prop_assert_eq!(rebuilt, text);
            }
        }
    }
}

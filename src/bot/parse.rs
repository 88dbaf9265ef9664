//! Turns a chat message into a command word, arguments, flags and a multi-line body. Pure:
//! knows nothing of the rules, so the router decides whether a bare word is an alias.
//!
//! Chat is typed on phones and with Chinese input methods, so the grammar accepts what
//! those produce: the full-width slash `／`, the ideographic space U+3000, Chinese quotes
//! `“…”` and `「…」`, and the em dashes `——` that IMEs make of `--`.

/// A message split into its parts; `name` is the command word as typed, without its slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    pub name: String,
    /// Whether the word was written with a leading `/` or `／`.
    pub slashed: bool,
    pub args: Vec<String>,
    /// In the order given; a flag without a value is `None`.
    pub flags: Vec<(String, Option<String>)>,
    /// Every line after the first, verbatim; `None` when there is none.
    pub body: Option<String>,
}

impl ParsedCommand {
    /// The value of the last occurrence of `--name`: `Some(None)` for a boolean flag.
    pub fn flag(&self, name: &str) -> Option<Option<&str>> {
        self.flags
            .iter()
            .rev()
            .find(|(flag, _)| flag == name)
            .map(|(_, value)| value.as_deref())
    }
}

/// The first word of a message, enough to decide whether it is addressed to the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandWord<'a> {
    pub name: &'a str,
    pub slashed: bool,
}

/// Why a command line could not be split; the router renders it in the caller's language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the quote {open} before `{near}` is never closed (add a closing {close})")]
    UnterminatedQuote {
        open: char,
        close: char,
        /// The start of the unclosed text, to point at the spot.
        near: String,
    },
    #[error("a flag needs a name: write `--name value` or `--name=value`")]
    EmptyFlagName,
}

const SLASHES: [char; 2] = ['/', '／'];
const MENTION_SIGNS: [char; 2] = ['@', '＠'];
const FLAG_PREFIXES: [&str; 2] = ["--", "——"];
/// How much of an unclosed quotation an error message repeats.
const NEAR_CHARS: usize = 20;
/// Opening quote → closing quote. Straight quotes close themselves.
const QUOTES: [(char, char); 4] = [('"', '"'), ('\'', '\''), ('“', '”'), ('「', '」')];

/// The command word of `text`, if it has one: the first token after any leading mentions.
/// Cheap and infallible, so chatter with stray quotes is never mistaken for a bad command.
pub fn command_word(text: &str) -> Option<CommandWord<'_>> {
    let line = strip_mentions(first_line(text).0);
    let word = line.split(char::is_whitespace).next()?;
    match word.strip_prefix(SLASHES) {
        Some(name) if !name.is_empty() => Some(CommandWord {
            name,
            slashed: true,
        }),
        Some(_) => None,
        None if word.is_empty() => None,
        None => Some(CommandWord {
            name: word,
            slashed: false,
        }),
    }
}

/// Splits `text` fully. `Ok(None)` when the message has no words at all.
pub fn parse(text: &str) -> Result<Option<ParsedCommand>, ParseError> {
    let Some(word) = command_word(text) else {
        return Ok(None);
    };
    let (line, body) = first_line(text);
    let line = strip_mentions(line);
    let rest = line
        .split_once(char::is_whitespace)
        .map_or("", |(_, rest)| rest);
    let (args, flags) = split_flags(tokenize(rest)?)?;
    Ok(Some(ParsedCommand {
        name: word.name.to_string(),
        slashed: word.slashed,
        args,
        flags,
        body: body.filter(|body| !body.is_empty()).map(str::to_string),
    }))
}

/// Writes `token` so that [`parse`] reads it back as one argument: bare when that is
/// unambiguous, otherwise in double quotes with `"` and `\` escaped.
pub fn quote(token: &str) -> String {
    let needs_quotes = token.is_empty()
        || token.contains(char::is_whitespace)
        || token.starts_with(|c| QUOTES.iter().any(|(open, _)| *open == c))
        || FLAG_PREFIXES.iter().any(|prefix| token.starts_with(prefix));
    if !needs_quotes {
        return token.to_string();
    }
    let mut quoted = String::with_capacity(token.len() + 2);
    quoted.push('"');
    for c in token.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The first non-blank line (without `\r`) and everything after its newline.
fn first_line(text: &str) -> (&str, Option<&str>) {
    let text = text.trim_start();
    match text.split_once('\n') {
        Some((line, body)) => (line.strip_suffix('\r').unwrap_or(line), Some(body)),
        None => (text, None),
    }
}

/// Drops leading `@name` tokens: platforms that already removed the mention leave none,
/// and those that do not (or mention several bots) leave one per mention.
fn strip_mentions(mut line: &str) -> &str {
    loop {
        line = line.trim_start();
        if !line.starts_with(MENTION_SIGNS) {
            return line;
        }
        match line.split_once(char::is_whitespace) {
            Some((_, rest)) => line = rest,
            None => return "",
        }
    }
}

struct Token {
    text: String,
    /// Quoted tokens are never flags, so `"--x"` can be passed as an argument.
    quoted: bool,
}

fn tokenize(line: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    let mut current: Option<Token> = None;
    while let Some((index, c)) = chars.next() {
        if c.is_whitespace() {
            tokens.extend(current.take());
            continue;
        }
        let token = current.get_or_insert_with(|| Token {
            text: String::new(),
            quoted: false,
        });
        // A quote opens only where a value starts, so apostrophes inside words
        // ("don't", "O'Brien") stay literal instead of opening a quote.
        let at_value_start = token.text.is_empty() || is_flag_with_equals(&token.text);
        let close = QUOTES
            .iter()
            .find(|(open, _)| *open == c)
            .map(|(_, close)| *close);
        let (Some(close), true) = (close, at_value_start) else {
            token.text.push(c);
            continue;
        };
        token.quoted |= token.text.is_empty();
        loop {
            match chars.next() {
                None => {
                    let unclosed = &line[index + c.len_utf8()..];
                    return Err(ParseError::UnterminatedQuote {
                        open: c,
                        close,
                        near: unclosed.chars().take(NEAR_CHARS).collect(),
                    });
                }
                Some((_, inner)) if inner == close => break,
                Some((_, '\\')) => match chars.peek() {
                    Some(&(_, escaped)) if escaped == close || escaped == '\\' => {
                        token.text.push(escaped);
                        chars.next();
                    }
                    _ => token.text.push('\\'),
                },
                Some((_, inner)) => token.text.push(inner),
            }
        }
    }
    tokens.extend(current);
    Ok(tokens)
}

fn is_flag_with_equals(text: &str) -> bool {
    text.ends_with('=') && flag_name(text).is_some() && text.matches('=').count() == 1
}

/// The part after `--`/`——` of an unquoted token, if it is written as a flag.
fn flag_name(text: &str) -> Option<&str> {
    FLAG_PREFIXES
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
}

type Flags = Vec<(String, Option<String>)>;

fn split_flags(tokens: Vec<Token>) -> Result<(Vec<String>, Flags), ParseError> {
    let mut args = Vec::new();
    let mut flags = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let flag = if token.quoted {
            None
        } else {
            flag_name(&token.text)
        };
        let Some(flag) = flag else {
            args.push(token.text);
            continue;
        };
        if flag.is_empty() {
            // A bare `--` ends the flags, as in a shell.
            args.extend(tokens.by_ref().map(|token| token.text));
            break;
        }
        if let Some((name, value)) = flag.split_once('=') {
            if name.is_empty() {
                return Err(ParseError::EmptyFlagName);
            }
            flags.push((name.to_string(), Some(value.to_string())));
            continue;
        }
        let next_is_value = tokens
            .peek()
            .is_some_and(|next| next.quoted || flag_name(&next.text).is_none());
        let value = if next_is_value {
            tokens.next().map(|next| next.text)
        } else {
            None
        };
        flags.push((flag.to_string(), value));
    }
    Ok((args, flags))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

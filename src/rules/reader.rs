//! Reads typed fields out of one parsed TOML table, recording a positioned problem for
//! every missing key, wrong type and unknown key instead of stopping at the first.

use toml_edit::{Item, TableLike, Value};

use super::problem::{At, Pos, Problem, Source};

/// The tables of a section written either as `[[name]]` or as an array of inline tables.
pub(super) fn tables_of<'a>(
    source: &Source<'_>,
    name: &str,
    key_pos: &Pos,
    item: &'a Item,
    problems: &mut Vec<Problem>,
) -> Vec<(&'a dyn TableLike, Pos)> {
    match item {
        Item::ArrayOfTables(array) => array
            .iter()
            .map(|table| (table as &dyn TableLike, source.pos(table.span())))
            .collect(),
        Item::Value(Value::Array(array)) => array
            .iter()
            .filter_map(|value| match value {
                Value::InlineTable(table) => {
                    Some((table as &dyn TableLike, source.pos(table.span())))
                }
                other => {
                    problems.push(Problem::at(
                        &source.pos(other.span()),
                        format!(
                            "each `{name}` entry must be a table, found {}",
                            a(other.type_name())
                        ),
                    ));
                    None
                }
            })
            .collect(),
        other => {
            problems.push(Problem::at(
                key_pos,
                format!(
                    "`{name}` must be an array of tables, found {}; write each entry under a \
                     [[{name}]] header",
                    a(other.type_name())
                ),
            ));
            Vec::new()
        }
    }
}

/// "a string", "an integer": type names read better with their article.
pub(super) fn a(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

/// One table being read. Call [`Fields::finish`] once every known key has been read, so
/// that the keys nobody asked for are reported as unknown.
pub(super) struct Fields<'s, 't> {
    source: &'s Source<'s>,
    table: &'t dyn TableLike,
    /// How the table is named in messages: `[[inbound]]`, `[delivery.retry]`.
    what: String,
    pos: Pos,
    read: Vec<&'static str>,
}

impl<'s, 't> Fields<'s, 't> {
    pub fn new(source: &'s Source<'s>, table: &'t dyn TableLike, what: &str, pos: Pos) -> Self {
        Self {
            source,
            table,
            what: what.to_string(),
            pos,
            read: Vec::new(),
        }
    }

    pub fn pos(&self) -> &Pos {
        &self.pos
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// The position of a key, for problems about the key rather than its value.
    pub fn key_pos(&self, key: &str) -> Pos {
        match self.table.get_key_value(key) {
            Some((key, _)) => self.source.pos(key.span()),
            None => self.pos.clone(),
        }
    }

    /// Whether the entry sets `key` at all.
    pub fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The item under `key`, marking the key as known.
    pub fn item(&mut self, key: &'static str) -> Option<(&'t Item, Pos)> {
        self.read.push(key);
        let (key_repr, item) = self.table.get_key_value(key)?;
        let pos = match item.span() {
            Some(span) => self.source.pos_of_offset(span.start),
            None => self.source.pos(key_repr.span()),
        };
        Some((item, pos))
    }

    pub fn require<T>(
        &mut self,
        value: Option<T>,
        key: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        if value.is_none() && !self.table.contains_key(key) {
            problems.push(Problem::at(
                &self.pos,
                format!("{} is missing the required key `{key}`", self.what),
            ));
        }
        value
    }

    fn wrong_type(&self, key: &str, expected: &str, item: &Item, pos: &Pos) -> Problem {
        let found = item.type_name();
        let quote_hint =
            if expected == "a string" && matches!(found, "integer" | "float" | "boolean") {
                "; put the value in double quotes"
            } else {
                ""
            };
        Problem::at(
            pos,
            format!(
                "`{key}` in {} must be {expected}, found {}{quote_hint}",
                self.what,
                a(found)
            ),
        )
    }

    pub fn string(&mut self, key: &'static str, problems: &mut Vec<Problem>) -> Option<At<String>> {
        let (item, pos) = self.item(key)?;
        match item.as_str() {
            Some(text) => Some(At {
                value: text.to_string(),
                pos,
            }),
            None => {
                problems.push(self.wrong_type(key, "a string", item, &pos));
                None
            }
        }
    }

    pub fn integer(&mut self, key: &'static str, problems: &mut Vec<Problem>) -> Option<At<i64>> {
        let (item, pos) = self.item(key)?;
        match item.as_integer() {
            Some(number) => Some(At { value: number, pos }),
            None => {
                problems.push(self.wrong_type(key, "an integer", item, &pos));
                None
            }
        }
    }

    /// A number; integers are accepted too so that `jitter = 0` works.
    pub fn number(&mut self, key: &'static str, problems: &mut Vec<Problem>) -> Option<At<f64>> {
        let (item, pos) = self.item(key)?;
        let value = item
            .as_float()
            .or_else(|| item.as_integer().map(|number| number as f64));
        match value {
            Some(value) => Some(At { value, pos }),
            None => {
                problems.push(self.wrong_type(key, "a number", item, &pos));
                None
            }
        }
    }

    pub fn string_array(
        &mut self,
        key: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<Vec<At<String>>> {
        let (item, pos) = self.item(key)?;
        let Some(array) = item.as_array() else {
            problems.push(self.wrong_type(key, "an array of strings", item, &pos));
            return None;
        };
        let mut strings = Vec::new();
        for value in array.iter() {
            let pos = self.source.pos(value.span());
            match value.as_str() {
                Some(text) => strings.push(At {
                    value: text.to_string(),
                    pos,
                }),
                None => problems.push(Problem::at(
                    &pos,
                    format!(
                        "`{key}` in {} must contain only strings, found {}",
                        self.what,
                        a(value.type_name())
                    ),
                )),
            }
        }
        Some(strings)
    }

    /// A sub-table such as `[delivery.retry]`, inline or not.
    pub fn table(
        &mut self,
        key: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<(&'t dyn TableLike, Pos)> {
        let (item, pos) = self.item(key)?;
        match item.as_table_like() {
            Some(table) => Some((table, pos)),
            None => {
                problems.push(self.wrong_type(key, "a table", item, &pos));
                None
            }
        }
    }

    /// Reports every key that was never read, suggesting the closest known key.
    pub fn finish(self, problems: &mut Vec<Problem>) {
        for (key, _) in self.table.iter() {
            if self.read.contains(&key) {
                continue;
            }
            let pos = self.key_pos(key);
            let suggestion = closest(key, &self.read)
                .map(|known| format!("did you mean `{known}`? "))
                .unwrap_or_default();
            problems.push(Problem::at(
                &pos,
                format!(
                    "unknown key `{key}` in {}; {suggestion}known keys: {}",
                    self.what,
                    self.read.join(", ")
                ),
            ));
        }
    }
}

/// The known name closest to a misspelt one, if any is close enough to be a likely typo.
pub(super) fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let lowered = word.to_lowercase();
    known
        .iter()
        .map(|candidate| (strsim::jaro_winkler(&lowered, candidate), *candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|(left, _), (right, _)| left.total_cmp(right))
        .map(|(_, candidate)| candidate)
}

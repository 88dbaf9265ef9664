//! What went wrong in a rules directory, and where: `file:line:col: message`, the format
//! editors and CI logs already know how to jump to.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing the user must fix before the rules load. Line and column are 1-based; the
/// column counts characters, not bytes, so it matches what an editor shows for Chinese text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Problem {
    pub(super) fn at(pos: &Pos, message: impl Into<String>) -> Self {
        Self {
            path: pos.path.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// A problem with no position inside a file: the directory itself, or an unreadable file.
    pub(super) fn whole(path: &Path, message: impl Into<String>) -> Self {
        Self::at(&Pos::start_of(path), message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in a rules directory, in file order then position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesError {}

/// A place in a rules file, kept so that later checks (duplicates across files) can point
/// at both occurrences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pos {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn start_of(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// A value read from a rules file together with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct At<T> {
    pub value: T,
    pub pos: Pos,
}

/// The text of one rules file, for turning byte spans into positions.
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// The position of a byte span's start; the start of the file when the parser kept no
    /// span (implicit tables).
    pub fn pos(&self, span: Option<Range<usize>>) -> Pos {
        match span {
            Some(span) => self.pos_of_offset(span.start),
            None => Pos::start_of(self.path),
        }
    }

    pub fn pos_of_offset(&self, offset: usize) -> Pos {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Pos {
            path: self.path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_and_lines_start_at_one() {
        let source = Source {
            path: Path::new("r/a.toml"),
            text: "x = 1\n名字 = \"y\"\n",
        };
        let pos = source.pos_of_offset("x = 1\n名字 ".len());
        assert_eq!((pos.line, pos.column), (2, 4));
        assert_eq!(source.pos_of_offset(0).to_string(), "r/a.toml:1:1");
        // An offset inside a multi-byte character falls back to that character.
        let inside = source.pos_of_offset("x = 1\n名".len() - 1);
        assert_eq!((inside.line, inside.column), (2, 1));
    }

    #[test]
    fn problem_displays_as_file_line_column_message() {
        let problem = Problem::whole(Path::new("bot-rules"), "no rules");
        assert_eq!(problem.to_string(), "bot-rules:1:1: no rules");
    }
}

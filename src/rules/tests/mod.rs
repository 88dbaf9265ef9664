//! Tests of the rules loader against real directories: the shipped rules, one test per
//! validation rule with exact positions, and arbitrary input.

mod cross_file;
mod directory;
mod fields;

use std::path::Path;

use tempfile::TempDir;

use super::{Rules, RulesError, load};

/// A rules directory holding `files` (name, content).
fn rules_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write rules file");
    }
    dir
}

/// Every problem as `file:line:col: message`, with the temporary directory left out.
fn problems_in(files: &[(&str, &str)]) -> Vec<String> {
    let dir = rules_dir(files);
    match load(dir.path()) {
        Ok(_) => Vec::new(),
        Err(error) => relative(dir.path(), &error),
    }
}

fn relative(dir: &Path, error: &RulesError) -> Vec<String> {
    error
        .problems
        .iter()
        .map(|problem| {
            let shown = problem.to_string();
            let prefix = format!("{}/", dir.display());
            shown
                .strip_prefix(&prefix)
                .map(str::to_string)
                .unwrap_or(shown)
        })
        .collect()
}

/// Loads rules that must be valid.
fn loads(files: &[(&str, &str)]) -> Rules {
    let dir = rules_dir(files);
    match load(dir.path()) {
        Ok(rules) => rules,
        Err(error) => panic!("expected valid rules, got:\n{error}"),
    }
}

/// Asserts exactly one problem, at `location` (`file:line:col`), whose message contains
/// every fragment.
#[track_caller]
fn assert_one_problem(files: &[(&str, &str)], location: &str, fragments: &[&str]) {
    let problems = problems_in(files);
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    let problem = &problems[0];
    assert!(
        problem.starts_with(&format!("{location}: ")),
        "expected a problem at {location}, got {problem}"
    );
    for fragment in fragments {
        assert!(
            problem.contains(fragment),
            "`{problem}` should contain `{fragment}`"
        );
    }
}

const SHELL: &str = "[[inbound]]\nid = \"shell\"\nplatform = \"shell\"\n";

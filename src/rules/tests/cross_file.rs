//! Checks across entries and files.

//! Loads, validates and watches the `bot-rules/` directory. Pure apart from reading the
//! directory: the rest of the service sees only the validated [`Rules`].

mod model;

pub use model::*;

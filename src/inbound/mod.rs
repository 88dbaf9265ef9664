//! Signed platform callbacks: verification, decryption, de-duplication, normalisation into
//! [`ChatEvent`]s. One file per platform; nothing here knows about campaigns or delivery.

mod event;

pub use event::{ChatEvent, ChatKind, Reply};

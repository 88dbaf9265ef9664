//! Signed platform callbacks: verification, decryption, de-duplication, normalisation into
//! [`ChatEvent`]s. One file per platform; nothing here knows about campaigns or delivery.

mod api;
#[allow(dead_code)]
pub(crate) mod crypto;
mod event;
mod shell;
#[allow(dead_code)] // handlers are wired once the inbound framework lands
mod wechat_oa;
#[allow(dead_code)] // handlers are wired once the inbound framework lands
mod wecom;
#[allow(dead_code)] // handlers are wired once the inbound framework lands
mod wecom_aibot;
#[allow(dead_code)] // handlers are wired once the inbound framework lands
mod wecom_app;
#[allow(dead_code)] // handlers are wired once the inbound framework lands
mod wx;

pub use api::routes;
pub use event::{ChatEvent, ChatKind, Reply};
pub use shell::{
    CONSOLE_CHAT, ShellAnswer, ShellEndpoint, ShellMessage, TokenFileError, read_token_file,
    token_file_path, write_token_file,
};

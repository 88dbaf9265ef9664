//! Signed platform callbacks: verification, decryption, de-duplication, normalisation into
//! [`ChatEvent`]s. One file per platform; nothing here knows about campaigns or delivery.

mod api;
pub mod dingtalk;
mod event;
pub mod feishu;
pub mod feishu_api;
mod shell;

pub use api::routes;
pub use event::{ChatEvent, ChatKind, Reply};
pub use shell::{
    CONSOLE_CHAT, ShellAnswer, ShellEndpoint, ShellMessage, TokenFileError, read_token_file,
    token_file_path, write_token_file,
};

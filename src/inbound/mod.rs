//! Signed platform callbacks: verification, decryption, de-duplication, normalisation into
//! [`ChatEvent`]s. One file per platform; `api.rs` dispatches and offers the shared
//! services (`Callback`). Nothing here knows about campaigns or delivery.

mod admission;
mod api;
pub(crate) mod crypto;
mod deferred;
mod dingtalk;
mod event;
mod feishu;
mod feishu_api;
mod feishu_http;
#[cfg(test)]
mod handler_testing;
mod qq;
mod runtime;
mod shell;
mod slack;
mod standard;
pub mod store;
mod wechat_oa;
mod wecom;
mod wecom_aibot;
mod wecom_app;
mod wx;
mod wx_handler;

pub use admission::{Admission, Effects};
pub use api::routes;
pub use event::{ChatEvent, ChatKind, Reply};
pub use runtime::{InboundRuntime, TokenCache};
pub use shell::{
    CONSOLE_CHAT, ShellAnswer, ShellEndpoint, ShellMessage, TokenFileError, read_token_file,
    token_file_path, write_token_file,
};

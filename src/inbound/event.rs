//! The normalised chat message every platform becomes, and what the bot answers with.

use serde::{Deserialize, Serialize};

/// Whether a message came from a one-to-one conversation or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Direct,
    Group,
}

/// One chat message addressed to the bot, in platform-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEvent {
    /// Platform name as in the rules (`shell`, `wecom_app`, …).
    pub platform: String,
    /// The inbound account id (the `/webhooks/{id}` segment).
    pub account: String,
    /// The conversation id on the platform.
    pub chat: String,
    pub chat_kind: ChatKind,
    /// The sender's platform user id; what `[[operator]]` entries match.
    pub sender: String,
    pub sender_name: Option<String>,
    /// The message text with any leading bot mention already stripped.
    pub text: String,
    /// The platform's message id, the de-duplication key where the platform has one.
    pub message_id: Option<String>,
}

/// One message the bot sends back into the conversation it was asked in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into() }
    }
}

//! The bot with the rules in force when a callback arrived and the message's admission,
//! owned, so a command can run in a task of its own: after the HTTP answer
//! (`Callback::reply_later`, for replies through an API) or beside a platform's deadline
//! (WeCom/WeChat passive replies, Slack's three seconds). `Callback::run_command` runs the
//! same bot in line, borrowing what this owns.

use std::sync::Arc;

use super::admission::Admission;
use super::api::Callback;
use super::{ChatEvent, Reply};
use crate::app::Live;
use crate::bot::Bot;

/// The bot, the rules and channels in force when the callback arrived (one version of
/// both), and the message's admission.
pub(crate) struct DeferredBot {
    bot: Bot,
    live: Arc<Live>,
    admission: Admission,
}

impl DeferredBot {
    pub fn new(callback: &Callback<'_>, admission: Admission) -> Self {
        Self {
            bot: Bot::serving(callback.state),
            live: callback.live.clone(),
            admission,
        }
    }

    pub async fn run(self, event: &ChatEvent) -> Vec<Reply> {
        self.bot
            .handle_admitted(&self.live, event, self.admission)
            .await
    }
}

//! The bot with the rules in force when a callback arrived, owned, so a command can run in
//! a task of its own: after the HTTP answer (`Callback::reply_later`, for replies through an
//! API) or beside a platform's deadline (WeCom/WeChat passive replies, Slack's three
//! seconds). `Callback::run_command` is the in-line use of the same thing.

use std::sync::Arc;

use super::api::Callback;
use super::{ChatEvent, Reply};
use crate::bot::Bot;
use crate::rules::Rules;

/// The bot and the rules in force when the callback arrived.
pub(crate) struct DeferredBot {
    bot: Bot,
    rules: Arc<Rules>,
}

impl DeferredBot {
    pub fn new(callback: &Callback<'_>) -> Self {
        Self {
            bot: Bot::new(callback.state.db.clone(), callback.state.clock.clone()),
            rules: callback.rules.clone(),
        }
    }

    pub async fn run(&self, event: &ChatEvent) -> Vec<Reply> {
        self.bot.handle(&self.rules, event).await
    }
}

//! The bot, owned, for replies that run after the HTTP answer (`Callback::reply_later`):
//! the platforms whose deadline is shorter than a command may take (Slack's three seconds)
//! or whose replies go through an API (Slack events, QQ) run the command in such a task.

use std::sync::Arc;

use super::api::Callback;
use super::{ChatEvent, Reply};
use crate::app::AppState;
use crate::bot::Bot;
use crate::rules::Rules;

/// The rules in force when the callback arrived and the state the bot needs.
pub(crate) struct DeferredBot {
    state: AppState,
    rules: Arc<Rules>,
}

impl DeferredBot {
    pub fn new(callback: &Callback<'_>) -> Self {
        Self {
            state: callback.state.clone(),
            rules: callback.rules.clone(),
        }
    }

    /// The same as `Callback::run_command`, without borrowing the request.
    pub async fn run(&self, event: &ChatEvent) -> Vec<Reply> {
        Bot::new(self.state.db.clone(), self.state.clock.clone())
            .handle(&self.rules, event)
            .await
    }
}

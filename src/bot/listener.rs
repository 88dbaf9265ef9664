//! What the bot does with messages that are not commands. Operators' chatter is ignored.
//! From anyone else, an opt-out keyword (`退订`, `TD`, `STOP`, `unsubscribe`) records that
//! person's opt-out for this account and is confirmed once; anything else is kept as
//! feedback and not answered (a bot that chats back invites spam and confuses recipients).

use sqlx::AnyConnection;

use super::text::{self, Lang};
use crate::clock::UnixMillis;
use crate::db::Db;
use crate::inbound::{Admission, ChatEvent, Reply};
use crate::rules::Rules;

/// Whole-message keywords, matched case-insensitively after trimming; the language of the
/// confirmation follows the keyword's.
const OPT_OUT_KEYWORDS: [(&str, Lang); 6] = [
    ("退订", Lang::Zh),
    ("td", Lang::Zh),
    ("取消订阅", Lang::Zh),
    ("stop", Lang::En),
    ("unsubscribe", Lang::En),
    ("unsub", Lang::En),
];

/// Longest feedback text kept; the rest is cut, not refused.
const MAX_FEEDBACK_CHARS: usize = 4_000;

fn opt_out_keyword(text: &str) -> Option<(&'static str, Lang)> {
    let cleaned = text
        .trim()
        .trim_matches(|c: char| c.is_ascii_punctuation() || "。！，".contains(c))
        .to_lowercase();
    OPT_OUT_KEYWORDS
        .into_iter()
        .find(|(keyword, _)| *keyword == cleaned)
}

/// Handles one non-command message. Never fails outward: storage problems are logged. An
/// opt-out or a piece of feedback is written in the same transaction as the message's
/// callback id (see [`Admission::begin`]), so a retry after a crash neither loses it nor
/// stores it twice.
pub(super) async fn listen(
    db: &Db,
    now: UnixMillis,
    rules: &Rules,
    event: &ChatEvent,
    admission: Admission,
) -> Vec<Reply> {
    if rules.role_of(&event.platform, &event.sender).is_some() || event.text.trim().is_empty() {
        admission.record_later(db).await;
        return Vec::new();
    }
    if let Some((keyword, lang)) = opt_out_keyword(&event.text) {
        return match record_opt_out(db, admission, event, keyword, now).await {
            Ok(Some(true)) => vec![Reply::text(text::opt_out_confirmed(lang))],
            // Already opted out: confirming again would be the message they asked to stop.
            // Or a retry of the message that recorded it, which was confirmed then.
            Ok(Some(false) | None) => Vec::new(),
            Err(error) => {
                tracing::error!(%error, inbound.account = %event.account, "could not record an opt-out");
                vec![Reply::text(text::opt_out_failed(lang))]
            }
        };
    }
    let text: String = event.text.chars().take(MAX_FEEDBACK_CHARS).collect();
    if let Err(error) = record_feedback(db, admission, event, &text, now).await {
        tracing::error!(%error, inbound.account = %event.account, "could not store feedback");
    }
    Vec::new()
}

/// True when this is the person's first opt-out on this account; `None` for a retry of
/// a message already handled.
async fn record_opt_out(
    db: &Db,
    admission: Admission,
    event: &ChatEvent,
    keyword: &str,
    now: UnixMillis,
) -> Result<Option<bool>, sqlx::Error> {
    let Some(mut effects) = admission.begin(db).await? else {
        return Ok(None);
    };
    let first = insert_opt_out(effects.connection(), event, keyword, now).await?;
    effects.commit().await?;
    Ok(Some(first))
}

async fn insert_opt_out(
    connection: &mut AnyConnection,
    event: &ChatEvent,
    keyword: &str,
    now: UnixMillis,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO opt_outs (platform, account, user_id, keyword, opted_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, account, user_id) DO NOTHING",
    )
    .bind(&event.platform)
    .bind(&event.account)
    .bind(&event.sender)
    .bind(keyword)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

async fn record_feedback(
    db: &Db,
    admission: Admission,
    event: &ChatEvent,
    text: &str,
    now: UnixMillis,
) -> Result<(), sqlx::Error> {
    let Some(mut effects) = admission.begin(db).await? else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO feedback (platform, account, chat, user_id, text, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.platform)
    .bind(&event.account)
    .bind(&event.chat)
    .bind(&event.sender)
    .bind(text)
    .bind(now)
    .execute(effects.connection())
    .await?;
    effects.commit().await
}

/// Whether `user` opted out on `account`; the campaign engine skips such recipients.
pub async fn has_opted_out(
    db: &Db,
    platform: &str,
    account: &str,
    user: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT opted_at FROM opt_outs WHERE platform = $1 AND account = $2 AND user_id = $3",
    )
    .bind(platform)
    .bind(account)
    .bind(user)
    .fetch_optional(db.reader())
    .await?;
    Ok(found.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::test_support;

    #[test]
    fn keywords_match_whole_messages_only() {
        assert_eq!(opt_out_keyword(" 退订 ").map(|k| k.0), Some("退订"));
        assert_eq!(opt_out_keyword("TD").map(|k| k.0), Some("td"));
        assert_eq!(opt_out_keyword("Stop!").map(|k| k.1), Some(Lang::En));
        assert_eq!(opt_out_keyword("退订。").map(|k| k.0), Some("退订"));
        assert_eq!(opt_out_keyword("please don't stop"), None);
        assert_eq!(opt_out_keyword("tdx"), None);
    }

    #[tokio::test]
    async fn opt_outs_are_recorded_and_confirmed_once_feedback_is_kept_silently() {
        let (_dir, db) = test_support::db().await;
        let rules = test_support::rules();
        let stranger = test_support::event("stranger", "退订");
        let first = listen(&db, 1, &rules, &stranger, Admission::unrecorded()).await;
        assert_eq!(first.len(), 1);
        assert!(first[0].text.contains("已退订"));
        assert!(
            listen(&db, 2, &rules, &stranger, Admission::unrecorded())
                .await
                .is_empty(),
            "confirmed once"
        );
        assert!(
            has_opted_out(&db, &stranger.platform, &stranger.account, "stranger")
                .await
                .unwrap()
        );

        let feedback = test_support::event("stranger", "你们的活动很棒");
        assert!(
            listen(&db, 3, &rules, &feedback, Admission::unrecorded())
                .await
                .is_empty()
        );
        let stored: Vec<(String, String)> = sqlx::query_as("SELECT user_id, text FROM feedback")
            .fetch_all(db.reader())
            .await
            .unwrap();
        assert_eq!(stored, vec![("stranger".into(), "你们的活动很棒".into())]);
    }

    #[tokio::test]
    async fn operators_chatter_is_neither_opt_out_nor_feedback() {
        let (_dir, db) = test_support::db().await;
        let rules = test_support::rules();
        let operator = rules.operators[0].user.clone();
        let event = test_support::event(&operator, "STOP");
        assert!(
            listen(&db, 1, &rules, &event, Admission::unrecorded())
                .await
                .is_empty()
        );
        assert!(
            !has_opted_out(&db, &event.platform, &event.account, &operator)
                .await
                .unwrap()
        );
    }
}

//! Router tests against a real SQLite database: routing, roles, language, audit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::bot::test_support::{self, START_MS};
use crate::inbound::InboundRuntime;
use crate::rules::Role;

async fn setup() -> (tempfile::TempDir, Db, Bot) {
    let (dir, db) = test_support::db().await;
    let bot = Bot::new(db.clone(), test_support::clock());
    (dir, db, bot)
}

async fn ask(bot: &Bot, rules: &Rules, sender: &str, text: &str) -> String {
    let replies = bot
        .handle(
            &test_support::live(rules),
            &test_support::event(sender, text),
        )
        .await;
    assert_eq!(replies.len(), 1, "one reply to {text:?}: {replies:?}");
    replies.into_iter().map(|reply| reply.text).collect()
}

async fn outcomes(db: &Db) -> Vec<(String, Outcome)> {
    db.grouped()
        .flush()
        .await
        .expect("flush the queued audit rows");
    let mut rows = store::recent_audit(db, 100).await.expect("read audit");
    rows.reverse();
    rows.into_iter()
        .map(|row| (row.command, row.outcome))
        .collect()
}

#[tokio::test]
async fn whoami_answers_anyone_and_explains_onboarding_to_strangers() {
    let (_dir, db, bot) = setup().await;
    let rules = test_support::rules();
    let stranger = ask(&bot, &rules, "zhang.san", "/whoami").await;
    assert!(stranger.contains("user id: zhang.san"), "{stranger}");
    assert!(stranger.contains("account: shell"), "{stranger}");
    assert!(stranger.contains("not an operator"), "{stranger}");
    assert!(
        stranger.contains("[[operator]]\nplatform = \"shell\"\nuser = \"zhang.san\""),
        "{stranger}"
    );
    let admin = ask(&bot, &rules, "admin", "/WhoAmI").await;
    assert!(admin.contains("role: admin"), "{admin}");
    assert!(!admin.contains("[[operator]]"), "{admin}");

    db.grouped().flush().await.unwrap();
    let rows = store::recent_audit(&db, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    let row = &rows[1];
    assert_eq!(
        (
            row.at,
            row.platform.as_str(),
            row.account.as_str(),
            row.chat.as_str()
        ),
        (START_MS, "shell", "shell", "console")
    );
    assert_eq!(
        (row.sender.as_str(), row.command.as_str()),
        ("zhang.san", "whoami")
    );
    assert_eq!(row.outcome, Outcome::Ok);
}

#[tokio::test]
async fn whoami_shows_the_display_name_when_the_platform_gives_one() {
    let (_dir, _db, bot) = setup().await;
    let mut event = test_support::event("viewer", "@qunfa 我是谁");
    event.sender_name = Some("李四".to_string());
    let replies = bot
        .handle(&test_support::live(&test_support::rules()), &event)
        .await;
    let text = &replies[0].text;
    assert!(text.contains("名称：李四"), "{text}");
    assert!(text.contains("角色：查看者 (viewer)"), "{text}");
}

#[tokio::test]
async fn help_lists_only_the_commands_the_caller_may_use() {
    let (_dir, _db, bot) = setup().await;
    let mut rules = test_support::rules();
    rules.commands.get_mut("whoami").unwrap().role = Some(Role::Admin);
    rules.commands.get_mut("help").unwrap().role = None;

    let viewer = ask(&bot, &rules, "viewer", "/help").await;
    assert!(
        viewer.contains("/help [command] (aliases: 帮助, h)"),
        "{viewer}"
    );
    assert!(!viewer.contains("/whoami"), "{viewer}");
    let detail = ask(&bot, &rules, "viewer", "/help whoami").await;
    assert!(
        detail.contains("required role: admin\nyou may not use this command"),
        "{detail}"
    );

    let admin = ask(&bot, &rules, "admin", "/help").await;
    assert!(admin.contains("/help [command]"), "{admin}");
    assert!(admin.contains("/whoami (aliases: 我是谁)"), "{admin}");
}

#[tokio::test]
async fn help_for_one_command_by_name_or_alias() {
    let (_dir, _db, bot) = setup().await;
    let rules = test_support::rules();
    let by_alias = ask(&bot, &rules, "viewer", "/help 我是谁").await;
    assert!(by_alias.starts_with("/whoami\n"), "{by_alias}");
    assert!(by_alias.contains("required role: anyone"), "{by_alias}");
    let by_name = ask(&bot, &rules, "viewer", "/h /help").await;
    assert!(by_name.contains("required role: viewer"), "{by_name}");
    assert!(by_name.contains("aliases: 帮助, h"), "{by_name}");
}

#[tokio::test]
async fn a_role_below_the_command_is_refused_with_both_roles_named() {
    let (_dir, db, bot) = setup().await;
    let mut rules = test_support::rules();
    rules.commands.get_mut("help").unwrap().role = Some(Role::Approver);

    let viewer = ask(&bot, &rules, "viewer", "/help").await;
    assert!(viewer.contains("needs the role approver"), "{viewer}");
    assert!(viewer.contains("you are viewer"), "{viewer}");

    let stranger = ask(&bot, &rules, "someone", "/help").await;
    assert!(stranger.contains("you are not an operator"), "{stranger}");
    assert!(stranger.contains("/whoami"), "{stranger}");
    assert!(stranger.contains("user = \"someone\""), "{stranger}");

    let zh = ask(&bot, &rules, "someone", "帮助").await;
    assert!(zh.contains("需要 审批人 (approver) 或更高的角色"), "{zh}");
    assert!(zh.contains("您还不是操作员"), "{zh}");

    assert_eq!(
        outcomes(&db).await,
        vec![
            ("help".to_string(), Outcome::Denied),
            ("help".to_string(), Outcome::Denied),
            ("help".to_string(), Outcome::Denied),
        ]
    );
}

#[tokio::test]
async fn chinese_aliases_get_chinese_replies_and_english_words_english() {
    let (_dir, _db, bot) = setup().await;
    let rules = test_support::rules();
    let zh = ask(&bot, &rules, "viewer", "帮助").await;
    assert!(zh.starts_with("您可以使用的命令："), "{zh}");
    let zh_slashed = ask(&bot, &rules, "viewer", "／帮助 whoami").await;
    assert!(zh_slashed.contains("所需角色：所有人"), "{zh_slashed}");
    let en = ask(&bot, &rules, "viewer", "/h").await;
    assert!(en.starts_with("Commands you may use:"), "{en}");
}

#[tokio::test]
async fn unknown_slash_words_get_a_suggestion_only_when_close() {
    let (_dir, db, bot) = setup().await;
    let rules = test_support::rules();
    let typo = ask(&bot, &rules, "viewer", "/hlep").await;
    assert_eq!(
        typo,
        "unknown command `/hlep`; did you mean `/help`? Send /help for the commands you may use."
    );
    let whoami = ask(&bot, &rules, "viewer", "/whoamii").await;
    assert!(whoami.contains("did you mean `/whoami`?"), "{whoami}");
    let far = ask(&bot, &rules, "viewer", "/xyz").await;
    assert!(far.starts_with("unknown command `/xyz`."), "{far}");
    assert!(!far.contains("did you mean"), "{far}");
    let zh = ask(&bot, &rules, "viewer", "/帮主").await;
    assert!(zh.contains("您是不是想用 `/帮助`"), "{zh}");

    assert_eq!(
        outcomes(&db).await,
        vec![
            ("/hlep".to_string(), Outcome::Unknown),
            ("/whoamii".to_string(), Outcome::Unknown),
            ("/xyz".to_string(), Outcome::Unknown),
            ("/帮主".to_string(), Outcome::Unknown),
        ]
    );
}

#[tokio::test]
async fn chatter_gets_no_reply_and_no_audit_row() {
    let (_dir, db, bot) = setup().await;
    let rules = test_support::rules();
    for text in [
        "hello there",
        "帮主 你好",
        "it's \"unclosed",
        "",
        "   ",
        "/",
    ] {
        let replies = bot
            .handle(
                &test_support::live(&rules),
                &test_support::event("viewer", text),
            )
            .await;
        assert!(replies.is_empty(), "{text:?} got {replies:?}");
    }
    assert!(outcomes(&db).await.is_empty());
}

#[tokio::test]
async fn parse_errors_and_wrong_arguments_are_invalid() {
    let (_dir, db, bot) = setup().await;
    let rules = test_support::rules();
    let quote = ask(&bot, &rules, "viewer", "/help \"whoami").await;
    assert!(quote.contains("never closed"), "{quote}");
    assert!(quote.contains("Usage: /help [command]"), "{quote}");
    let extra = ask(&bot, &rules, "viewer", "/whoami please").await;
    assert_eq!(extra, "wrong arguments. Usage: /whoami");
    let topic = ask(&bot, &rules, "viewer", "帮助 nonsense").await;
    assert!(topic.contains("没有名为 `nonsense` 的命令"), "{topic}");
    assert_eq!(
        outcomes(&db).await,
        vec![
            ("help".to_string(), Outcome::Invalid),
            ("whoami".to_string(), Outcome::Invalid),
            ("help".to_string(), Outcome::Invalid),
        ]
    );
}

#[tokio::test]
async fn read_only_commands_answer_even_when_the_audit_cannot_be_written() {
    let (_dir, db, bot) = setup().await;
    sqlx::query("DROP TABLE command_audit")
        .execute(db.writer())
        .await
        .unwrap();
    let reply = ask(&bot, &test_support::rules(), "admin", "/whoami").await;
    assert!(reply.contains("role: admin"), "{reply}");
}

fn whoami_rule() -> CommandRule {
    test_support::rules().commands["whoami"].clone()
}

/// A command with effects whose work writes one feedback row through the connection it is
/// given, for the tests of the effectful path (no built-in has effects yet).
async fn effectful(
    bot: &Bot,
    admission: Admission,
    result: Result<(), Failure>,
    ran: &AtomicUsize,
) -> Vec<Reply> {
    let work = async |writes: Option<&mut AnyConnection>| {
        ran.fetch_add(1, Ordering::SeqCst);
        let Some(connection) = writes else {
            return Err(Failure::Internal("no transaction".to_string()));
        };
        write_feedback(connection).await;
        result.map(|()| vec![Reply::text("done")])
    };
    let event = test_support::event("admin", "/whoami");
    bot.run_audited(&event, &whoami_rule(), true, Lang::En, admission, work)
        .await
}

async fn write_feedback(connection: &mut AnyConnection) {
    sqlx::query(
        "INSERT INTO feedback (platform, account, chat, user_id, text, received_at) \
         VALUES ('shell', 'shell', 'console', 'admin', 'effect', 1)",
    )
    .execute(connection)
    .await
    .expect("write the effect");
}

async fn count(db: &Db, table: &str) -> i64 {
    db.grouped().flush().await.expect("flush");
    let (rows,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(db.reader())
        .await
        .expect("count rows");
    rows
}

/// An admission of callback id `id` on the shell account, in the memory of `runtime`
/// (a fresh runtime is a restarted process that forgot every id).
fn admit(runtime: &Arc<InboundRuntime>, id: &str) -> Admission {
    Admission::claim(runtime, "shell", id, START_MS).expect("not claimed before")
}

#[tokio::test]
async fn a_command_with_effects_keeps_nothing_without_its_audit_row() {
    let (_dir, db, bot) = setup().await;
    sqlx::query("DROP TABLE command_audit")
        .execute(db.writer())
        .await
        .unwrap();
    let runtime = Arc::new(InboundRuntime::default());
    let ran = AtomicUsize::new(0);
    let replies = effectful(&bot, admit(&runtime, "m-1"), Ok(()), &ran).await;
    assert_eq!(
        replies,
        vec![Reply::text(text::audit_unavailable(Lang::En))]
    );
    assert_eq!(
        count(&db, "feedback").await,
        0,
        "the effect was rolled back"
    );
    assert_eq!(count(&db, "inbound_events").await, 0, "and so was the id");
    assert!(
        Admission::claim(&runtime, "shell", "m-1", START_MS).is_some(),
        "the platform's retry is handled"
    );
}

#[tokio::test]
async fn a_command_with_effects_commits_them_with_its_callback_id_and_audit_row() {
    let (_dir, db, bot) = setup().await;
    let ran = AtomicUsize::new(0);
    let first = Arc::new(InboundRuntime::default());
    let replies = effectful(&bot, admit(&first, "m-1"), Ok(()), &ran).await;
    assert_eq!(replies, vec![Reply::text("done")]);
    assert_eq!(count(&db, "feedback").await, 1);
    assert_eq!(count(&db, "inbound_events").await, 1);
    assert_eq!(
        outcomes(&db).await,
        vec![("whoami".to_string(), Outcome::Ok)]
    );
    // A restarted process does not remember the id; the database does.
    let restarted = Arc::new(InboundRuntime::default());
    let retry = effectful(&bot, admit(&restarted, "m-1"), Ok(()), &ran).await;
    assert!(retry.is_empty(), "{retry:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the retry did not run it");
    assert_eq!(count(&db, "feedback").await, 1);
}

#[tokio::test]
async fn a_failed_command_with_effects_keeps_its_id_and_audit_row_but_not_its_writes() {
    let (_dir, db, bot) = setup().await;
    let ran = AtomicUsize::new(0);
    let runtime = Arc::new(InboundRuntime::default());
    let failure = Err(Failure::Internal("broke".to_string()));
    let replies = effectful(&bot, admit(&runtime, "m-1"), failure, &ran).await;
    assert_eq!(replies, vec![Reply::text("broke")]);
    assert_eq!(count(&db, "feedback").await, 0, "undone by the savepoint");
    assert_eq!(
        outcomes(&db).await,
        vec![("whoami".to_string(), Outcome::Error)]
    );
    let restarted = Arc::new(InboundRuntime::default());
    let retry = effectful(&bot, admit(&restarted, "m-1"), Ok(()), &ran).await;
    assert!(retry.is_empty(), "answered once, with the failure");
}

/// The gap this design closes: a process that dies after recording a message's id but
/// before its command's effects would make the platform's retry look like a duplicate.
/// Here the command is cut off after writing its effect and before the commit (the future
/// is dropped, as a crash or a cancelled request would); the retry must run it, once.
#[tokio::test]
async fn a_command_cut_off_before_its_commit_runs_on_the_retry_and_only_then() {
    let (_dir, db, bot) = setup().await;
    let runtime = Arc::new(InboundRuntime::default());
    let (written, wrote) = tokio::sync::oneshot::channel::<()>();
    let stalls = async |writes: Option<&mut AnyConnection>| {
        let Some(connection) = writes else {
            return Err(Failure::Internal("no transaction".to_string()));
        };
        write_feedback(connection).await;
        let _ = written.send(());
        std::future::pending::<Result<Vec<Reply>, Failure>>().await
    };
    let event = test_support::event("admin", "/whoami");
    let rule = whoami_rule();
    let cut_off = bot.run_audited(
        &event,
        &rule,
        true,
        Lang::En,
        admit(&runtime, "m-1"),
        stalls,
    );
    tokio::select! {
        _ = cut_off => panic!("the stalled command finished"),
        _ = wrote => {}
    }
    assert_eq!(count(&db, "feedback").await, 0, "nothing was committed");
    assert_eq!(count(&db, "inbound_events").await, 0);

    let ran = AtomicUsize::new(0);
    let retry = effectful(&bot, admit(&runtime, "m-1"), Ok(()), &ran).await;
    assert_eq!(retry, vec![Reply::text("done")], "the retry ran it");
    let again = Arc::new(InboundRuntime::default());
    assert!(
        effectful(&bot, admit(&again, "m-1"), Ok(()), &ran)
            .await
            .is_empty()
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db, "feedback").await, 1, "the effect happened once");
    assert_eq!(
        outcomes(&db).await,
        vec![("whoami".to_string(), Outcome::Ok)]
    );
}

#[tokio::test]
async fn read_only_commands_answer_before_their_rows_commit_and_retries_are_caught() {
    let (_dir, db, bot) = setup().await;
    let runtime = Arc::new(InboundRuntime::default());
    let rules = test_support::rules();
    let event = test_support::event("admin", "/whoami");
    let replies = bot
        .handle_admitted(&test_support::live(&rules), &event, admit(&runtime, "m-1"))
        .await;
    assert!(replies[0].text.contains("role: admin"));
    assert!(
        Admission::claim(&runtime, "shell", "m-1", START_MS).is_none(),
        "an in-process replay is caught before anything commits"
    );
    assert_eq!(
        outcomes(&db).await,
        vec![("whoami".to_string(), Outcome::Ok)],
        "queued, then flushed"
    );
    assert_eq!(
        count(&db, "inbound_events").await,
        0,
        "the id travels in the audit row: one row per command"
    );
    // A restarted process reads the id back from the audit row.
    let restarted = Arc::new(InboundRuntime::default());
    restarted.load_recent(&db).await;
    assert!(
        Admission::claim(&restarted, "shell", "m-1", START_MS).is_none(),
        "known after a restart"
    );
    assert!(Admission::claim(&restarted, "shell", "m-2", START_MS).is_some());
}

//! Every sentence the bot says, in English and Chinese, in one place so the two languages
//! stay in step. Pure string building; the router and commands pick the language.

use super::parse::ParseError;
use crate::clock::UnixMillis;
use crate::delivery::quota::Usage;
use crate::rules::{CommandRule, Limits, Role};

/// The language of a reply: Chinese when the caller typed a Chinese command word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// Chinese when the word holds a CJK character, English otherwise.
    pub fn for_word(word: &str) -> Lang {
        if word.chars().any(is_cjk) {
            Lang::Zh
        } else {
            Lang::En
        }
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{2E80}'..='\u{2FDF}'   // radicals
        | '\u{3040}'..='\u{30FF}' // kana, typed by the same IMEs
        | '\u{3400}'..='\u{4DBF}' // extension A
        | '\u{4E00}'..='\u{9FFF}' // unified ideographs
        | '\u{F900}'..='\u{FAFF}' // compatibility ideographs
        | '\u{20000}'..='\u{3134F}') // extensions B–G
}

/// How a command is written in replies: `/name usage`.
pub fn synopsis(command: &CommandRule) -> String {
    if command.usage.is_empty() {
        format!("/{}", command.name)
    } else {
        format!("/{} {}", command.name, command.usage)
    }
}

fn role_name(lang: Lang, role: Role) -> &'static str {
    match (lang, role) {
        (Lang::En, role) => role.as_str(),
        (Lang::Zh, Role::Viewer) => "查看者 (viewer)",
        (Lang::Zh, Role::Operator) => "操作员 (operator)",
        (Lang::Zh, Role::Approver) => "审批人 (approver)",
        (Lang::Zh, Role::Admin) => "管理员 (admin)",
    }
}

/// The `[[operator]]` table an admin adds to let this caller in.
fn operator_snippet(platform: &str, user: &str) -> String {
    let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
    format!(
        "[[operator]]\nplatform = {}\nuser = {}\nrole = \"viewer\"",
        quoted(platform),
        quoted(user)
    )
}

pub fn onboarding(lang: Lang, platform: &str, user: &str) -> String {
    let snippet = operator_snippet(platform, user);
    match lang {
        Lang::En => format!(
            "To become an operator, ask an admin to add this to bot-rules (role: viewer, operator, approver or admin):\n{snippet}"
        ),
        Lang::Zh => format!(
            "如需成为操作员，请管理员在 bot-rules 中添加以下配置（role 可为 viewer、operator、approver 或 admin）：\n{snippet}"
        ),
    }
}

pub fn unknown_command(lang: Lang, typed: &str, suggestion: Option<&str>) -> String {
    let typed = shorten(typed);
    match (lang, suggestion) {
        (Lang::En, Some(s)) => {
            format!(
                "unknown command `/{typed}`; did you mean `/{s}`? Send /help for the commands you may use."
            )
        }
        (Lang::En, None) => {
            format!("unknown command `/{typed}`. Send /help for the commands you may use.")
        }
        (Lang::Zh, Some(s)) => {
            format!("未知命令 `/{typed}`；您是不是想用 `/{s}`？发送「帮助」查看您可以使用的命令。")
        }
        (Lang::Zh, None) => format!("未知命令 `/{typed}`。发送「帮助」查看您可以使用的命令。"),
    }
}

pub fn denied(
    lang: Lang,
    command: &CommandRule,
    required: Role,
    caller: Option<Role>,
    platform: &str,
    user: &str,
) -> String {
    let name = &command.name;
    let hint = onboarding(lang, platform, user);
    match (lang, caller) {
        (Lang::En, Some(role)) => format!(
            "`/{name}` needs the role {} or higher; you are {}. An admin can raise your role in the [[operator]] entry for you in bot-rules.",
            role_name(lang, required),
            role_name(lang, role)
        ),
        (Lang::En, None) => format!(
            "`/{name}` needs the role {} or higher; you are not an operator. Send /whoami to see your user id.\n{hint}",
            role_name(lang, required)
        ),
        (Lang::Zh, Some(role)) => format!(
            "`/{name}` 需要 {} 或更高的角色；您当前是 {}。管理员可在 bot-rules 中您的 [[operator]] 条目里提升您的角色。",
            role_name(lang, required),
            role_name(lang, role)
        ),
        (Lang::Zh, None) => format!(
            "`/{name}` 需要 {} 或更高的角色；您还不是操作员。发送「我是谁」查看您的用户 ID。\n{hint}",
            role_name(lang, required)
        ),
    }
}

pub fn parse_error(lang: Lang, error: &ParseError, command: &CommandRule) -> String {
    let usage = synopsis(command);
    let problem = match (lang, error) {
        (Lang::En, ParseError::UnterminatedQuote { open, close, near }) if near.is_empty() => {
            format!("the quote {open} at the end is never closed (add a closing {close})")
        }
        (Lang::En, other) => other.to_string(),
        (Lang::Zh, ParseError::UnterminatedQuote { open, close, near }) if near.is_empty() => {
            format!("末尾的引号 {open} 没有闭合（请补上 {close}）")
        }
        (Lang::Zh, ParseError::UnterminatedQuote { open, close, near }) => {
            format!("`{near}` 前的引号 {open} 没有闭合（请补上 {close}）")
        }
        (Lang::Zh, ParseError::EmptyFlagName) => {
            "选项缺少名称：请写成 `--名称 值` 或 `--名称=值`".to_string()
        }
    };
    match lang {
        Lang::En => format!("cannot read that command: {problem}. Usage: {usage}"),
        Lang::Zh => format!("无法解析该命令：{problem}。用法：{usage}"),
    }
}

pub fn bad_arguments(lang: Lang, command: &CommandRule) -> String {
    let usage = synopsis(command);
    match lang {
        Lang::En => format!("wrong arguments. Usage: {usage}"),
        Lang::Zh => format!("参数有误。用法：{usage}"),
    }
}

pub fn not_implemented(lang: Lang, name: &str) -> String {
    match lang {
        Lang::En => format!(
            "`/{name}` is configured in bot-rules but this version of qunfa does not implement it."
        ),
        Lang::Zh => format!("`/{name}` 已在 bot-rules 中配置，但当前版本的 qunfa 尚未实现该命令。"),
    }
}

pub fn audit_unavailable(lang: Lang) -> String {
    match lang {
        Lang::En => "nothing was done: the command could not be recorded in the audit log (database unavailable). Try again shortly; if it persists, check the qunfa log.".to_string(),
        Lang::Zh => "未执行：无法写入命令审计日志（数据库不可用）。请稍后重试；如持续出现，请检查 qunfa 日志。".to_string(),
    }
}

pub fn help_list(lang: Lang, usable: &[&CommandRule]) -> String {
    let mut out = match lang {
        Lang::En => "Commands you may use:".to_string(),
        Lang::Zh => "您可以使用的命令：".to_string(),
    };
    for command in usable {
        out.push('\n');
        out.push_str(&synopsis(command));
        if !command.aliases.is_empty() {
            let aliases = command.aliases.join(", ");
            match lang {
                Lang::En => out.push_str(&format!(" (aliases: {aliases})")),
                Lang::Zh => out.push_str(&format!("（别名：{aliases}）")),
            }
        }
        if !command.summary.is_empty() {
            out.push_str(" — ");
            out.push_str(&command.summary);
        }
    }
    out.push('\n');
    out.push_str(match lang {
        Lang::En => "Send /help <command> for details.",
        Lang::Zh => "发送「帮助 <命令>」查看详细用法。",
    });
    out
}

pub fn help_none_usable(lang: Lang, platform: &str, user: &str) -> String {
    let hint = onboarding(lang, platform, user);
    match lang {
        Lang::En => format!("There are no commands you may use yet.\n{hint}"),
        Lang::Zh => format!("您目前没有可以使用的命令。\n{hint}"),
    }
}

pub fn help_detail(lang: Lang, command: &CommandRule, caller_may_use: bool) -> String {
    let none = match lang {
        Lang::En => "none",
        Lang::Zh => "无",
    };
    let aliases = if command.aliases.is_empty() {
        none.to_string()
    } else {
        command.aliases.join(", ")
    };
    let role = match command.role {
        Some(role) => role_name(lang, role),
        None => match lang {
            Lang::En => "anyone",
            Lang::Zh => "所有人",
        },
    };
    let usage = synopsis(command);
    let summary = &command.summary;
    match (lang, caller_may_use) {
        (Lang::En, may) => format!(
            "{usage}\n{summary}\naliases: {aliases}\nrequired role: {role}{}",
            if may {
                ""
            } else {
                "\nyou may not use this command"
            }
        ),
        (Lang::Zh, may) => format!(
            "{usage}\n{summary}\n别名：{aliases}\n所需角色：{role}{}",
            if may {
                ""
            } else {
                "\n您无权使用该命令"
            }
        ),
    }
}

pub fn help_unknown_topic(lang: Lang, topic: &str) -> String {
    let topic = shorten(topic);
    match lang {
        Lang::En => {
            format!("there is no command `{topic}`. Send /help for the commands you may use.")
        }
        Lang::Zh => format!("没有名为 `{topic}` 的命令。发送「帮助」查看您可以使用的命令。"),
    }
}

/// What `/whoami` knows about the caller.
pub struct Identity<'a> {
    pub platform: &'a str,
    pub user: &'a str,
    pub name: Option<&'a str>,
    pub account: &'a str,
    pub role: Option<Role>,
}

pub fn whoami(lang: Lang, who: &Identity<'_>) -> String {
    use std::fmt::Write as _;
    let (platform, user, account) = (who.platform, who.user, who.account);
    // Writing into one string: `/whoami` is the command monitoring and load tests call.
    let mut out = String::with_capacity(128);
    let _ = match lang {
        Lang::En => write!(out, "platform: {platform}\nuser id: {user}"),
        Lang::Zh => write!(out, "平台：{platform}\n用户 ID：{user}"),
    };
    if let Some(name) = who.name {
        let _ = match lang {
            Lang::En => write!(out, "\nname: {name}"),
            Lang::Zh => write!(out, "\n名称：{name}"),
        };
    }
    let _ = match lang {
        Lang::En => write!(out, "\naccount: {account}"),
        Lang::Zh => write!(out, "\n账号：{account}"),
    };
    let _ = match (lang, who.role) {
        (Lang::En, Some(role)) => write!(out, "\nrole: {}", role_name(lang, role)),
        (Lang::Zh, Some(role)) => write!(out, "\n角色：{}", role_name(lang, role)),
        (Lang::En, None) => write!(out, "\nrole: not an operator"),
        (Lang::Zh, None) => write!(out, "\n角色：非操作员"),
    };
    if who.role.is_none() {
        out.push('\n');
        out.push_str(&onboarding(lang, platform, user));
    }
    out
}

/// Caps text echoed back from the caller, so a pasted essay is not repeated in full.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(MAX_CHARS).collect();
        short.push('…');
        short
    }
}

pub fn opt_out_confirmed(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "您已退订，今后不会再通过此账号收到群发消息。",
        Lang::En => {
            "You are unsubscribed: no more mass messages will reach you through this account."
        }
    }
}

pub fn opt_out_failed(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "退订暂时未能记录，请稍后再发一次「退订」。",
        Lang::En => "Your opt-out could not be recorded just now; please send STOP again later.",
    }
}

pub fn unknown_channel(lang: Lang, typed: &str, known: &[&str]) -> String {
    let typed = shorten(typed);
    let known = if known.is_empty() {
        "-".to_string()
    } else {
        known.join(", ")
    };
    match lang {
        Lang::En => format!("there is no channel `{typed}` in the rules. Channels: {known}"),
        Lang::Zh => format!("规则中没有渠道 `{typed}`。现有渠道：{known}"),
    }
}

pub fn send_test_refused(lang: Lang, why: &str) -> String {
    match lang {
        Lang::En => format!("nothing was queued: {why}"),
        Lang::Zh => format!("未加入发送队列：{why}"),
    }
}

pub fn send_test_failed(lang: Lang) -> String {
    match lang {
        Lang::En => "nothing was queued: the outbox could not be written. Try again shortly; if it persists, check the qunfa log.".to_string(),
        Lang::Zh => "未加入发送队列：无法写入发件箱。请稍后重试；如持续出现，请检查 qunfa 日志。".to_string(),
    }
}

pub fn send_test_queued(lang: Lang, channel: &str, message_id: &str) -> String {
    match lang {
        Lang::En => format!(
            "queued through `{channel}` as {message_id}; GET /api/v1/messages/{message_id} shows how it went."
        ),
        Lang::Zh => format!(
            "已通过 `{channel}` 加入发送队列，消息 ID：{message_id}；可用 GET /api/v1/messages/{message_id} 查看发送结果。"
        ),
    }
}

pub fn quota_unavailable(lang: Lang) -> String {
    match lang {
        Lang::En => {
            "the quota counters could not be read (database unavailable). Try again shortly."
                .to_string()
        }
        Lang::Zh => "无法读取配额计数（数据库不可用），请稍后重试。".to_string(),
    }
}

/// One channel account's line of `/quota`.
pub struct QuotaLine<'a> {
    pub channel: &'a str,
    pub limits: Limits,
    pub usage: Usage,
    /// Why the channel cannot send, when a secret is missing or the like.
    pub disabled: Option<&'a str>,
    /// `Some` while its circuit is open (`None` inside: until a probe answers).
    pub circuit_open_until: Option<Option<UnixMillis>>,
}

/// `/quota`: one line per channel account; times in the zone the quotas count in.
pub fn quota(
    lang: Lang,
    zone_name: &str,
    zone: &jiff::tz::TimeZone,
    now: UnixMillis,
    lines: &[QuotaLine<'_>],
) -> String {
    let at = |ms: UnixMillis| clock_time(ms, zone);
    let mut out = match lang {
        Lang::En => format!("Quotas at {} ({zone_name}):", at(now)),
        Lang::Zh => format!("配额（{zone_name} {}）：", at(now)),
    };
    if lines.is_empty() {
        out.push('\n');
        out.push_str(match lang {
            Lang::En => "no channels are configured.",
            Lang::Zh => "尚未配置任何渠道。",
        });
    }
    for line in lines {
        let mut parts: Vec<String> = line
            .usage
            .windows
            .iter()
            .map(|window| {
                let unit = unit_name(lang, window.limit);
                let (used, quota, left, resets) =
                    (window.used, window.quota, window.left, at(window.resets_at));
                match lang {
                    Lang::En => format!("{unit} {used}/{quota} ({left} left, resets {resets})"),
                    Lang::Zh => format!("{unit} {used}/{quota}（剩余 {left}，{resets} 重置）"),
                }
            })
            .collect();
        if parts.is_empty() {
            parts.push(
                match lang {
                    Lang::En => "no account limits",
                    Lang::Zh => "账号不限量",
                }
                .to_string(),
            );
        }
        let per_recipient: Vec<String> = [
            ("recipient_per_minute", line.limits.recipient_per_minute),
            ("recipient_per_day", line.limits.recipient_per_day),
            ("recipient_per_month", line.limits.recipient_per_month),
        ]
        .into_iter()
        .filter_map(|(name, limit)| {
            let (limit, unit) = (limit?, unit_name(lang, name));
            Some(match lang {
                Lang::En => format!("{limit}/{unit}"),
                Lang::Zh => format!("{unit} {limit}"),
            })
        })
        .collect();
        if !per_recipient.is_empty() {
            parts.push(match lang {
                Lang::En => format!("each recipient {}", per_recipient.join(", ")),
                Lang::Zh => format!("每位接收人 {}", per_recipient.join("，")),
            });
        }
        if let Some(reason) = line.disabled {
            parts.push(match lang {
                Lang::En => format!("DISABLED: {reason}"),
                Lang::Zh => format!("已停用：{reason}"),
            });
        }
        if let Some(until) = line.circuit_open_until {
            parts.push(match (lang, until) {
                (Lang::En, Some(until)) => format!("circuit OPEN until {}", at(until)),
                (Lang::En, None) => "circuit OPEN, probing".to_string(),
                (Lang::Zh, Some(until)) => format!("已熔断，{} 后试探", at(until)),
                (Lang::Zh, None) => "已熔断，正在试探".to_string(),
            });
        }
        let separator = match lang {
            Lang::En => "; ",
            Lang::Zh => "；",
        };
        out.push_str(&format!("\n{}: {}", line.channel, parts.join(separator)));
    }
    out
}

/// A quota's unit as people say it; the name is a limit key of the rules file.
fn unit_name(lang: Lang, limit: &str) -> &'static str {
    let unit = limit.rsplit('_').next().unwrap_or(limit);
    match (lang, unit) {
        (Lang::En, "minute") => "minute",
        (Lang::En, "day") => "day",
        (Lang::En, _) => "month",
        (Lang::Zh, "minute") => "每分钟",
        (Lang::Zh, "day") => "每天",
        (Lang::Zh, _) => "每月",
    }
}

/// `11-25 14:32` in `zone`; the raw milliseconds if out of range.
fn clock_time(ms: UnixMillis, zone: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|at| {
            at.to_zoned(zone.clone())
                .strftime("%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

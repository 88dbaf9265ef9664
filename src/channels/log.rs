//! The `log` channel: "sends" by appending one JSON line per message to a file, so the
//! shipped rules work with no provider account and every delivery can be inspected.

use std::path::PathBuf;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{AddressKind, Audience, Channel, Message, SendContext, SendResult, Verdict};
use crate::clock::SharedClock;

#[derive(Debug)]
pub struct LogChannel {
    channel_id: String,
    path: PathBuf,
    clock: SharedClock,
    // Serialises appends so concurrent workers never interleave two lines.
    file: Mutex<Option<tokio::fs::File>>,
}

impl LogChannel {
    pub fn new(channel_id: &str, path: PathBuf, clock: SharedClock) -> Self {
        Self {
            channel_id: channel_id.to_string(),
            path,
            clock,
            file: Mutex::new(None),
        }
    }

    async fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            *guard = Some(file);
        }
        let Some(file) = guard.as_mut() else {
            return Err(std::io::Error::other("log file not open"));
        };
        let written = async {
            file.write_all(line).await?;
            file.flush().await
        }
        .await;
        if written.is_err() {
            // Reopen next time: the file may have been rotated or its disk remounted.
            *guard = None;
        }
        written
    }
}

#[async_trait::async_trait]
impl Channel for LogChannel {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::ExternalId)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let at = jiff::Timestamp::from_millisecond(self.clock.now_ms())
            .map(|t| t.to_string())
            .unwrap_or_default();
        let record = json!({
            "at": at,
            "channel": self.channel_id,
            "job_id": ctx.job_id,
            "idempotency_key": ctx.idempotency_key,
            "attempt": ctx.attempt,
            "to": ctx.recipient,
            "message": message,
        });
        let mut line = record.to_string().into_bytes();
        line.push(b'\n');
        match self.append(&line).await {
            Ok(()) => SendResult::new(Verdict::Delivered, None, "appended"),
            Err(error) => SendResult::new(
                Verdict::Retryable { after: None },
                None,
                format!("cannot append to {}: {error}", self.path.display()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[tokio::test]
    async fn each_message_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let channel = LogChannel::new("log", path.clone(), Arc::new(ManualClock::new(0)));
        let message = Message::text("你好\nworld");
        for job_id in 1..=2 {
            let ctx = SendContext {
                job_id,
                idempotency_key: "k",
                attempt: 1,
                recipient: "zhangsan",
            };
            assert_eq!(
                channel.send(&ctx, &message).await.verdict,
                Verdict::Delivered
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["job_id"], 2);
        assert_eq!(lines[0]["message"]["text"], "你好\nworld");
        assert_eq!(lines[0]["at"], "1970-01-01T00:00:00Z");
    }

    #[tokio::test]
    async fn an_unwritable_path_is_retryable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let channel = LogChannel::new(
            "log",
            dir.path().join("missing-dir/out.jsonl"),
            Arc::new(ManualClock::new(0)),
        );
        let ctx = SendContext {
            job_id: 1,
            idempotency_key: "k",
            attempt: 1,
            recipient: "r",
        };
        let message = Message::text("x");
        let result = channel.send(&ctx, &message).await;
        assert!(matches!(result.verdict, Verdict::Retryable { .. }));
    }
}

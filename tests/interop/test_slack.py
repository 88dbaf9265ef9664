"""Slack as the platform: requests signed by slack_sdk's SignatureVerifier (the official
SDK's own signer) against a running `qunfa serve`: the Events API URL check, a slash command
answered in time, an app mention answered through chat.postMessage on a mock Slack API, a
retry with X-Slack-Retry-Num, a forged signature, a stale timestamp and a malformed body."""

import json
import time
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-interop-token"

RULES = """
[[inbound]]
id = "slack-ops"
platform = "slack"
signing_secret_env = "QUNFA_SLACK_SIGNING_SECRET"
bot_token_env = "QUNFA_SLACK_BOT_TOKEN"
base_url = "{base_url}"

[[operator]]
platform = "slack"
user = "U42"
role = "admin"

[[command]]
name = "whoami"
aliases = ["我是谁"]
role = "anyone"
summary = "Show your platform, user id and role"
usage = ""
"""

ENV = {"QUNFA_SLACK_SIGNING_SECRET": SECRET, "QUNFA_SLACK_BOT_TOKEN": BOT_TOKEN}


def start(qunfa, mock_api):
    mock_api.answer("/api/chat.postMessage", {"ok": True, "channel": "C7", "ts": "1.2"})
    return qunfa(RULES.format(base_url=f"{mock_api.url}/api"), ENV)


def signed_headers(body: bytes, timestamp: int | None = None, content_type="application/json") -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": content_type,
    }


def slash(command: str, text: str, trigger: str) -> bytes:
    return urlencode({
        "token": "legacy", "team_id": "T1", "team_domain": "acme", "channel_id": "C7",
        "channel_name": "ops", "user_id": "U42", "user_name": "ada", "command": command,
        "text": text, "response_url": "https://hooks.slack.invalid/commands/T1/1/x",
        "trigger_id": trigger, "api_app_id": "A1",
    }).encode()


def test_url_verification_is_answered_with_the_challenge(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = json.dumps({"token": "t", "challenge": "3eZbrw1aBm2rZgRN", "type": "url_verification"}).encode()
    answer = server.post("slack-ops", body, signed_headers(body))
    assert answer.status == 200
    assert answer.text == "3eZbrw1aBm2rZgRN"


def test_a_slash_command_is_answered_in_the_http_reply_once(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = slash("/whoami", "", "trig-1")
    headers = signed_headers(body, content_type="application/x-www-form-urlencoded")
    started = time.monotonic()
    answer = server.post("slack-ops", body, headers)
    assert time.monotonic() - started < 3, "Slack gives up after three seconds"
    assert answer.status == 200, answer.text
    reply = answer.json()
    assert reply["response_type"] == "in_channel"
    assert "U42" in reply["text"] and "admin" in reply["text"]
    replay = server.post("slack-ops", body, headers)
    assert replay.status == 200
    assert [row[3] for row in server.settled_audit()] == ["whoami"]


def test_a_mention_is_answered_through_chat_post_message_and_retries_are_not_run_again(qunfa, mock_api):
    server = start(qunfa, mock_api)
    event = {
        "token": "t", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
        "event_id": "Ev42", "event_time": int(time.time()),
        "event": {"type": "app_mention", "user": "U42", "text": "<@U0BOT> /whoami",
                  "ts": "1.1", "channel": "C7", "event_ts": "1.1"},
    }
    body = json.dumps(event).encode()
    assert server.post("slack-ops", body, signed_headers(body)).status == 200
    retry = dict(signed_headers(body), **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert server.post("slack-ops", body, retry).status == 200
    posted = mock_api.wait_for("/api/chat.postMessage")
    assert len(posted) == 1
    assert posted[0].headers.get("authorization") == f"Bearer {BOT_TOKEN}"
    reply = posted[0].json()
    assert reply["channel"] == "C7" and "U42" in reply["text"]
    assert len(server.settled_audit()) == 1


def test_forged_stale_and_malformed_callbacks_are_refused(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = slash("/whoami", "", "trig-2")
    forged = signed_headers(body, content_type="application/x-www-form-urlencoded")
    forged["X-Slack-Signature"] = SignatureVerifier("another secret").generate_signature(
        timestamp=forged["X-Slack-Request-Timestamp"], body=body)
    assert server.post("slack-ops", body, forged).status == 401
    stale = signed_headers(body, timestamp=int(time.time()) - 600,
                           content_type="application/x-www-form-urlencoded")
    answer = server.post("slack-ops", body, stale)
    assert answer.status == 401 and answer.json()["error"]["code"] == "stale"
    bad = b'{"type": "event_callback"}'
    assert server.post("slack-ops", bad, signed_headers(bad)).status == 400
    assert server.audit() == []

"""DingTalk enterprise robot (HTTP mode) against a running `qunfa serve`.

The callback bodies are serialised by DingTalk's official `dingtalk_stream.ChatbotMessage`
(the same model DingTalk's SDK parses robot messages with); the `timestamp`/`sign` headers
follow the documented recipe (no SDK exposes it, see peer_sdks.md). The reply shape is
checked against what the official `ChatbotHandler.reply_text` sends.
"""

import base64
import hashlib
import hmac
import json
import time
import uuid

from dingtalk_stream import ChatbotHandler, ChatbotMessage

SECRET = "appSecretForRobot_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
ENV = {"QUNFA_IT_DINGTALK_SECRET": SECRET}

RULES = """
[[inbound]]
id = "ding"
platform = "dingtalk"
app_secret_env = "QUNFA_IT_DINGTALK_SECRET"

[[operator]]
platform = "dingtalk"
user = "manager4220"
role = "admin"

[[command]]
name = "help"
aliases = ["帮助"]
role = "viewer"
summary = "List the commands you may use"
usage = "[command]"

[[command]]
name = "whoami"
aliases = ["我是谁"]
role = "anyone"
summary = "Show your platform, user id and role"
usage = ""
"""


def sign(timestamp_ms: str, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def message(text: str, staff_id: str = "manager4220", session_webhook: str = "https://oapi.dingtalk.com/robot/sendBySession?session=x") -> ChatbotMessage:
    now = int(time.time() * 1000)
    return ChatbotMessage.from_dict(
        {
            "conversationId": "cidGroupOps==",
            "atUsers": [{"dingtalkId": "$:LWCP_v1:$bot"}],
            "chatbotCorpId": "dingcorp",
            "chatbotUserId": "$:LWCP_v1:$bot",
            "msgId": f"msg{uuid.uuid4().hex}",
            "senderNick": "王经理",
            "isAdmin": True,
            "senderStaffId": staff_id,
            "sessionWebhookExpiredTime": now + 90 * 60 * 1000,
            "createAt": now,
            "senderCorpId": "dingcorp",
            "conversationType": "2",
            "senderId": "$:LWCP_v1:$sender",
            "conversationTitle": "运营群",
            "isInAtList": True,
            "sessionWebhook": session_webhook,
            "text": {"content": f" {text}"},
            "msgtype": "text",
            "robotCode": "dingrobot",
        }
    )


def post(server, incoming: ChatbotMessage, timestamp_ms: int | None = None, signature: str | None = None, body: bytes | None = None):
    ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    raw = body if body is not None else json.dumps(incoming.to_dict(), ensure_ascii=False).encode()
    headers = {"content-type": "application/json", "timestamp": ts, "sign": signature or sign(ts)}
    return server.post("ding", raw, headers)


def test_a_signed_whoami_is_answered_in_the_shape_the_official_sdk_replies_with(qunfa, mock_api):
    server = qunfa(RULES, ENV)
    incoming = message("/whoami", session_webhook=f"{mock_api.url}/robot/sendBySession")
    answer = post(server, incoming)
    assert answer.status == 200, answer.text
    ours = answer.json()
    assert "user id: manager4220" in ours["text"]["content"]
    assert "role: admin" in ours["text"]["content"]
    assert "platform: dingtalk" in ours["text"]["content"]

    ChatbotHandler().reply_text(ours["text"]["content"], incoming)
    reference = mock_api.wait_for("/robot/sendBySession")[0].json()
    assert ours["msgtype"] == reference["msgtype"] == "text"
    assert ours["text"] == reference["text"]
    assert ours["at"]["atUserIds"] == reference["at"]["atUserIds"] == ["manager4220"]
    assert server.settled_audit() == [("dingtalk", "ding", "manager4220", "whoami", "ok")]


def test_a_forged_signature_is_refused_and_nothing_runs(qunfa):
    server = qunfa(RULES, ENV)
    incoming = message("/whoami")
    ts = str(int(time.time() * 1000))
    answer = post(server, incoming, int(ts), signature=sign(ts, secret="not the app secret"))
    assert answer.status == 401, answer.text
    missing = server.post("ding", json.dumps(incoming.to_dict()).encode(), {"content-type": "application/json"})
    assert missing.status == 401
    assert server.audit() == []


def test_a_timestamp_older_than_an_hour_is_refused_even_when_signed(qunfa):
    server = qunfa(RULES, ENV)
    two_hours_ago = int(time.time() * 1000) - 2 * 60 * 60 * 1000
    answer = post(server, message("/whoami"), two_hours_ago)
    assert answer.status == 401, answer.text
    assert server.audit() == []


def test_a_replayed_callback_is_acknowledged_but_runs_once(qunfa):
    server = qunfa(RULES, ENV)
    incoming = message("/whoami")
    ts = int(time.time() * 1000)
    first = post(server, incoming, ts)
    again = post(server, incoming, ts)
    assert first.status == 200 and again.status == 200, (first.text, again.text)
    assert len(server.settled_audit()) == 1


def test_a_malformed_signed_body_is_a_400(qunfa):
    server = qunfa(RULES, ENV)
    answer = post(server, message("/whoami"), body=b"{not json")
    assert answer.status == 400, answer.text
    assert server.audit() == []

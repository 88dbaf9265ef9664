"""The send API against a running `qunfa serve`: a message over a route of channels is
delivered by the signed webhook channel (its signature checked by the reference
`standardwebhooks` library, as the customer's receiver would), falls back to the next
channel when an endpoint says it is gone (410), and the Idempotency-Key makes a repeated
request one message."""

import json
import time
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

from conftest import http

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN = "interop-admin-token"


def rules(api_url: str) -> str:
    return f"""
[delivery]
poll_interval = "50ms"

[[channel]]
id = "hooks"
kind = "webhook"
url = "{api_url}/hook"
secret_env = "HOOK_SECRET"

[[channel]]
id = "gone"
kind = "webhook"
url = "{api_url}/gone"
secret_env = "HOOK_SECRET"

[[channel]]
id = "log"
kind = "log"
path = "sent.jsonl"
"""


def start(qunfa, mock_api):
    mock_api.answer("/gone", {"error": "endpoint removed"}, status=410)
    return qunfa(rules(mock_api.url), {"HOOK_SECRET": SECRET, "QUNFA_ADMIN_TOKEN": ADMIN})


def send(server, body: dict, key: str | None = None):
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return http("POST", f"{server.url}/api/v1/messages", json.dumps(body).encode(), headers)


def message(server, message_id: str) -> dict:
    answer = http("GET", f"{server.url}/api/v1/messages/{message_id}", headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.status == 200, answer.text
    return answer.json()


def wait_for_state(server, message_id: str, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = message(server, message_id)
        if view["state"] == state:
            return view
        assert time.monotonic() < deadline, f"message never became {state}: {view}"
        time.sleep(0.05)


def test_a_message_reaches_the_webhook_signed_as_the_spec_says(qunfa, mock_api):
    server = start(qunfa, mock_api)
    answer = send(server, {
        "recipient": {"external_id": "u-1"},
        "route": ["hooks", "log"],
        "content": {"text": "您的订单已发货", "title": "Order 42"},
    })
    assert answer.status == 202, answer.text
    message_id = answer.json()["id"]
    call = mock_api.wait_for("/hook")[0]
    headers = {k.lower(): v for k, v in call.headers.items()}
    payload = Webhook(SECRET).verify(call.body, headers)
    assert payload["type"] == "message.send"
    assert payload["data"]["to"] == "u-1"
    assert payload["data"]["message"]["text"] == "您的订单已发货"
    view = wait_for_state(server, message_id, "delivered")
    assert [step["state"] for step in view["steps"]] == ["delivered", "waiting"]


def test_a_gone_endpoint_moves_the_message_to_the_next_channel(qunfa, mock_api, tmp_path):
    server = start(qunfa, mock_api)
    answer = send(server, {
        "recipient": {"external_id": "u-2"},
        "route": ["gone", "log"],
        "content": {"text": "generic", "per_channel": {"log": {"text": "for the log"}}},
    })
    assert answer.status == 202, answer.text
    view = wait_for_state(server, answer.json()["id"], "delivered")
    assert view["steps"][0]["state"] == "failed"
    assert view["steps"][0]["attempts"][0]["outcome"] == "account_disabled"
    assert view["steps"][1]["state"] == "delivered"
    lines = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert [line["message"]["text"] for line in lines] == ["for the log"]


def test_the_same_idempotency_key_is_one_message(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = {"recipient": {"external_id": "u-3"}, "route": ["hooks"], "content": {"text": "once"}}
    first = send(server, body, key="order-42")
    again = send(server, body, key="order-42")
    assert first.status == again.status == 202
    assert first.json()["id"] == again.json()["id"]
    other = send(server, {**body, "content": {"text": "twice?"}}, key="order-42")
    assert other.status == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    wait_for_state(server, first.json()["id"], "delivered")
    assert len(mock_api.wait_for("/hook")) == 1
    refused = send(server, {"recipient": {}, "route": ["hooks"], "content": {"text": "x"}})
    assert refused.status == 422
    assert refused.json()["error"]["code"] == "unreachable_recipient"


CHAT_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
CHAT_RULES = """
[[inbound]]
id = "crm"
platform = "standard"
secret_env = "QUNFA_CRM_SECRET"

[[operator]]
platform = "standard"
user = "ops-1"
role = "operator"
"""


def chat(server, text: str, webhook_id: str) -> list[str]:
    """Sends `text` as operator ops-1 through a Standard Webhooks inbound account, signed by
    the reference library, and answers the bot's reply texts."""
    at = datetime.now(tz=timezone.utc)
    body = json.dumps({"type": "message", "timestamp": at.isoformat(),
                       "data": {"chat": "ops", "user": "ops-1", "text": text,
                                "message_id": webhook_id}}).encode()
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": Webhook(CHAT_SECRET).sign(webhook_id, at, body.decode()),
               "content-type": "application/json"}
    answer = server.post("crm", body, headers)
    assert answer.status == 200, answer.text
    return [reply["text"] for reply in answer.json().get("replies", [])]


def test_send_test_from_chat_goes_through_the_outbox_once_and_quota_shows_it(qunfa, mock_api):
    server = qunfa(rules(mock_api.url) + CHAT_RULES + '\n[[channel]]\nid = "metered"\nkind = "log"\n'
                   'path = "metered.jsonl"\nper_minute = 20\n',
                   {"HOOK_SECRET": SECRET, "QUNFA_ADMIN_TOKEN": ADMIN, "QUNFA_CRM_SECRET": CHAT_SECRET})
    replies = chat(server, "/send-test hooks u-9 你好 from chat", "chat-1")
    assert len(replies) == 1 and replies[0].startswith("queued through `hooks` as msg_"), replies
    message_id = replies[0].split(" as ")[1].split(";")[0]
    call = mock_api.wait_for("/hook")[0]
    headers = {k.lower(): v for k, v in call.headers.items()}
    payload = Webhook(SECRET).verify(call.body, headers)
    assert payload["data"]["to"] == "u-9"
    assert payload["data"]["message"]["text"] == "你好 from chat"
    wait_for_state(server, message_id, "delivered")
    # The platform retrying the same callback changes nothing.
    assert chat(server, "/send-test hooks u-9 你好 from chat", "chat-1") == []
    assert chat(server, "测试发送 nowhere u-9 hi", "chat-2")[0].startswith("规则中没有渠道 `nowhere`")
    time.sleep(0.3)
    assert len(mock_api.wait_for("/hook")) == 1
    assert server.rows("SELECT COUNT(*) FROM messages") == [(1,)]

    assert chat(server, "/send-test metered u-1 one", "chat-3")[0].startswith("queued through `metered`")
    deadline = time.monotonic() + 10
    while "minute 1/20 (19 left" not in (quota := chat(server, "/quota metered", f"q-{time.monotonic()}")[0]):
        assert time.monotonic() < deadline, quota
        time.sleep(0.05)

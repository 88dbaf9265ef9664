"""The send API against a running `qunfa serve`: a message over a route of channels is
delivered by the signed webhook channel (its signature checked by the reference
`standardwebhooks` library, as the customer's receiver would), falls back to the next
channel when an endpoint says it is gone (410), and the Idempotency-Key makes a repeated
request one message."""

import json
import time

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

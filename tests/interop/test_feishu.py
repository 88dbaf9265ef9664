"""Feishu / Lark event subscription v2 against a running `qunfa serve`.

Every callback is first accepted by lark-oapi's own receiver (`EventDispatcherHandler.do`),
which proves it is a request Feishu could send; then it goes to qunfa. lark-oapi has no
encrypt helper, so events are sealed with the documented recipe (peer_sdks.md). The mock
API stands in for `open.feishu.cn`: the tenant token and the message reply API.
"""

import base64
import hashlib
import json
import os
import time
import uuid

import lark_oapi as lark
from Crypto.Cipher import AES
from lark_oapi.core.model import RawRequest
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler

TOKEN = "verifTokenXYZ"
ENCRYPT_KEY = "feishuEncryptKey"
OPERATOR = "ou_84aad35d084aa403a838cf73ee18467"
TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
ENV = {
    "QUNFA_IT_FEISHU_TOKEN": TOKEN,
    "QUNFA_IT_FEISHU_KEY": ENCRYPT_KEY,
    "QUNFA_IT_FEISHU_SECRET": "app-secret-for-tests",
}


def rules(base_url: str, encrypted: bool = True) -> str:
    key = 'encrypt_key_env = "QUNFA_IT_FEISHU_KEY"\n' if encrypted else ""
    return f"""
[[inbound]]
id = "lark"
platform = "feishu"
verification_token_env = "QUNFA_IT_FEISHU_TOKEN"
{key}app_id = "cli_a0000000000000000"
app_secret_env = "QUNFA_IT_FEISHU_SECRET"
base_url = "{base_url}"

[[operator]]
platform = "feishu"
user = "{OPERATOR}"
role = "admin"

[[command]]
name = "whoami"
aliases = ["我是谁"]
role = "anyone"
summary = "Show your platform, user id and role"
usage = ""
"""


def seal(plaintext: bytes, key: str = ENCRYPT_KEY) -> bytes:
    iv = os.urandom(16)
    pad = 16 - len(plaintext) % 16
    cipher = AES.new(hashlib.sha256(key.encode()).digest(), AES.MODE_CBC, iv)
    encrypted = base64.b64encode(iv + cipher.encrypt(plaintext + bytes([pad]) * pad)).decode()
    return json.dumps({"encrypt": encrypted}, separators=(",", ":")).encode()


def signed_headers(body: bytes, timestamp: int | None = None, key: str = ENCRYPT_KEY) -> dict:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    nonce = uuid.uuid4().hex[:12]
    signature = hashlib.sha256((ts + nonce + key).encode() + body).hexdigest()
    return {
        "content-type": "application/json",
        "X-Lark-Request-Timestamp": ts,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": signature,
    }


def event(event_type: str, body: dict, event_id: str | None = None) -> dict:
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id or uuid.uuid4().hex,
            "event_type": event_type,
            "create_time": str(int(time.time() * 1000)),
            "token": TOKEN,
            "app_id": "cli_a0000000000000000",
            "tenant_key": "2ca1d211f64f6438",
        },
        "event": body,
    }


def text_message(text: str, sender: str = OPERATOR, message_id: str | None = None) -> dict:
    return event(
        "im.message.receive_v1",
        {
            "sender": {"sender_id": {"open_id": sender, "union_id": "on_x", "user_id": "e33ggbyz"}, "sender_type": "user", "tenant_key": "2ca1d211f64f6438"},
            "message": {
                "message_id": message_id or f"om_{uuid.uuid4().hex}",
                "create_time": str(int(time.time() * 1000)),
                "chat_id": "oc_5ce6d572455d361153b7xx51da133945",
                "chat_type": "group",
                "message_type": "text",
                "content": json.dumps({"text": f"@_user_1 {text}"}),
                "mentions": [{"key": "@_user_1", "id": {"open_id": "ou_bot_open_id", "union_id": "on_bot", "user_id": ""}, "name": "CampaignBot", "tenant_key": "2ca1d211f64f6438"}],
            },
        },
    )


def lark_accepts(body: bytes, headers: dict, encrypt_key: str = ENCRYPT_KEY) -> lark.RawResponse:
    """Runs the callback through lark-oapi's receiver: what a real Feishu request passes."""
    handler = (
        EventDispatcherHandler.builder(encrypt_key, TOKEN)
        .register_p2_im_message_receive_v1(lambda data: None)
        .register_p2_im_message_message_read_v1(lambda data: None)
        .build()
    )
    request = RawRequest()
    request.uri = "/webhooks/lark"
    request.body = body
    request.headers = {k: v for k, v in headers.items() if k.lower().startswith("x-lark")}
    response = handler.do(request)
    assert response.status_code == 200, response.content
    return response


def token_answer(mock_api):
    mock_api.answer(TOKEN_PATH, {"code": 0, "msg": "ok", "tenant_access_token": "t-interop", "expire": 7200})


def test_url_verification_plain_and_encrypted_needs_no_signature(qunfa, mock_api):
    challenge = {"challenge": "ajls384kdjx98XX", "token": TOKEN, "type": "url_verification"}
    plain_body = json.dumps(challenge).encode()
    plain_server = qunfa(rules(mock_api.url, encrypted=False), ENV)
    reference = lark_accepts(plain_body, {}, encrypt_key="")
    answer = plain_server.post("lark", plain_body, {"content-type": "application/json"})
    assert answer.status == 200, answer.text
    assert answer.json() == json.loads(reference.content) == {"challenge": "ajls384kdjx98XX"}

    server = qunfa(rules(mock_api.url), ENV)
    sealed = seal(plain_body)
    lark_accepts(sealed, {})
    answer = server.post("lark", sealed, {"content-type": "application/json"})
    assert answer.status == 200, answer.text
    assert answer.json() == {"challenge": "ajls384kdjx98XX"}

    wrong_token = seal(json.dumps({**challenge, "token": "guessed"}).encode())
    assert server.post("lark", wrong_token, {"content-type": "application/json"}).status == 401


def test_a_signed_whoami_is_answered_through_the_reply_api_with_one_cached_token(qunfa, mock_api):
    token_answer(mock_api)
    server = qunfa(rules(mock_api.url), ENV)
    replies = []
    for n in range(2):
        message = text_message("/whoami")
        body = seal(json.dumps(message).encode())
        headers = signed_headers(body)
        lark_accepts(body, headers)
        answer = server.post("lark", body, headers)
        assert answer.status == 200, answer.text
        message_id = message["event"]["message"]["message_id"]
        replies += mock_api.wait_for(f"/open-apis/im/v1/messages/{message_id}/reply")
    for reply in replies:
        assert {k.lower(): v for k, v in reply.headers.items()}.get("authorization") == "Bearer t-interop"
        sent = reply.json()
        assert sent["msg_type"] == "text"
        text = json.loads(sent["content"])["text"]
        assert f"user id: {OPERATOR}" in text and "role: admin" in text
    fetches = [c for c in mock_api.calls if c.path == TOKEN_PATH]
    assert len(fetches) == 1
    assert fetches[0].json() == {"app_id": "cli_a0000000000000000", "app_secret": "app-secret-for-tests"}
    assert [row[:4] for row in server.settled_audit()] == [("feishu", "lark", OPERATOR, "whoami")] * 2


def test_a_forged_signature_and_an_unsigned_event_are_refused(qunfa, mock_api):
    token_answer(mock_api)
    server = qunfa(rules(mock_api.url), ENV)
    body = seal(json.dumps(text_message("/whoami")).encode())
    forged = signed_headers(body, key="guessedKey")
    assert server.post("lark", body, forged).status == 401
    assert server.post("lark", body, {"content-type": "application/json"}).status == 401
    assert server.audit() == []


def test_a_stale_timestamp_is_refused_even_when_signed(qunfa, mock_api):
    server = qunfa(rules(mock_api.url), ENV)
    body = seal(json.dumps(text_message("/whoami")).encode())
    two_days_ago = int(time.time()) - 2 * 24 * 3600
    headers = signed_headers(body, timestamp=two_days_ago)
    lark_accepts(body, headers)  # lark-oapi checks no window; qunfa does
    assert server.post("lark", body, headers).status == 401
    assert server.audit() == []


def test_a_replayed_event_is_acknowledged_but_runs_and_replies_once(qunfa, mock_api):
    token_answer(mock_api)
    server = qunfa(rules(mock_api.url), ENV)
    message = text_message("/whoami")
    body = seal(json.dumps(message).encode())
    headers = signed_headers(body)
    assert server.post("lark", body, headers).status == 200
    # Feishu's retry carries the same event id in a freshly sealed and signed body.
    retry = seal(json.dumps(message).encode())
    assert server.post("lark", retry, signed_headers(retry)).status == 200
    path = f"/open-apis/im/v1/messages/{message['event']['message']['message_id']}/reply"
    mock_api.wait_for(path)
    time.sleep(0.3)  # bounded: a second reply, if any, would have been sent by now
    assert len([c for c in mock_api.calls if c.path == path]) == 1
    assert len(server.settled_audit()) == 1


def test_read_receipts_are_recorded_as_typed_events(qunfa, mock_api):
    server = qunfa(rules(mock_api.url), ENV)
    receipt = event(
        "im.message.message_read_v1",
        {"reader": {"reader_id": {"open_id": OPERATOR}, "read_time": "1700000000123", "tenant_key": "t"}, "message_id_list": ["om_1", "om_2"]},
    )
    body = seal(json.dumps(receipt).encode())
    headers = signed_headers(body)
    lark_accepts(body, headers)
    assert server.post("lark", body, headers).status == 200
    rows = server.platform_events()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("feishu", "lark", "feishu.message_read", receipt["header"]["event_id"])]
    assert json.loads(rows[0][4])["message_ids"] == ["om_1", "om_2"]


def test_a_reply_answered_with_a_non_zero_code_is_logged_as_failed(qunfa, mock_api):
    token_answer(mock_api)
    server = qunfa(rules(mock_api.url), ENV)
    message = text_message("/whoami")
    path = f"/open-apis/im/v1/messages/{message['event']['message']['message_id']}/reply"
    mock_api.answer(path, {"code": 9499, "msg": "too many request"})
    body = seal(json.dumps(message).encode())
    assert server.post("lark", body, signed_headers(body)).status == 200
    mock_api.wait_for(path)
    deadline = time.monotonic() + 5
    while "9499" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "9499" in server.log()


def test_a_malformed_signed_body_is_a_400(qunfa, mock_api):
    server = qunfa(rules(mock_api.url), ENV)
    body = b"{not json"
    assert server.post("lark", body, signed_headers(body)).status == 400

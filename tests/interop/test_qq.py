"""QQ bot as the platform: callbacks signed with PyNaCl exactly as the QQ open platform
does (Ed25519, seed = bot secret repeated to 32 bytes, message = timestamp + body) against a
running `qunfa serve`: the op 13 handshake, a group @-message answered through the group
message API with a token from the (mock) token host, a replay, a forged signature, a stale
timestamp and a malformed body."""

import json
import time

from nacl.signing import SigningKey

SECRET = "DG5g3B4j9X2KOErG"

RULES = """
[[inbound]]
id = "qq-ops"
platform = "qq"
app_id = "102030"
app_secret_env = "QUNFA_QQ_SECRET"
base_url = "{base_url}"

[[command]]
name = "whoami"
aliases = ["我是谁"]
role = "anyone"
summary = "Show your platform, user id and role"
usage = ""
"""


def key(secret: str = SECRET) -> SigningKey:
    seed = secret
    while len(seed) < 32:
        seed += seed
    return SigningKey(seed[:32].encode())


def signed(body: bytes, timestamp: int | None = None, secret: str = SECRET) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = key(secret).sign(ts.encode() + body).signature.hex()
    return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": ts,
            "X-Bot-Appid": "102030", "User-Agent": "QQBot-Callback",
            "Content-Type": "application/json"}


def start(qunfa, mock_api):
    mock_api.answer("/app/getAppAccessToken", {"access_token": "qq-token", "expires_in": "7200"})
    mock_api.answer("/v2/groups/G1/messages", {"id": "reply-1", "timestamp": 1})
    return qunfa(RULES.format(base_url=mock_api.url), {"QUNFA_QQ_SECRET": SECRET})


def group_message(event_id: str) -> bytes:
    return json.dumps({"op": 0, "id": event_id, "t": "GROUP_AT_MESSAGE_CREATE",
                       "d": {"id": "ROBOT1.0_m1", "content": " /whoami", "group_openid": "G1",
                             "timestamp": "2026-11-25T12:00:00+08:00",
                             "author": {"member_openid": "M9"}}}).encode()


def test_op13_validation_is_signed_with_the_bot_key(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = b'{"d":{"plain_token":"Arq0D5A61EgUu4OxUvOp","event_ts":"1725442341"},"op":13}'
    answer = server.post("qq-ops", body, signed(body))
    assert answer.status == 200, answer.text
    reply = answer.json()
    assert reply["plain_token"] == "Arq0D5A61EgUu4OxUvOp"
    # The documented example's signature for this secret and token.
    assert reply["signature"] == (
        "87befc99c42c651b3aac0278e71ada338433ae26fcb24307bdc5ad38c1adc2d0"
        "1bcfcadc0842edac85e85205028a1132afe09280305f13aa6909ffc2d652c706")
    key().verify_key.verify(b"1725442341Arq0D5A61EgUu4OxUvOp", bytes.fromhex(reply["signature"]))


def test_a_group_command_is_answered_through_the_group_api_once(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = group_message("GROUP_AT_MESSAGE_CREATE:e1")
    answer = server.post("qq-ops", body, signed(body))
    assert answer.status == 200, answer.text
    assert server.post("qq-ops", body, signed(body)).status == 200
    sent = mock_api.wait_for("/v2/groups/G1/messages")
    assert len(sent) == 1
    assert sent[0].headers.get("authorization") == "QQBot qq-token"
    reply = sent[0].json()
    assert reply["msg_id"] == "ROBOT1.0_m1" and reply["msg_type"] == 0 and "M9" in reply["content"]
    token_calls = [c for c in mock_api.calls if c.path == "/app/getAppAccessToken"]
    assert token_calls and token_calls[0].json() == {"appId": "102030", "clientSecret": SECRET}
    assert len(server.settled_audit()) == 1


def test_forged_stale_and_malformed_callbacks_are_refused(qunfa, mock_api):
    server = start(qunfa, mock_api)
    body = group_message("GROUP_AT_MESSAGE_CREATE:e2")
    assert server.post("qq-ops", body, signed(body, secret="not-the-bot-secret")).status == 401
    stale = server.post("qq-ops", body, signed(body, timestamp=int(time.time()) - 3600))
    assert stale.status == 401 and stale.json()["error"]["code"] == "stale"
    bad = b'{"op":0,"t":"GROUP_AT_MESSAGE_CREATE","d":{}}'
    assert server.post("qq-ops", bad, signed(bad)).status == 400
    assert server.audit() == []

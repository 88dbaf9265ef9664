"""Outbound Feishu and Slack through a running `qunfa serve`, sent with the admin API's
test-messages endpoint and the send API.

The Feishu custom-bot mock checks `sign` with the published algorithm, the way Feishu
and lark-oapi's documentation describe it: base64(HMAC-SHA256(key = timestamp + "\\n" +
secret, message = empty)), timestamp in seconds within an hour. lark-oapi has no helper
for it (peer_sdks.md), so the recipe is written here from the documentation, not copied
from qunfa. Slack blocks are parsed and validated by slack_sdk's Block Kit models.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from slack_sdk.models.blocks import Block

from conftest import http

ADMIN = "interop-admin-token"
HOOK_TOKEN = "2b6a0c9e-6d1f-4c55-9a4e-0d5e7f1a2b3c"
BOT_SECRET = "demoSecretForCustomBot"
APP_ID = "cli_a0000000000000000"
APP_SECRET = "feishuAppSecretValue"
SLACK_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
HOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def feishu_sign(timestamp: str, secret: str) -> str:
    """The custom bot's signature as Feishu documents it."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class Provider:
    """A provider on a free port; `respond(path, headers, body)` -> (status, content type,
    body bytes). Records every request."""

    def __init__(self, respond):
        self.calls: list[tuple[str, dict, bytes]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                provider.calls.append((self.path, headers, body))
                status, content_type, payload = respond(self.path, headers, body)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int = 1, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"only {len(self.calls)} calls: {self.calls}"
            time.sleep(0.02)
        return self.calls

    def close(self):
        self.server.shutdown()


@pytest.fixture
def providers():
    started: list[Provider] = []

    def start(respond) -> Provider:
        provider = Provider(respond)
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.close()


def as_json(status: int, payload: dict):
    return status, "application/json", json.dumps(payload).encode()


def feishu_bot(secret: str, verdicts: list):
    """A Feishu custom bot that checks the token in the path and the signature."""

    def respond(path, headers, body):
        if path != f"/open-apis/bot/v2/hook/{HOOK_TOKEN}":
            return as_json(200, {"code": 19001, "data": {}, "msg": "param invalid: incoming webhook access token invalid"})
        request = json.loads(body)
        timestamp = request.get("timestamp", "")
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 3600
        valid = fresh and hmac.compare_digest(request.get("sign", ""), feishu_sign(timestamp, secret))
        verdicts.append(valid)
        if not valid:
            return as_json(200, {"code": 19021, "data": {}, "msg": "sign match fail or timestamp is not within one hour from current time"})
        return as_json(200, {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})

    return respond


def bot_rules(base_url: str) -> str:
    return f"""
[delivery]
poll_interval = "50ms"

[[channel]]
id = "feishu-ops"
kind = "feishu_bot"
hook_token_env = "FS_HOOK"
secret_env = "FS_SIGN"
base_url = "{base_url}"
"""


def admin(method: str, url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    return http(method, url, data, headers)


def send_test_message(server, channel: str, to: str, text: str) -> str:
    answer = admin("POST", f"{server.url}/api/v1/channels/{channel}/test-messages", {"to": to, "text": text})
    assert answer.status == 202, answer.text
    return answer.json()["id"]


def wait_for_attempt(server, message_id: str, timeout: float = 10.0) -> dict:
    """The message view once its first step has an attempt."""
    deadline = time.monotonic() + timeout
    while True:
        answer = admin("GET", f"{server.url}/api/v1/messages/{message_id}")
        assert answer.status == 200, answer.text
        view = answer.json()
        if view["steps"] and view["steps"][0]["attempts"]:
            return view
        assert time.monotonic() < deadline, f"no attempt yet: {view}"
        time.sleep(0.05)


def wait_for_state(server, message_id: str, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = admin("GET", f"{server.url}/api/v1/messages/{message_id}").json()
        if view["state"] == state:
            return view
        assert time.monotonic() < deadline, f"message never became {state}: {view}"
        time.sleep(0.05)


def test_the_feishu_bot_signature_passes_the_published_algorithm(qunfa, providers):
    verdicts: list[bool] = []
    feishu = providers(feishu_bot(BOT_SECRET, verdicts))
    server = qunfa(bot_rules(feishu.url), {"FS_HOOK": HOOK_TOKEN, "FS_SIGN": BOT_SECRET, "QUNFA_ADMIN_TOKEN": ADMIN})
    message_id = send_test_message(server, "feishu-ops", "ou_84aad35d084aa403a838cf73ee18467", "部署完成")
    path, headers, body = feishu.wait_for()[0]
    request = json.loads(body)
    assert verdicts == [True]
    # Seconds, not DingTalk's milliseconds.
    assert len(request["timestamp"]) == 10
    assert request["msg_type"] == "text"
    assert request["content"]["text"] == '<at user_id="ou_84aad35d084aa403a838cf73ee18467"></at> 部署完成'
    assert headers["content-type"].startswith("application/json")
    wait_for_state(server, message_id, "delivered")


def test_a_wrong_feishu_secret_fails_the_step_as_account_disabled(qunfa, providers):
    verdicts: list[bool] = []
    feishu = providers(feishu_bot(BOT_SECRET, verdicts))
    server = qunfa(bot_rules(feishu.url), {"FS_HOOK": HOOK_TOKEN, "FS_SIGN": "rotated-secret", "QUNFA_ADMIN_TOKEN": ADMIN})
    message_id = send_test_message(server, "feishu-ops", "", "hello")
    view = wait_for_attempt(server, message_id)
    assert verdicts[0] is False
    attempt = view["steps"][0]["attempts"][0]
    assert attempt["outcome"] == "account_disabled"
    assert "19021" in attempt["detail"]
    assert HOOK_TOKEN not in json.dumps(view)


def test_feishu_9499_is_rate_limiting_never_delivery(qunfa, providers):
    feishu = providers(lambda path, headers, body: as_json(200, {"code": 9499, "msg": "too many request", "data": {}}))
    server = qunfa(bot_rules(feishu.url), {"FS_HOOK": HOOK_TOKEN, "FS_SIGN": BOT_SECRET, "QUNFA_ADMIN_TOKEN": ADMIN})
    message_id = send_test_message(server, "feishu-ops", "", "burst")
    view = wait_for_attempt(server, message_id)
    assert view["steps"][0]["attempts"][0]["outcome"] == "rate_limited"
    assert view["state"] != "delivered"


def feishu_tenant(seen: dict):
    """A Feishu tenant: the internal tenant token, then im/v1/messages with it."""

    def respond(path, headers, body):
        request = json.loads(body)
        if path == "/open-apis/auth/v3/tenant_access_token/internal":
            if request != {"app_id": APP_ID, "app_secret": APP_SECRET}:
                return as_json(400, {"code": 10014, "msg": "app secret invalid"})
            return as_json(200, {"code": 0, "msg": "ok", "tenant_access_token": "t-g1044ghJRUIJJ5ELSOMEFAKE", "expire": 7200})
        if headers.get("authorization") != "Bearer t-g1044ghJRUIJJ5ELSOMEFAKE":
            return as_json(401, {"code": 99991663, "msg": "Invalid access token for authorization."})
        if path != "/open-apis/im/v1/messages?receive_id_type=open_id" or len(request.get("uuid", "")) > 50:
            return as_json(400, {"code": 230001, "msg": "Your request contains an invalid request parameter"})
        seen.update(request)
        return as_json(200, {"code": 0, "msg": "success", "data": {"message_id": "om_dc13264520392913993dd051dba21dcf"}})

    return respond


def test_the_feishu_app_sends_a_post_with_a_tenant_token_and_uuid(qunfa, providers):
    seen: dict = {}
    feishu = providers(feishu_tenant(seen))
    server = qunfa(
        f"""
[delivery]
poll_interval = "50ms"

[[channel]]
id = "feishu-app"
kind = "feishu_app"
app_id = "{APP_ID}"
app_secret_env = "FS_APP_SECRET"
base_url = "{feishu.url}"
""",
        {"FS_APP_SECRET": APP_SECRET, "QUNFA_ADMIN_TOKEN": ADMIN},
    )
    answer = admin("POST", f"{server.url}/api/v1/messages", {
        "recipient": {"feishu_open_id": "ou_84aad35d084aa403a838cf73ee18467"},
        "route": ["feishu-app"],
        "content": {"format": "markdown", "title": "双十一", "text": "**Big** sale: [open](https://x.example/s)"},
    })
    assert answer.status == 202, answer.text
    wait_for_state(server, answer.json()["id"], "delivered")
    assert seen["receive_id"] == "ou_84aad35d084aa403a838cf73ee18467"
    assert seen["msg_type"] == "post"
    content = json.loads(seen["content"])
    assert content == {"zh_cn": {"title": "双十一", "content": [[
        {"tag": "text", "text": "Big sale: "},
        {"tag": "a", "text": "open", "href": "https://x.example/s"},
    ]]}}
    assert seen["uuid"].startswith("qunfa-")


def test_slack_bot_blocks_pass_slack_sdks_models(qunfa, providers):
    posted: list[dict] = []

    def respond(path, headers, body):
        if headers.get("authorization") != f"Bearer {SLACK_TOKEN}":
            return as_json(200, {"ok": False, "error": "invalid_auth"})
        if path != "/api/chat.postMessage":
            return as_json(404, {"ok": False, "error": "unknown_method"})
        request = json.loads(body)
        posted.append(request)
        return as_json(200, {"ok": True, "channel": request["channel"], "ts": "1503435956.000247"})

    slack = providers(respond)
    server = qunfa(
        f"""
[delivery]
poll_interval = "50ms"

[[channel]]
id = "slack-bot"
kind = "slack"
bot_token_env = "SLACK_BOT_TOKEN"
base_url = "{slack.url}/api"
""",
        {"SLACK_BOT_TOKEN": SLACK_TOKEN, "QUNFA_ADMIN_TOKEN": ADMIN},
    )
    answer = admin("POST", f"{server.url}/api/v1/messages", {
        "recipient": {"slack_user": "U024BE7LH"},
        "route": ["slack-bot"],
        "content": {
            "format": "card",
            "title": "Release 2.0",
            "text": "**Ready** for <review> & [notes](https://x.example/n)",
            "buttons": [{"text": "Approve", "url": "https://x.example/a"}],
        },
    })
    assert answer.status == 202, answer.text
    wait_for_state(server, answer.json()["id"], "delivered")
    request = posted[0]
    assert request["channel"] == "U024BE7LH"
    blocks = Block.parse_all(request["blocks"])
    for block in blocks:
        block.validate_json()
    assert [block.to_dict() for block in blocks] == request["blocks"]
    assert [block.type for block in blocks] == ["header", "section", "actions"]
    assert request["blocks"][1]["text"]["text"] == "*Ready* for &lt;review&gt; &amp; <https://x.example/n|notes>"


def test_a_slack_incoming_webhook_mentions_the_recipient(qunfa, providers):
    def respond(path, headers, body):
        if path != HOOK_PATH:
            return 404, "text/plain", b"no_service"
        if "text" not in json.loads(body):
            return 400, "text/plain", b"invalid_payload"
        return 200, "text/plain", b"ok"

    slack = providers(respond)
    server = qunfa(
        """
[delivery]
poll_interval = "50ms"

[[channel]]
id = "slack-hook"
kind = "slack"
webhook_url_env = "SLACK_HOOK_URL"
""",
        {"SLACK_HOOK_URL": slack.url + HOOK_PATH, "QUNFA_ADMIN_TOKEN": ADMIN},
    )
    message_id = send_test_message(server, "slack-hook", "U024BE7LH", "disk at 91%")
    wait_for_state(server, message_id, "delivered")
    path, headers, body = slack.calls[0]
    assert json.loads(body) == {"text": "<@U024BE7LH> disk at 91%"}
    assert "authorization" not in headers

"""Outbound DingTalk through a running `qunfa serve`, triggered with the admin API's test
messages.

The custom-robot stand-in checks our `timestamp`/`sign` query the way DingTalk does, with
the signature computed by the PyPI `DingtalkChatbot` client (the reference signer named in
peer_sdks.md: `update_webhook()` with `start_time` pinned to our timestamp) and, as a second
opinion, by DingTalk's documented recipe with hmac/hashlib. The app stand-in serves both
DingTalk hosts (`oapi` and `api`) on one port, as `base_url` promises, and checks tokens and
body shapes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from dingtalkchatbot.chatbot import DingtalkChatbot

from conftest import http

ADMIN = "interop-admin-token"
ROBOT_TOKEN = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
ROBOT_SECRET = "SEC" + "3f" * 32
APP_KEY = "dingappkey"
APP_SECRET = "interop-app-secret"
TASK_ID = 256271667526
QUERY_KEY = "Ah0Xqb+fZyPHx3GAi2LjTkZxR2UL2yYqCuOSTzQOH8s="


@dataclass
class Call:
    method: str
    path: str
    query: dict
    raw_query: str
    headers: dict
    body: dict


@dataclass
class DingTalk:
    """One port standing in for oapi.dingtalk.com and api.dingtalk.com."""

    url: str = ""
    calls: list = field(default_factory=list)
    refusals: list = field(default_factory=list)
    legacy_token: str = "legacy-token-1"
    v1_token: str = "v1-token-1"
    send_result: dict = field(default_factory=dict)

    def wait_for(self, path: str, timeout: float = 15.0) -> Call:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.calls:
                if call.path == path:
                    return call
            time.sleep(0.02)
        pytest.fail(f"no call to {path}; calls: {[c.path for c in self.calls]}; refusals: {self.refusals}")

    # ---- what DingTalk answers ----------------------------------------------------------

    def answer(self, call: Call) -> tuple[int, dict]:
        handlers = {
            "/robot/send": self.robot_send,
            "/gettoken": self.gettoken,
            "/topapi/message/corpconversation/asyncsend_v2": self.asyncsend,
            "/topapi/message/corpconversation/getsendresult": self.getsendresult,
            "/v1.0/oauth2/accessToken": self.access_token,
            "/v1.0/robot/oToMessages/batchSend": self.batch_send,
        }
        handler = handlers.get(call.path)
        if handler is None:
            return 404, {"errcode": 404, "errmsg": "not found"}
        return handler(call)

    def refuse(self, reason: str, status: int, body: dict) -> tuple[int, dict]:
        self.refusals.append(reason)
        return status, body

    def robot_send(self, call: Call) -> tuple[int, dict]:
        if call.query.get("access_token") != ROBOT_TOKEN:
            return self.refuse("token", 200, {"errcode": 300005, "errmsg": "token is not exist"})
        timestamp = call.query.get("timestamp", "")
        if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000:
            return self.refuse("timestamp", 200, {"errcode": 310000, "errmsg": "invalid timestamp"})
        # The reference client signs the same timestamp; its webhook then ends in
        # `&timestamp=…&sign=<quote_plus(base64)>`, which must equal ours byte for byte.
        reference = DingtalkChatbot(
            f"{self.url}/robot/send?access_token={ROBOT_TOKEN}", secret=ROBOT_SECRET
        )
        reference.start_time = int(timestamp) / 1000
        reference.update_webhook()
        expected_raw = reference.webhook.split("&sign=", 1)[1]
        ours_raw = call.raw_query.split("&sign=", 1)[1] if "&sign=" in call.raw_query else ""
        documented = base64.b64encode(
            hmac.new(ROBOT_SECRET.encode(), f"{timestamp}\n{ROBOT_SECRET}".encode(), hashlib.sha256).digest()
        ).decode()
        if ours_raw != expected_raw or call.query.get("sign") != documented:
            return self.refuse("sign", 200, {"errcode": 310000, "errmsg": "sign not match"})
        content = json.dumps(call.body, ensure_ascii=False)
        if "通知" not in content:
            return self.refuse("keyword", 200, {"errcode": 310000, "errmsg": "keywords not in content"})
        return 200, {"errcode": 0, "errmsg": "ok"}

    def gettoken(self, call: Call) -> tuple[int, dict]:
        if call.query.get("appkey") != APP_KEY or call.query.get("appsecret") != APP_SECRET:
            return self.refuse("appsecret", 200, {"errcode": 40089, "errmsg": "不合法的appKey或appSecret"})
        return 200, {"errcode": 0, "errmsg": "ok", "access_token": self.legacy_token, "expires_in": 7200}

    def asyncsend(self, call: Call) -> tuple[int, dict]:
        if call.query.get("access_token") != self.legacy_token:
            return self.refuse("legacy token", 200, {"errcode": 42001, "errmsg": "access_token超时"})
        msg = call.body.get("msg", {})
        if call.body.get("agent_id") != 123456789 or msg.get("msgtype") != "text" or not msg["text"]["content"]:
            return self.refuse("asyncsend body", 200, {"errcode": 40035, "errmsg": "缺少参数"})
        return 200, {"errcode": 0, "errmsg": "ok", "task_id": TASK_ID, "request_id": "4jzllmte0wau"}

    def getsendresult(self, call: Call) -> tuple[int, dict]:
        if call.query.get("access_token") != self.legacy_token or call.body.get("task_id") != TASK_ID:
            return self.refuse("getsendresult", 200, {"errcode": 40035, "errmsg": "缺少参数"})
        return 200, {"errcode": 0, "errmsg": "ok", "send_result": self.send_result}

    def access_token(self, call: Call) -> tuple[int, dict]:
        if call.body != {"appKey": APP_KEY, "appSecret": APP_SECRET}:
            return self.refuse("accessToken", 400, {"code": "invalidClientIdOrSecret", "message": "bad"})
        return 200, {"accessToken": self.v1_token, "expireIn": 7200}

    def batch_send(self, call: Call) -> tuple[int, dict]:
        if call.headers.get("x-acs-dingtalk-access-token") != self.v1_token:
            return self.refuse("v1 token", 401, {"code": "InvalidAuthentication", "message": "不合法的access_token"})
        body = call.body
        param = json.loads(body.get("msgParam", "null")) if isinstance(body.get("msgParam"), str) else None
        if body.get("robotCode") != "dingrobot" or body.get("msgKey") != "sampleText" or not param:
            return self.refuse("batchSend body", 400, {"code": "invalidParameter.msgParam.invalid", "message": "x"})
        return 200, {"processQueryKey": QUERY_KEY, "invalidStaffIdList": [], "flowControlledStaffIdList": []}


@pytest.fixture
def dingtalk():
    api = DingTalk()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"unparsable": raw.decode("utf-8", "replace")}
            call = Call(
                self.command,
                parts.path,
                {k: v[0] for k, v in parse_qs(parts.query).items()},
                parts.query,
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            api.calls.append(call)
            status, answer = api.answer(call)
            payload = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield api
    server.shutdown()


def send_test(server, channel: str, to: str, text: str):
    return http(
        "POST",
        f"{server.url}/api/v1/channels/{channel}/test-messages",
        json.dumps({"to": to, "text": text}).encode(),
        {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )


def wait_for_state(server, message_id: str, wanted: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        answer = http("GET", f"{server.url}/api/v1/messages/{message_id}", headers={"authorization": f"Bearer {ADMIN}"})
        if answer.status == 200:
            body = answer.json()
            if body.get("state") == wanted:
                return body
        time.sleep(0.05)
    pytest.fail(f"message {message_id} never reached {wanted}: {body}")


def robot_rules(base_url: str) -> str:
    return f"""
[[channel]]
id = "ops-group"
kind = "dingtalk_robot"
access_token_env = "QUNFA_IT_DING_ROBOT_TOKEN"
secret_env = "QUNFA_IT_DING_ROBOT_SECRET"
keyword = "通知"
base_url = "{base_url}"
"""


ROBOT_ENV = {
    "QUNFA_ADMIN_TOKEN": ADMIN,
    "QUNFA_IT_DING_ROBOT_TOKEN": ROBOT_TOKEN,
    "QUNFA_IT_DING_ROBOT_SECRET": ROBOT_SECRET,
}


def test_the_robot_signature_matches_the_reference_client(qunfa, dingtalk):
    server = qunfa(robot_rules(dingtalk.url), ROBOT_ENV)
    accepted = send_test(server, "ops-group", "user123", "上线通知: 今晚十点")
    assert accepted.status == 202, accepted.text
    call = dingtalk.wait_for("/robot/send")
    assert dingtalk.refusals == []
    assert call.headers["content-type"].startswith("application/json")
    assert call.body["msgtype"] == "text"
    assert call.body["text"]["content"] == "上线通知: 今晚十点 @user123"
    assert call.body["at"]["atUserIds"] == ["user123"]
    wait_for_state(server, accepted.json()["id"], "delivered")
    # The access token and secret never reach the log.
    assert ROBOT_TOKEN not in server.log() and ROBOT_SECRET not in server.log()


def test_a_message_without_the_keyword_is_refused_before_dingtalk_sees_it(qunfa, dingtalk):
    server = qunfa(robot_rules(dingtalk.url), ROBOT_ENV)
    refused = send_test(server, "ops-group", "user123", "没有关键词")
    assert refused.status == 422, refused.text
    assert "通知" in refused.text
    time.sleep(1)
    assert [c for c in dingtalk.calls if c.path == "/robot/send"] == []


APP_ENV = {"QUNFA_ADMIN_TOKEN": ADMIN, "QUNFA_IT_DING_APP_SECRET": APP_SECRET}


def test_a_work_notification_uses_the_oapi_token_and_reads_the_task_back(qunfa, dingtalk):
    dingtalk.send_result = {"unread_user_id_list": ["manager4220"]}
    server = qunfa(
        f"""
[[channel]]
id = "ding-work"
kind = "dingtalk_app"
app_key = "{APP_KEY}"
app_secret_env = "QUNFA_IT_DING_APP_SECRET"
agent_id = 123456789
base_url = "{dingtalk.url}"
""",
        APP_ENV,
    )
    accepted = send_test(server, "ding-work", "manager4220", "工作通知")
    assert accepted.status == 202, accepted.text
    sent = dingtalk.wait_for("/topapi/message/corpconversation/asyncsend_v2")
    assert sent.body["userid_list"] == "manager4220"
    dingtalk.wait_for("/topapi/message/corpconversation/getsendresult")
    assert dingtalk.refusals == []
    wait_for_state(server, accepted.json()["id"], "delivered")
    assert APP_SECRET not in server.log()


def test_a_filtered_work_notification_is_not_delivered(qunfa, dingtalk):
    dingtalk.send_result = {
        "forbidden_list": [{"code": "143106", "count": 1, "userid": "manager4220"}],
        "forbidden_user_id_list": ["manager4220"],
    }
    server = qunfa(
        f"""
[[channel]]
id = "ding-work"
kind = "dingtalk_app"
app_key = "{APP_KEY}"
app_secret_env = "QUNFA_IT_DING_APP_SECRET"
agent_id = "123456789"
base_url = "{dingtalk.url}"
""",
        APP_ENV,
    )
    accepted = send_test(server, "ding-work", "manager4220", "重复的工作通知")
    assert accepted.status == 202, accepted.text
    dingtalk.wait_for("/topapi/message/corpconversation/getsendresult")
    time.sleep(1)
    answer = http("GET", f"{server.url}/api/v1/messages/{accepted.json()['id']}", headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.status == 200, answer.text
    assert answer.json()["state"] != "delivered"


def test_a_robot_message_uses_the_v1_token_header(qunfa, dingtalk):
    server = qunfa(
        f"""
[[channel]]
id = "ding-robot"
kind = "dingtalk_app"
app_key = "{APP_KEY}"
app_secret_env = "QUNFA_IT_DING_APP_SECRET"
robot_code = "dingrobot"
base_url = "{dingtalk.url}"
""",
        APP_ENV,
    )
    accepted = send_test(server, "ding-robot", "manager4220", "机器人单聊")
    assert accepted.status == 202, accepted.text
    sent = dingtalk.wait_for("/v1.0/robot/oToMessages/batchSend")
    assert sent.body["userIds"] == ["manager4220"]
    assert json.loads(sent.body["msgParam"]) == {"content": "机器人单聊"}
    assert dingtalk.refusals == []
    wait_for_state(server, accepted.json()["id"], "delivered")

"""Outbound WeCom robot, WeCom app and WeChat Official Account channels of a running
`qunfa serve`, against a stand-in for Tencent's APIs that checks what the real ones check
(robot key, corp id + secret, access tokens, agent id, body shapes) and answers with their
documented bodies. wechatpy 1.8.18 (the most used Python SDK for both platforms) is the
reference: it fetches tokens from the same stand-in (so the stand-in answers the way the SDK
expects Tencent to), and the body it sends for the same message is compared with qunfa's.

Sends are triggered through `POST /api/v1/channels/{id}/test-messages` (admin token from
QUNFA_ADMIN_TOKEN) and go through the outbox like any other message."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from wechatpy import WeChatClient
from wechatpy.enterprise import WeChatClient as WeComClient

from conftest import http

ADMIN = "interop-admin-token"
ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
CORP_ID = "ww1234567890abcdef"
APP_SECRET = "wecom-app-secret"
AGENT_ID = 1000002
OA_APP_ID = "wx0123456789abcdef"
OA_SECRET = "wechat-oa-secret"
MEMBERS = {"zhangsan", "lisi"}
FOLLOWERS = ["oR5Gjjl_eiZoUpGozMo7dbBJ362A", "oR5Gjjl_eiZoUpGozMo7dbBJ362B"]


@dataclass
class Tencent:
    """qyapi.weixin.qq.com and api.weixin.qq.com in one server, as far as these calls go."""

    url: str = ""
    calls: list = field(default_factory=list)
    wecom_tokens: int = 0
    wecom_token: str | None = None
    expire_next_send: int = 0
    oa_token: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, query: dict, body: dict | None) -> dict:
        with self.lock:
            self.calls.append((method, path, query, body))
            if path == "/cgi-bin/webhook/send":
                if query.get("key") != ROBOT_KEY:
                    return {"errcode": 93000, "errmsg": "invalid webhook url"}
                if body.get("msgtype") not in ("text", "markdown", "news", "template_card"):
                    return {"errcode": 40008, "errmsg": "invalid message type"}
                return {"errcode": 0, "errmsg": "ok"}
            if path == "/cgi-bin/gettoken":
                if query.get("corpid") != CORP_ID or query.get("corpsecret") != APP_SECRET:
                    return {"errcode": 40001, "errmsg": "invalid credential"}
                self.wecom_tokens += 1
                self.wecom_token = f"wecom-token-{self.wecom_tokens}"
                return {"errcode": 0, "errmsg": "ok", "access_token": self.wecom_token, "expires_in": 7200}
            if path == "/cgi-bin/message/send":
                if query.get("access_token") != self.wecom_token:
                    return {"errcode": 40014, "errmsg": "invalid access_token"}
                if self.expire_next_send:
                    self.expire_next_send -= 1
                    return {"errcode": 42001, "errmsg": "access_token expired"}
                if body.get("agentid") != AGENT_ID:
                    return {"errcode": 40056, "errmsg": "invalid agentid"}
                users = body.get("touser", "").split("|")
                invalid = [u.lower() for u in users if u not in MEMBERS]
                if len(invalid) == len(users):
                    return {"errcode": 81013, "errmsg": "user & party & tag all invalid"}
                return {"errcode": 0, "errmsg": "ok", "invaliduser": "|".join(invalid),
                        "invalidparty": "", "invalidtag": "", "unlicenseduser": "",
                        "msgid": f"msg-{len(self.calls)}"}
            if path in ("/cgi-bin/stable_token", "/cgi-bin/token"):
                appid = (body or {}).get("appid") or query.get("appid")
                secret = (body or {}).get("secret") or query.get("secret")
                if appid != OA_APP_ID or secret != OA_SECRET:
                    return {"errcode": 40125, "errmsg": "invalid appsecret"}
                self.oa_token = self.oa_token or "oa-token-1"
                return {"access_token": self.oa_token, "expires_in": 7200}
            if path.startswith("/cgi-bin/message/"):
                if query.get("access_token") != self.oa_token:
                    return {"errcode": 40001, "errmsg": "invalid credential"}
                if path.endswith("/mass/send"):
                    touser = body.get("touser")
                    if not isinstance(touser, list) or not 2 <= len(touser) <= 10000:
                        return {"errcode": 40130, "errmsg": "invalid openid list size"}
                    return {"errcode": 0, "errmsg": "send job submission success",
                            "msg_id": 34182, "msg_data_id": 206227730}
                return {"errcode": 0, "errmsg": "ok", "msgid": 200228332}
            return {"errcode": 40008, "errmsg": f"unknown path {path}"}

    def bodies(self, path: str) -> list[dict]:
        with self.lock:
            return [body for (_, p, _, body) in self.calls if p == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.bodies(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        pytest.fail(f"no {count} call(s) to {path} within {timeout}s; calls: {[c[1] for c in self.calls]}")


@pytest.fixture
def tencent():
    fake = Tencent()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            payload = json.dumps(fake.answer(self.command, parts.path, query, body)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake
    server.shutdown()


def rules(base_url: str) -> str:
    return f"""
[[channel]]
id = "ops-robot"
kind = "wecom_robot"
key_env = "QUNFA_ROBOT_KEY"
base_url = "{base_url}"

[[channel]]
id = "wecom-app"
kind = "wecom_app"
corp_id = "{CORP_ID}"
agent_id = {AGENT_ID}
secret_env = "QUNFA_APP_SECRET"
base_url = "{base_url}"

[[channel]]
id = "wechat-mass"
kind = "wechat_oa"
app_id = "{OA_APP_ID}"
app_secret_env = "QUNFA_OA_SECRET"
mode = "mass"
base_url = "{base_url}"

[[channel]]
id = "qq"
kind = "qq"
app_id = "102030"
app_secret_env = "QUNFA_QQ_SECRET"
"""


ENV = {
    "QUNFA_ADMIN_TOKEN": ADMIN,
    "QUNFA_ROBOT_KEY": ROBOT_KEY,
    "QUNFA_APP_SECRET": APP_SECRET,
    "QUNFA_OA_SECRET": OA_SECRET,
    "QUNFA_QQ_SECRET": "unused",
}


def queue_test_message(server, channel: str, to: str, text: str):
    return http(
        "POST",
        f"{server.url}/api/v1/channels/{channel}/test-messages",
        json.dumps({"to": to, "text": text}).encode(),
        {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )


def delivered_attempt(server, timeout: float = 15.0) -> tuple:
    """(provider_ref, detail) of the first delivered attempt, once the outbox recorded it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.rows("SELECT provider_ref, detail FROM delivery_attempts WHERE outcome = 'delivered'")
        if rows:
            return rows[0]
        time.sleep(0.05)
    pytest.fail(f"no delivered attempt: {server.rows('SELECT outcome, detail FROM delivery_attempts')}")


def test_robot_posts_with_its_key_and_mentions_the_recipient(qunfa, tencent):
    server = qunfa(rules(tencent.url), ENV)
    sent = queue_test_message(server, "ops-robot", "zhangsan", "部署完成")
    assert sent.status == 202, sent.text
    (body,) = tencent.wait_for("/cgi-bin/webhook/send")
    assert body == {"msgtype": "text", "text": {"content": "部署完成", "mentioned_list": ["zhangsan"]}}
    _, detail = delivered_attempt(server)
    assert ROBOT_KEY not in server.log() and ROBOT_KEY not in detail


def test_app_message_matches_wechatpy_and_survives_a_token_expiry(qunfa, tencent):
    # The reference: wechatpy fetches its own token from the stand-in and sends the same text.
    sdk = WeComClient(CORP_ID, APP_SECRET)
    sdk.API_BASE_URL = f"{tencent.url}/cgi-bin/"
    # wechatpy hard-codes the token host; its own fetch-and-check runs against the stand-in.
    sdk._fetch_access_token(f"{tencent.url}/cgi-bin/gettoken", {"corpid": CORP_ID, "corpsecret": APP_SECRET})
    sdk.message.send_text(AGENT_ID, ["zhangsan"], "会议改到三点")
    reference = tencent.wait_for("/cgi-bin/message/send")[0]

    server = qunfa(rules(tencent.url), ENV)
    tencent.expire_next_send = 1
    tokens_before = tencent.wecom_tokens
    sent = queue_test_message(server, "wecom-app", "zhangsan", "会议改到三点")
    assert sent.status == 202, sent.text
    ours = tencent.wait_for("/cgi-bin/message/send", count=3)[-1]
    shared = {"touser", "msgtype", "agentid", "text"}
    assert {k: ours[k] for k in shared} == {k: reference[k] for k in shared}
    assert ours["enable_duplicate_check"] == 1 and ours["duplicate_check_interval"] == 1800
    # One token for the refused send, one more after the 42001, and the call retried once.
    assert tencent.wecom_tokens - tokens_before == 2
    provider_ref, _ = delivered_attempt(server)
    assert provider_ref and provider_ref.startswith("msg-")
    assert APP_SECRET not in server.log()


def test_mass_send_matches_wechatpy_with_a_clientmsgid(qunfa, tencent):
    sdk = WeChatClient(OA_APP_ID, OA_SECRET)
    sdk.API_BASE_URL = f"{tencent.url}/cgi-bin/"
    sdk._fetch_access_token(
        f"{tencent.url}/cgi-bin/token",
        {"grant_type": "client_credential", "appid": OA_APP_ID, "secret": OA_SECRET},
    )
    sdk.message.send_mass_text(FOLLOWERS, "春季特卖", client_msg_id="reference")
    reference = tencent.wait_for("/cgi-bin/message/mass/send")[0]

    server = qunfa(rules(tencent.url), ENV)
    sent = queue_test_message(server, "wechat-mass", FOLLOWERS[0], "春季特卖")
    assert sent.status == 202, sent.text
    ours = tencent.wait_for("/cgi-bin/message/mass/send", count=2)[-1]
    assert ours["msgtype"] == reference["msgtype"] == "text"
    assert ours["text"] == reference["text"]
    assert isinstance(ours["touser"], list) and FOLLOWERS[0] in ours["touser"]
    assert len(ours["clientmsgid"]) == 64
    assert [b for b in tencent.bodies("/cgi-bin/stable_token") if b["appid"] == OA_APP_ID]
    provider_ref, _ = delivered_attempt(server)
    assert provider_ref == "34182"
    assert OA_SECRET not in server.log()


def test_qq_is_refused_as_a_reply_path_only(qunfa, tencent):
    server = qunfa(rules(tencent.url), ENV)
    refused = queue_test_message(server, "qq", "openid", "hello")
    assert refused.status == 422, refused.text
    assert "reply path only" in refused.text

"""WeCom self-built app and intelligent robot against a running qunfa, with wechatpy 1.8.18
(`wechatpy.enterprise.crypto`) acting as WeCom: it encrypts and signs the callbacks, and it
decrypts and verifies qunfa's passive replies exactly as WeCom would."""

import base64
import json
import time
import xml.etree.ElementTree as ET
from urllib.parse import quote

from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.utils import WeChatSigner

TOKEN = "interopToken42"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
CORP_ID = "ww1234567890abcdef"
AGENT_ID = "1000002"
ENV = {"WECOM_TOKEN": TOKEN, "WECOM_AES_KEY": AES_KEY}

RULES = f"""
[[inbound]]
id = "wecom-app"
platform = "wecom_app"
token_env = "WECOM_TOKEN"
aes_key_env = "WECOM_AES_KEY"
corp_id = "{CORP_ID}"
agent_id = "{AGENT_ID}"

[[inbound]]
id = "wecom-bot"
platform = "wecom_aibot"
token_env = "WECOM_TOKEN"
aes_key_env = "WECOM_AES_KEY"

[[operator]]
platform = "wecom_app"
user = "zhangsan"
role = "admin"

[[operator]]
platform = "wecom_aibot"
user = "zhangsan"
role = "operator"
"""


def sign(*values: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*values)
    return signer.signature


def sealed(crypto: WeChatCrypto, plaintext: str, nonce: str, timestamp: int | None = None):
    """(query, Encrypt) of a callback as WeCom sends it."""
    timestamp = str(timestamp if timestamp is not None else int(time.time()))
    envelope = ET.fromstring(crypto.encrypt_message(plaintext, nonce, timestamp))
    encrypt = envelope.findtext("Encrypt")
    query = f"msg_signature={envelope.findtext('MsgSignature')}&timestamp={timestamp}&nonce={nonce}"
    return query, encrypt


def app_message(msg_id: str, text: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
    )


def app_body(encrypt: str) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
        f"<AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>"
    ).encode()


def test_app_url_verification_decrypts_echostr(qunfa):
    server = qunfa(RULES, ENV)
    key = base64.b64decode(AES_KEY + "=")
    echostr = PrpCrypto(key).encrypt("5927782489442352469", CORP_ID).decode()
    timestamp, nonce = str(int(time.time())), "1372623149"
    signature = sign(TOKEN, timestamp, nonce, echostr)
    query = f"msg_signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr={quote(echostr, safe='')}"
    answer = server.get("wecom-app", query)
    assert answer.status == 200
    assert answer.body == b"5927782489442352469"
    forged = server.get("wecom-app", query.replace(f"msg_signature={signature}", "msg_signature=" + "0" * 40))
    assert forged.status == 401


def test_app_command_is_answered_with_a_passive_reply_wecom_can_open(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    query, encrypt = sealed(crypto, app_message("7300000000000000001", "/whoami"), "987654321")
    answer = server.post("wecom-app", app_body(encrypt), {"content-type": "text/xml"}, query)
    assert answer.status == 200, answer.text
    reply = ET.fromstring(answer.body)
    plaintext = crypto.decrypt_message(
        answer.text, reply.findtext("MsgSignature"), reply.findtext("TimeStamp"), reply.findtext("Nonce")
    )
    message = ET.fromstring(plaintext)
    assert message.findtext("ToUserName") == "zhangsan"
    assert message.findtext("MsgType") == "text"
    assert "wecom_app" in message.findtext("Content")
    assert "admin" in message.findtext("Content")

    # WeCom's retry of the same callback: acknowledged, never run twice.
    again = server.post("wecom-app", app_body(encrypt), {"content-type": "text/xml"}, query)
    assert (again.status, again.body) == (200, b"")
    assert server.settled_audit() == [("wecom_app", "wecom-app", "zhangsan", "whoami", "ok")]


def test_app_refuses_forged_stale_and_malformed_callbacks(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    impostor = WeChatCrypto("wrongToken", AES_KEY, CORP_ID)
    query, encrypt = sealed(impostor, app_message("1", "/whoami"), "1")
    assert server.post("wecom-app", app_body(encrypt), {}, query).status == 401
    query, encrypt = sealed(crypto, app_message("2", "/whoami"), "2", int(time.time()) - 3600)
    stale = server.post("wecom-app", app_body(encrypt), {}, query)
    assert stale.status == 401
    assert stale.json()["error"]["code"] == "stale"
    query, _ = sealed(crypto, app_message("3", "/whoami"), "3")
    assert server.post("wecom-app", b"<xml><ToUserName>x</ToUserName></xml>", {}, query).status == 400
    assert server.audit() == []


def test_robot_mention_is_answered_through_response_url(qunfa, mock_api):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, "")  # the robot's receive id is empty
    callback = {
        "msgid": "CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=",
        "aibotid": "AIBOTID",
        "chatid": "wrkSFfCgAAxxxx",
        "chattype": "group",
        "from": {"userid": "zhangsan"},
        "response_url": f"{mock_api.url}/cgi-bin/aibot/response?response_code=RESPONSECODE",
        "msgtype": "text",
        "text": {"content": "@RobotA /whoami"},
    }
    query, encrypt = sealed(crypto, json.dumps(callback), "1372623149")
    body = json.dumps({"encrypt": encrypt}).encode()
    answer = server.post("wecom-bot", body, {"content-type": "application/json"}, query)
    assert (answer.status, answer.body) == (200, b"")
    [reply] = mock_api.wait_for("/cgi-bin/aibot/response")
    assert reply.json()["msgtype"] == "markdown"
    content = reply.json()["markdown"]["content"]
    assert "wecom_aibot" in content and "operator" in content

    assert server.post("wecom-bot", body, {"content-type": "application/json"}, query).status == 200
    time.sleep(0.5)  # bounded: gives a wrongly repeated reply the time to show up
    assert len([c for c in mock_api.calls if c.path.startswith("/cgi-bin/aibot/response")]) == 1
    assert server.audit_when(1) == [("wecom_aibot", "wecom-bot", "zhangsan", "whoami", "ok")]

    forged = query.replace("nonce=1372623149", "nonce=1")
    assert server.post("wecom-bot", body, {}, forged).status == 401
    stale_query, stale = sealed(crypto, json.dumps(callback), "5", int(time.time()) - 3600)
    assert server.post("wecom-bot", json.dumps({"encrypt": stale}).encode(), {}, stale_query).status == 401
    assert server.post("wecom-bot", b"not json", {}, query).status == 400


def test_robot_card_click_is_recorded_once(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, "")
    click = {
        "msgid": "ev-1",
        "chatid": "wrkSFfCgAAxxxx",
        "chattype": "group",
        "from": {"userid": "lisi"},
        "msgtype": "event",
        "event": {
            "eventtype": "template_card_event",
            "template_card_event": {"card_type": "button_interaction", "event_key": "ok", "task_id": "camp-42"},
        },
    }
    for nonce in ("11", "12"):
        query, encrypt = sealed(crypto, json.dumps(click), nonce)
        answer = server.post("wecom-bot", json.dumps({"encrypt": encrypt}).encode(), {}, query)
        assert answer.status == 200
    [(platform, account, kind, event_id, payload)] = server.platform_events()
    assert (platform, account, kind, event_id) == ("wecom_aibot", "wecom-bot", "wecom_aibot.template_card_clicked", "ev-1")
    assert json.loads(payload)["task_id"] == "camp-42"


def test_app_card_click_is_recorded_once(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    click = (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[ack]]></EventKey>"
        "<TaskId><![CDATA[camp42-u17]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>"
        f"<ResponseCode><![CDATA[RC-1]]></ResponseCode><AgentID>{AGENT_ID}</AgentID></xml>"
    )
    for nonce in ("31", "32"):
        query, encrypt = sealed(crypto, click, nonce)
        answer = server.post("wecom-app", app_body(encrypt), {}, query)
        assert (answer.status, answer.body) == (200, b"")
    [(platform, account, kind, event_id, payload)] = server.platform_events()
    assert (platform, account, kind, event_id) == ("wecom_app", "wecom-app", "wecom_app.template_card_clicked", "card:RC-1")
    assert json.loads(payload)["task_id"] == "camp42-u17"
    assert server.audit() == []

"""WeChat Official Account against a running qunfa, with wechatpy 1.8.18 acting as WeChat:
`wechatpy.utils.WeChatSigner` signs the plain query, `wechatpy.crypto.WeChatCrypto` seals
safe-mode callbacks and opens qunfa's sealed replies, `wechatpy.parse_message` reads plain
replies, exactly as the platform's own parser would."""

import json
import time
import xml.etree.ElementTree as ET

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

TOKEN = "mpToken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wx0123456789abcdef"
ENV = {"OA_TOKEN": TOKEN, "OA_AES_KEY": AES_KEY}

RULES = f"""
[[inbound]]
id = "oa-safe"
platform = "wechat_oa"
token_env = "OA_TOKEN"
aes_key_env = "OA_AES_KEY"
app_id = "{APP_ID}"

[[inbound]]
id = "oa-plain"
platform = "wechat_oa"
token_env = "OA_TOKEN"
app_id = "{APP_ID}"

[[operator]]
platform = "wechat_oa"
user = "oUser_openid_0001"
role = "viewer"
"""


def plain_query(nonce: str, timestamp: int | None = None, token: str = TOKEN) -> str:
    timestamp = str(timestamp if timestamp is not None else int(time.time()))
    signer = WeChatSigner()
    signer.add_data(token, timestamp, nonce)
    return f"signature={signer.signature}&timestamp={timestamp}&nonce={nonce}&openid=oUser_openid_0001"


def text_message(msg_id: str, text: str) -> str:
    return (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        "<FromUserName><![CDATA[oUser_openid_0001]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def safe_callback(crypto: WeChatCrypto, plaintext: str, nonce: str, timestamp: int | None = None):
    """(query, body) of a safe-mode POST as WeChat sends it."""
    timestamp = timestamp if timestamp is not None else int(time.time())
    envelope = ET.fromstring(crypto.encrypt_message(plaintext, nonce, str(timestamp)))
    query = f"{plain_query(nonce, timestamp)}&encrypt_type=aes&msg_signature={envelope.findtext('MsgSignature')}"
    body = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        f"<Encrypt><![CDATA[{envelope.findtext('Encrypt')}]]></Encrypt></xml>"
    ).encode()
    return query, body


def test_handshake_is_plain_in_both_modes(qunfa):
    server = qunfa(RULES, ENV)
    for account in ("oa-safe", "oa-plain"):
        answer = server.get(account, f"{plain_query('5555')}&echostr=8888888888")
        assert (answer.status, answer.body) == (200, b"8888888888")
        forged = server.get(account, f"{plain_query('5555', token='other')}&echostr=8888888888")
        assert forged.status == 401


def test_safe_mode_command_is_answered_with_a_sealed_reply(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    query, body = safe_callback(crypto, text_message("24000000000000001", "/whoami"), "5555")
    answer = server.post("oa-safe", body, {"content-type": "text/xml"}, query)
    assert answer.status == 200, answer.text
    envelope = ET.fromstring(answer.body)
    reply = parse_message(
        crypto.decrypt_message(
            answer.text, envelope.findtext("MsgSignature"), envelope.findtext("TimeStamp"), envelope.findtext("Nonce")
        )
    )
    assert reply.type == "text"
    assert reply.source == "gh_0123456789ab" and reply.target == "oUser_openid_0001"
    assert "wechat_oa" in reply.content and "viewer" in reply.content

    again = server.post("oa-safe", body, {"content-type": "text/xml"}, query)
    assert (again.status, again.body) == (200, b"success")
    assert server.settled_audit() == [("wechat_oa", "oa-safe", "oUser_openid_0001", "whoami", "ok")]


def test_safe_mode_refuses_forged_stale_plain_and_malformed(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    impostor = WeChatCrypto("other", AES_KEY, APP_ID)
    query, body = safe_callback(impostor, text_message("1", "/whoami"), "1")
    assert server.post("oa-safe", body, {}, query).status == 401
    query, body = safe_callback(crypto, text_message("2", "/whoami"), "2", int(time.time()) - 3600)
    stale = server.post("oa-safe", body, {}, query)
    assert (stale.status, stale.json()["error"]["code"]) == (401, "stale")
    # Unencrypted callbacks to a safe-mode account carry an unsigned body: refused.
    assert server.post("oa-safe", text_message("3", "/whoami").encode(), {}, plain_query("3")).status == 401
    query, _ = safe_callback(crypto, text_message("4", "/whoami"), "4")
    assert server.post("oa-safe", b"<xml><Encrypt>", {}, query).status == 400
    assert server.audit() == []


def test_plain_mode_reply_and_replays(qunfa):
    server = qunfa(RULES, ENV)
    query = plain_query("777")
    answer = server.post("oa-plain", text_message("24000000000000009", "/whoami").encode(), {}, query)
    assert answer.status == 200, answer.text
    reply = parse_message(answer.text)
    assert reply.type == "text" and "wechat_oa" in reply.content
    # The same signed query with another body (the body is unsigned in plain mode): not run.
    replay = server.post("oa-plain", text_message("24000000000000010", "/help").encode(), {}, query)
    assert (replay.status, replay.body) == (200, b"success")
    stale = server.post("oa-plain", text_message("5", "/whoami").encode(), {}, plain_query("8", int(time.time()) - 3600))
    assert stale.status == 401
    assert [row[3] for row in server.settled_audit()] == ["whoami"]


def test_send_job_results_are_recorded_once(qunfa):
    server = qunfa(RULES, ENV)
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    now = int(time.time())
    template = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oU1]]></FromUserName>"
        f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID>"
        "<Status><![CDATA[failed:user block]]></Status></xml>"
    )
    mass = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oAdmin]]></FromUserName>"
        f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>1000001625</MsgID>"
        "<Status><![CDATA[send success]]></Status><TotalCount>100</TotalCount><FilterCount>80</FilterCount>"
        "<SentCount>75</SentCount><ErrorCount>5</ErrorCount></xml>"
    )
    for nonce, document in (("61", template), ("62", template), ("63", mass)):
        query, body = safe_callback(crypto, document, nonce)
        answer = server.post("oa-safe", body, {}, query)
        assert (answer.status, answer.body) == (200, b"success")
    events = [(kind, event_id, json.loads(payload)) for _, _, kind, event_id, payload in server.platform_events()]
    assert [(kind, event_id) for kind, event_id, _ in events] == [
        ("wechat_oa.template_send_finished", "template:200163836"),
        ("wechat_oa.mass_send_finished", "mass:1000001625"),
    ]
    assert events[0][2]["status"] == "failed:user block"
    assert events[1][2]["sent_count"] == 75

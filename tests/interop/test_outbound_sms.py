"""SMS channels against a running `qunfa serve`. Each provider is stood in for by a mock that
checks our request the way the provider does, with the provider's own SDK where it has one:

* Aliyun SendSms: the RPC v1 signature is recomputed by aliyun-python-sdk-core's signer (the
  module-private `__compose_string_to_sign` / `__get_signature`, see peer_sdks.md) over every
  parameter we sent.
* Tencent Cloud SendSms: TC3-HMAC-SHA256 is recomputed with tencentcloud-sdk-python-common's
  `Sign.sign_tc3`, over the canonical request built from the exact bytes and headers received
  (the published algorithm; the SDK's own request builder would hash its own serialisation).
* Twilio Messages API: Basic auth and the form fields; then Twilio's status callback, signed by
  the official `RequestValidator`, is posted to `/receipts/{channel}` and must be accepted and
  recorded against the send, while a forged one is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aliyunsdkcore.auth.composer import rpc_signature_composer
from tencentcloud.common.sign import Sign
from twilio.request_validator import RequestValidator

from conftest import http

ADMIN = "interop-admin-token"
ALIYUN_KEY_ID = "LTAI5tInteropKeyId"
ALIYUN_SECRET = "interopAliyunSecret0123456789"
TENCENT_SECRET_ID = "AKIDinterop0000000000000000000000000"
TENCENT_SECRET_KEY = "interopTencentSecretKey000000000"
TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"
# The public URL Twilio is told to call (behind a proxy in a real deployment); Twilio signs
# exactly this string, whatever address the request finally reaches.
STATUS_CALLBACK_URL = "https://qunfa.example.com/receipts/sms-twilio"

ENV = {
    "QUNFA_ADMIN_TOKEN": ADMIN,
    "ALIYUN_SECRET": ALIYUN_SECRET,
    "TENCENT_SECRET_KEY": TENCENT_SECRET_KEY,
    "TWILIO_TOKEN": TWILIO_TOKEN,
}

compose_string_to_sign = getattr(rpc_signature_composer, "__compose_string_to_sign")
get_signature = getattr(rpc_signature_composer, "__get_signature")


@dataclass
class Call:
    path: str
    headers: dict
    body: bytes
    verdict: str


@dataclass
class Provider:
    """A provider's API on a free port: `handle(path, headers, body)` answers and says
    whether the request would have been accepted."""

    handle: object
    url: str = ""
    calls: list = field(default_factory=list)

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"expected {count} calls, got {self.calls}"
            time.sleep(0.02)
        return self.calls


@pytest.fixture
def provider():
    servers = []

    def start(handle) -> Provider:
        mock = Provider(handle)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer, verdict = mock.handle(self.path, headers, body)
                mock.calls.append(Call(self.path, headers, body, verdict))
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        mock.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return mock

    yield start
    for server in servers:
        server.shutdown()


# -- the providers, as strict as the real ones


def aliyun(path, headers, body):
    params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    signature = params.pop("Signature", "")
    expected = get_signature(compose_string_to_sign("POST", params), ALIYUN_SECRET)
    if signature != expected or params.get("AccessKeyId") != ALIYUN_KEY_ID:
        return 400, {"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched with our calculation.", "RequestId": "R0"}, "forged"
    signed_at = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    if abs(time.time() - signed_at.timestamp()) > 15 * 60:
        return 400, {"Code": "InvalidTimeStamp.Expired", "Message": "expired", "RequestId": "R0"}, "stale"
    assert params["Action"] == "SendSms" and params["Version"] == "2017-05-25"
    assert params["SignatureMethod"] == "HMAC-SHA1" and params["SignatureVersion"] == "1.0"
    return 200, {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "R1"}, "ok"


def tencent(path, headers, body):
    timestamp = int(headers["x-tc-timestamp"])
    date = datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")
    canonical = (
        f"POST\n/\n\ncontent-type:{headers['content-type']}\nhost:{headers['host']}\n\n"
        f"content-type;host\n{hashlib.sha256(body).hexdigest()}"
    )
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/sms/tc3_request\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = Sign.sign_tc3(TENCENT_SECRET_KEY, date, "sms", to_sign)
    expected = (
        f"TC3-HMAC-SHA256 Credential={TENCENT_SECRET_ID}/{date}/sms/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )
    if headers.get("authorization") != expected:
        return 200, {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "signature mismatch"}, "RequestId": "E0"}}, "forged"
    if abs(time.time() - timestamp) > 5 * 60:
        return 200, {"Response": {"Error": {"Code": "AuthFailure.SignatureExpire", "Message": "expired"}, "RequestId": "E1"}}, "stale"
    assert headers["x-tc-action"] == "SendSms" and headers["x-tc-version"] == "2021-01-11"
    request = json.loads(body)
    statuses = [
        {"SerialNo": f"2640:{number}", "PhoneNumber": number, "Fee": 1, "SessionContext": "", "Code": "Ok", "Message": "send success", "IsoCode": "CN"}
        for number in request["PhoneNumberSet"]
    ]
    return 200, {"Response": {"SendStatusSet": statuses, "RequestId": "R2"}}, "ok"


def twilio(path, headers, body):
    expected_auth = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    if headers.get("authorization") != expected_auth or path != f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
        return 401, {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}, "forged"
    form = dict(urllib.parse.parse_qsl(body.decode()))
    answer = {
        "sid": "SM0123456789abcdef0123456789abcdef",
        "status": "queued",
        "to": form.get("To"),
        "from": form.get("From"),
        "body": form.get("Body"),
        "direction": "outbound-api",
        "error_code": None,
    }
    return 201, answer, "ok"


RULES = """
[delivery]
poll_interval = "50ms"

[[channel]]
id = "sms-aliyun"
kind = "aliyun_sms"
base_url = "{aliyun}"
access_key_id = "{aliyun_key_id}"
access_key_secret_env = "ALIYUN_SECRET"
sign_name = "阿里云短信测试"
template_code = "SMS_154950909"

[[channel]]
id = "sms-tencent"
kind = "tencent_sms"
base_url = "{tencent}"
secret_id = "{tencent_secret_id}"
secret_key_env = "TENCENT_SECRET_KEY"
sdk_app_id = "1400000000"
sign_name = "腾讯云"
template_id = "1234567"

[[channel]]
id = "sms-twilio"
kind = "twilio_sms"
base_url = "{twilio}"
account_sid = "{twilio_sid}"
auth_token_env = "TWILIO_TOKEN"
from = "+15005550006"
status_callback_url = "{callback}"
"""


def start(qunfa, provider):
    mocks = {"aliyun": provider(aliyun), "tencent": provider(tencent), "twilio": provider(twilio)}
    rules = RULES.format(
        aliyun=mocks["aliyun"].url,
        tencent=mocks["tencent"].url,
        twilio=mocks["twilio"].url,
        aliyun_key_id=ALIYUN_KEY_ID,
        tencent_secret_id=TENCENT_SECRET_ID,
        twilio_sid=TWILIO_SID,
        callback=STATUS_CALLBACK_URL,
    )
    return qunfa(rules, ENV), mocks


def send(server, route: str, phone: str, content: dict) -> str:
    body = {"recipient": {"phone": phone}, "route": [route], "content": content}
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    answer = http("POST", f"{server.url}/api/v1/messages", json.dumps(body).encode(), headers)
    assert answer.status == 202, answer.text
    return answer.json()["id"]


def wait_for_state(server, message_id: str, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = http("GET", f"{server.url}/api/v1/messages/{message_id}", headers={"authorization": f"Bearer {ADMIN}"})
        assert answer.status == 200, answer.text
        view = answer.json()
        if view["state"] == state:
            return view
        assert time.monotonic() < deadline, f"message never became {state}: {view}"
        time.sleep(0.05)


def test_aliyun_accepts_our_signature_as_its_sdk_computes_it(qunfa, provider):
    server, mocks = start(qunfa, provider)
    message_id = send(server, "sms-aliyun", "+8613800000000", {
        "text": "验证码 1234",
        "per_channel": {"sms-aliyun": {"template_params": {"code": "1234"}}},
    })
    call = mocks["aliyun"].wait()[0]
    assert call.verdict == "ok", call
    params = dict(urllib.parse.parse_qsl(call.body.decode()))
    assert params["PhoneNumbers"] == "8613800000000"
    assert params["TemplateCode"] == "SMS_154950909"
    assert json.loads(params["TemplateParam"]) == {"code": "1234"}
    assert params["SignName"] == "阿里云短信测试"
    view = wait_for_state(server, message_id, "delivered")
    assert view["steps"][0]["state"] == "delivered"


def test_tencent_accepts_our_tc3_signature_as_its_sdk_computes_it(qunfa, provider):
    server, mocks = start(qunfa, provider)
    message_id = send(server, "sms-tencent", "+8613800000000", {
        "text": "验证码 1234",
        "per_channel": {"sms-tencent": {"template_params": {"1": "1234", "2": "5"}}},
    })
    call = mocks["tencent"].wait()[0]
    assert call.verdict == "ok", call
    request = json.loads(call.body)
    assert request["PhoneNumberSet"] == ["+8613800000000"]
    assert request["TemplateParamSet"] == ["1234", "5"]
    assert (request["SmsSdkAppId"], request["TemplateId"], request["SignName"]) == ("1400000000", "1234567", "腾讯云")
    wait_for_state(server, message_id, "delivered")


def test_twilio_gets_the_form_and_its_signed_status_callback_is_recorded(qunfa, provider):
    server, mocks = start(qunfa, provider)
    message_id = send(server, "sms-twilio", "+15005550009", {"text": "**Sale** at 8pm", "format": "markdown"})
    call = mocks["twilio"].wait()[0]
    assert call.verdict == "ok", call
    form = dict(urllib.parse.parse_qsl(call.body.decode()))
    assert form == {"To": "+15005550009", "From": "+15005550006", "Body": "Sale at 8pm", "StatusCallback": STATUS_CALLBACK_URL}
    wait_for_state(server, message_id, "delivered")

    # Twilio reports the delivery, signed over the public URL it was given.
    params = {
        "AccountSid": TWILIO_SID,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": "SM0123456789abcdef0123456789abcdef",
        "MessageStatus": "delivered",
        "SmsSid": "SM0123456789abcdef0123456789abcdef",
        "SmsStatus": "delivered",
        "To": "+15005550009",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(STATUS_CALLBACK_URL, params)
    body = urllib.parse.urlencode(params).encode()
    form_headers = {"content-type": "application/x-www-form-urlencoded"}
    answer = http("POST", f"{server.url}/receipts/sms-twilio", body, {**form_headers, "x-twilio-signature": signature})
    assert answer.status == 200, answer.text
    forged = RequestValidator("not the auth token").compute_signature(STATUS_CALLBACK_URL, params)
    refused = http("POST", f"{server.url}/receipts/sms-twilio", body, {**form_headers, "x-twilio-signature": forged})
    assert refused.status == 401, refused.text
    rows = server.rows("SELECT provider_ref, status FROM delivery_receipts WHERE channel = 'sms-twilio'")
    assert rows == [("SM0123456789abcdef0123456789abcdef", "delivered")]


def test_a_status_callback_signature_from_the_sdk_verifies_with_and_without_the_default_port():
    """The value pasted into the Rust unit test
    `a_signature_made_by_the_official_sdk_verifies_with_and_without_the_default_port`."""
    validator = RequestValidator("0123456789abcdef0123456789abcdef")
    url = "https://qunfa.example.com/webhooks/twilio-status?channel=sms"
    params = {"AccountSid": "AC0123456789abcdef0123456789abcdef", "MessageSid": "SM5a",
              "MessageStatus": "delivered", "To": "+8613800000000", "Body": "双十一 a&b=c"}
    signature = validator.compute_signature(url, params)
    assert signature == "n4a8upjWAP9bc4KgWJETzdCgK0g="
    assert validator.validate("https://qunfa.example.com:443/webhooks/twilio-status?channel=sms", params, signature)


def test_the_mock_verifiers_accept_the_published_vectors():
    """The mocks above are only as good as their verification: both reproduce the
    published vectors (aliyun_sms-01, tencent_sms-01)."""
    params = {
        "AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123",
        "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007", "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z", "Version": "2017-05-25",
    }
    assert get_signature(compose_string_to_sign("GET", params), "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    to_sign = "TC3-HMAC-SHA256\n1700000000\n2023-11-14/sms/tc3_request\n4fd8e9b6dc31595fa00e7b3caedceeab3ed0a86115a8963bda0a473b3ffa0ad5"
    signature = Sign.sign_tc3("SECRETKEYEXAMPLE000000000000000000", "2023-11-14", "sms", to_sign)
    assert signature == "64cf7eedd11b0ad03fa338cbeacca72bca1fd7a2a93c45fb6ecc3887f3b9b6e8"

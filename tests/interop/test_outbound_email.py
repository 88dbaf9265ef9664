"""SendGrid against a running `qunfa serve`: the Mail Send body we post has the shape the
official `sendgrid` SDK builds for the same mail (its `Mail` helper is the reference), and
Event Webhook posts signed the way SendGrid signs them (ECDSA P-256 / SHA-256 over
timestamp + raw body, made here with `cryptography`) are accepted at `/receipts/{channel}`
while altered ones are refused. The SDK's own `EventWebhook.verify_signature` checks the
signatures made here, so signer and verifier agree with SendGrid's library."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import Mail

from conftest import http

ADMIN = "interop-admin-token"
API_KEY = "SG.interop-key.0123456789"
SIGNING_KEY = ec.derive_private_key(0x5EED_C0DE_0123456789, ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    SIGNING_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


@pytest.fixture
def sendgrid_api():
    """Mail Send on a free port: checks the bearer key, records bodies, answers 202 with
    X-Message-Id as SendGrid does."""
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            authorized = self.headers.get("authorization") == f"Bearer {API_KEY}"
            if self.path == "/v3/mail/send" and authorized:
                calls.append(json.loads(body))
                self.send_response(202)
                self.send_header("x-message-id", "W86EgYT6SQKk0lRflfLRsA")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            payload = json.dumps({"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked", "field": None, "help": None}]}).encode()
            self.send_response(401)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()


def start(qunfa, api_url: str):
    rules = f"""
[delivery]
poll_interval = "50ms"

[[channel]]
id = "mail"
kind = "sendgrid"
base_url = "{api_url}"
api_key_env = "SENDGRID_KEY"
from = "Campaign Bot <bot@example.com>"
event_public_key = "{PUBLIC_KEY}"
"""
    return qunfa(rules, {"QUNFA_ADMIN_TOKEN": ADMIN, "SENDGRID_KEY": API_KEY})


def sign(timestamp: str, body: bytes) -> str:
    der = SIGNING_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


def wait_for_state(server, message_id: str, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = http("GET", f"{server.url}/api/v1/messages/{message_id}", headers={"authorization": f"Bearer {ADMIN}"})
        view = answer.json()
        if view.get("state") == state:
            return view
        assert time.monotonic() < deadline, f"message never became {state}: {view}"
        time.sleep(0.05)


def test_the_mail_matches_what_the_official_sdk_builds_and_events_are_verified(qunfa, sendgrid_api):
    api_url, calls = sendgrid_api
    server = start(qunfa, api_url)
    content = {"text": "Your order shipped", "title": "Shipping update", "per_channel": {"mail": {"html": "<p>Your order <b>shipped</b></p>"}}}
    body = {"recipient": {"email": "ops@example.com"}, "route": ["mail"], "content": content}
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json", "Idempotency-Key": "order-42-shipped"}
    answer = http("POST", f"{server.url}/api/v1/messages", json.dumps(body).encode(), headers)
    assert answer.status == 202, answer.text
    wait_for_state(server, answer.json()["id"], "delivered")

    ours = calls[0]
    reference = Mail(
        from_email=("bot@example.com", "Campaign Bot"),
        to_emails="ops@example.com",
        subject="Shipping update",
        plain_text_content="Your order shipped",
        html_content="<p>Your order <b>shipped</b></p>",
    ).get()
    for key in ("from", "subject", "personalizations", "content"):
        assert ours[key] == reference[key], key
    assert ours["custom_args"]["qunfa_idempotency_key"]

    # SendGrid reports the delivery of that message; sg_message_id starts with X-Message-Id.
    events = [{"email": "ops@example.com", "timestamp": int(time.time()), "event": "delivered",
               "sg_event_id": "ev-delivered-1", "sg_message_id": "W86EgYT6SQKk0lRflfLRsA.filter0001.1.0",
               "qunfa_idempotency_key": ours["custom_args"]["qunfa_idempotency_key"]}]
    raw = (json.dumps(events) + "\r\n").encode()
    timestamp = str(int(time.time()))
    signature = sign(timestamp, raw)
    assert EventWebhook(PUBLIC_KEY).verify_signature(raw.decode(), signature, timestamp)
    event_headers = {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-signature": signature,
        "x-twilio-email-event-webhook-timestamp": timestamp,
    }
    accepted = http("POST", f"{server.url}/receipts/mail", raw, event_headers)
    assert accepted.status == 200, accepted.text
    altered = http("POST", f"{server.url}/receipts/mail", raw.replace(b"delivered", b"bounce"), event_headers)
    assert altered.status == 401, altered.text
    rows = server.rows("SELECT provider_ref, status, job_id IS NOT NULL FROM delivery_receipts WHERE channel = 'mail'")
    assert rows == [("W86EgYT6SQKk0lRflfLRsA", "delivered", 1)]

"""Standard Webhooks as the sender: requests signed by the reference `standardwebhooks`
library against a running `qunfa serve`: a `/whoami` message answered synchronously with
`{"replies": [...]}`, a replayed webhook-id, several signatures during a secret rotation, a
typed non-message event, a forged signature, a stale timestamp and a malformed body."""

import json
import time
from datetime import datetime, timedelta, timezone

from standardwebhooks.webhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

RULES = """
[[inbound]]
id = "crm"
platform = "standard"
secret_env = "QUNFA_CRM_SECRET"
tolerance = "2m"

[[operator]]
platform = "standard"
user = "u-7"
role = "operator"

[[command]]
name = "whoami"
aliases = ["我是谁"]
role = "anyone"
summary = "Show your platform, user id and role"
usage = ""
"""


def start(qunfa):
    return qunfa(RULES, {"QUNFA_CRM_SECRET": SECRET})


def signed(msg_id: str, body: bytes, at: datetime | None = None, secrets=(SECRET,)) -> dict:
    at = at or datetime.now(tz=timezone.utc)
    signatures = " ".join(Webhook(s).sign(msg_id, at, body.decode()) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signatures, "Content-Type": "application/json"}


def message(text: str, message_id: str = "m-1") -> bytes:
    return json.dumps({"type": "message", "timestamp": datetime.now(tz=timezone.utc).isoformat(),
                       "data": {"chat": "ops", "user": "u-7", "user_name": "Ada", "text": text,
                                "message_id": message_id}}).encode()


def test_a_command_is_answered_synchronously_and_a_replay_is_not_run_again(qunfa):
    server = start(qunfa)
    body = message("/whoami")
    headers = signed("msg_1", body)
    answer = server.post("crm", body, headers)
    assert answer.status == 200, answer.text
    replies = answer.json()["replies"]
    assert len(replies) == 1 and "u-7" in replies[0]["text"] and "operator" in replies[0]["text"]
    replay = server.post("crm", body, headers)
    assert replay.status == 200 and replay.json() == {"replies": []}
    assert [row[3] for row in server.settled_audit()] == ["whoami"]


def test_any_signature_of_a_rotation_matches(qunfa):
    server = start(qunfa)
    body = message("我是谁", "m-2")
    both = signed("msg_2", body, secrets=(OLD_SECRET, SECRET))
    assert server.post("crm", body, both).status == 200
    only_old = signed("msg_3", body, secrets=(OLD_SECRET,))
    assert server.post("crm", body, only_old).status == 401


def test_other_event_types_are_recorded(qunfa):
    server = start(qunfa)
    body = json.dumps({"type": "order.paid", "timestamp": "2026-11-25T12:00:00Z",
                       "data": {"order": 7}}).encode()
    answer = server.post("crm", body, signed("msg_4", body))
    assert answer.status == 200 and answer.json() == {"replies": []}
    events = server.platform_events()
    assert [(e[0], e[2], e[3]) for e in events] == [("standard", "standard.order.paid", "msg_4")]


def test_forged_stale_and_malformed_callbacks_are_refused(qunfa):
    server = start(qunfa)
    body = message("/whoami", "m-5")
    assert server.post("crm", body, signed("msg_5", body, secrets=(OLD_SECRET,))).status == 401
    old = datetime.now(tz=timezone.utc) - timedelta(minutes=3)  # the account allows 2m
    stale = server.post("crm", body, signed("msg_6", body, at=old))
    assert stale.status == 401 and stale.json()["error"]["code"] == "stale"
    bad = b'{"type": "message", "data": {"chat": "ops"}}'
    assert server.post("crm", bad, signed("msg_7", bad)).status == 400
    assert server.audit() == []

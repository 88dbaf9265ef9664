"""The service as any HTTP client sees it: health, readiness with a disabled account, JSON
errors for unknown accounts, and the shell endpoint refusing callers without the token."""

import json

from conftest import http

RULES = """
[[inbound]]
id = "shell"
platform = "shell"

[[operator]]
platform = "shell"
user = "local"
role = "admin"

[[channel]]
id = "log"
kind = "log"
path = "out.jsonl"

[[channel]]
id = "hooks"
kind = "webhook"
url = "https://example.invalid/hook"
secret_env = "QUNFA_INTEROP_UNSET_SECRET"
"""


def test_health_readiness_and_a_disabled_account(qunfa):
    server = qunfa(RULES)
    assert http("GET", f"{server.url}/healthz").status == 200
    ready = http("GET", f"{server.url}/readyz")
    assert ready.status == 200
    body = ready.json()
    assert body["status"] == "ready"
    disabled = {(d["kind"], d["id"]): d["reason"] for d in body["disabled"]}
    assert "QUNFA_INTEROP_UNSET_SECRET" in disabled[("channel", "hooks")]
    assert "QUNFA_INTEROP_UNSET_SECRET" in server.log()
    metrics = http("GET", f"{server.url}/metrics").text
    assert "qunfa_http_requests_total" in metrics
    assert server.stop() == 0


def test_unknown_accounts_and_unauthenticated_shell_calls_are_refused(qunfa):
    server = qunfa(RULES)
    unknown = server.post("nope", b"{}", {"content-type": "application/json"})
    assert unknown.status == 404
    assert unknown.json()["error"]["code"] == "unknown_account"
    forged = server.post(
        "shell",
        json.dumps({"user": "local", "text": "/whoami"}).encode(),
        {"content-type": "application/json", "authorization": "Bearer forged"},
    )
    assert forged.status == 401
    assert server.audit() == []


def test_an_inbound_account_missing_its_secret_is_disabled_and_answers_503(qunfa):
    rules = RULES + """
[[inbound]]
id = "crm"
platform = "standard"
secret_env = "QUNFA_INTEROP_UNSET_INBOUND_SECRET"
"""
    server = qunfa(rules)
    ready = http("GET", f"{server.url}/readyz").json()
    disabled = {(d["kind"], d["id"]): d["reason"] for d in ready["disabled"]}
    assert "QUNFA_INTEROP_UNSET_INBOUND_SECRET" in disabled[("inbound", "crm")]
    refused = server.post("crm", b"{}", {"content-type": "application/json"})
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "account_disabled"
    assert "QUNFA_INTEROP_UNSET_INBOUND_SECRET" not in refused.text

"""Approvers are told by e-mail: the request (what to decide, key evidence, the link to answer) and the
outcome, sent through apache-airflow-providers-smtp's hook to a real SMTP server (aiosmtpd, as `make up`
runs it) and read back from its Maildir."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tollgate.evaluation.notify import approver_addresses, outcome_message, request_message, send_mail
from tollgate.platform.mailbox import messages
from tollgate.platform.processes import free_port, stop_group, wait_listening

pytestmark = pytest.mark.integration

EVIDENCE = {
    "model_name": "tollgate-ctr", "version": "7", "digest": "ab" * 32, "approval_timeout_minutes": 1440.0,
    "metrics": {"challenger": {"auc": 0.7312, "log_loss": 0.41},
                "champion": {"auc": 0.7201, "log_loss": 0.42}},
    "dataset": {"tag": "data-2026-11-27"},
}  # fmt: skip
LINK = "http://127.0.0.1:8080/dags/evaluate_and_promote/runs/r1/tasks/approval/required_actions?map_index=-1"


@pytest.fixture
def smtp_server(tmp_path, monkeypatch):
    port, maildir = free_port(), tmp_path / "mail"
    log = tmp_path / "smtp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
             "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_listening("smtp server", port, proc, log, timeout=30)
    extra = {"disable_tls": True, "disable_ssl": True, "from_email": "tollgate@localhost"}
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(conn))
    yield maildir
    stop_group(proc.pid)


def test_request_and_outcome_reach_the_approver(smtp_server):
    to, unknown = approver_addresses('{"approver": "ana@example.org"}', ["approver", "bob"])
    assert (to, unknown) == (["ana@example.org"], ["bob"])
    send_mail(to, *request_message(EVIDENCE, LINK, 1440.0))
    answer = {"chosen_options": ["Reject"], "responded_by_user": {"name": "approver"},
              "params_input": {"comment": "wait for Monday"}}  # fmt: skip
    send_mail(to, *outcome_message(EVIDENCE, answer))
    send_mail(to, *outcome_message(EVIDENCE, {"chosen_options": ["Reject"], "responded_by_user": None}))

    request, outcome, timeout = messages(smtp_server)
    assert request.to == "ana@example.org"
    assert request.subject == "[Tollgate] Approval needed: promote tollgate-ctr v7 to champion"
    assert LINK in request.text and "auc 0.7312 0.7201" in request.text
    assert "data-2026-11-27" in request.text and "1440 min counts as Reject" in request.text
    assert outcome.subject == "[Tollgate] tollgate-ctr v7: Rejected by approver"
    assert "wait for Monday" in outcome.text
    assert timeout.subject == "[Tollgate] tollgate-ctr v7: No answer in time: Reject (the default) applies"


def test_a_malformed_address_book_says_what_is_expected():
    with pytest.raises(ValueError, match=re.escape('expected {"<airflow user>": "<e-mail address>"')):
        approver_addresses("approver=ana@example.org", ["approver"])


@pytest.fixture
def slack_webhook(monkeypatch):
    """A real HTTP endpoint standing in for Slack's incoming webhook; it records each JSON post."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list[dict] = []
    status = {"code": 200}

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append({"path": self.path, "json": json.loads(body)})
            self.send_response(status["code"])
            self.end_headers()
            self.wfile.write(b"ok" if status["code"] == 200 else b"invalid_token")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/services/T000/B000/secret"
    conn = {"conn_type": "slackwebhook", "password": url}  # the webhook URL, as Slack gives it
    monkeypatch.setenv("AIRFLOW_CONN_TOLLGATE_SLACK", json.dumps(conn))
    yield posts, status
    server.shutdown()


def test_with_a_slack_connection_the_request_is_also_posted_to_slack(smtp_server, slack_webhook):
    from tollgate.evaluation.notify import deliver

    posts, status = slack_webhook
    told = deliver(["ana@example.org"], *request_message(EVIDENCE, LINK, 1440.0))
    assert told == ["ana@example.org", "slack:tollgate_slack"]
    (post,) = posts
    assert post["path"] == "/services/T000/B000/secret"
    text = post["json"]["text"]
    assert text.startswith("*[Tollgate] Approval needed: promote tollgate-ctr v7 to champion*\n")
    assert LINK in text and "auc 0.7312 0.7201" in text
    assert [m.to for m in messages(smtp_server)] == ["ana@example.org"]

    # Slack refusing the post (a revoked webhook) is logged; the mail still goes and nothing raises.
    status["code"] = 403
    assert deliver(["ana@example.org"], *outcome_message(EVIDENCE, None)) == ["ana@example.org"]
    assert len(posts) == 2 and len(messages(smtp_server)) == 2


def test_without_a_slack_connection_only_mail_is_sent(smtp_server, monkeypatch):
    from tollgate.evaluation.notify import deliver

    monkeypatch.delenv("AIRFLOW_CONN_TOLLGATE_SLACK", raising=False)
    assert deliver(["ana@example.org"], *outcome_message(EVIDENCE, None)) == ["ana@example.org"]
    assert deliver([], *outcome_message(EVIDENCE, None)) == []  # nobody to tell: a warning, no error
    assert len(messages(smtp_server)) == 1

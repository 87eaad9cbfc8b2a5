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

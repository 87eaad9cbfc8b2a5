"""Approvers are told: an e-mail when an approval waits for them, and one with the outcome.

Airflow's notifier interface (``BaseNotifier``), as the standard provider's HITL examples use it: the
approval operator calls :class:`ApprovalNotifier` with ``kind="request"`` when it starts waiting
(subject, key evidence and the direct link to answer, from
``HITLOperator.generate_link_to_ui_from_context``) and with ``kind="outcome"`` when it is answered or
times out. Addresses come from the Variable ``tollgate_approver_emails`` (JSON, user -> address) for
the users the approval is assigned to. Mail goes through ``apache-airflow-providers-smtp``'s hook on the
Connection ``smtp_default`` (``make up`` runs a real SMTP server on loopback that writes a Maildir under
the state folder). When the Connection ``tollgate_slack`` is set (type ``slackwebhook``, password = the
incoming-webhook URL), the same messages are also posted to that Slack channel through
``apache-airflow-providers-slack``. A failure to notify is logged, never fails the approval.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

SMTP_CONN_ID = "smtp_default"
SLACK_CONN_ID = "tollgate_slack"
FROM_ADDRESS = "tollgate@localhost"

log = logging.getLogger("tollgate.notify")


def approver_addresses(raw: str, users: Sequence[str]) -> tuple[list[str], list[str]]:
    """The addresses of ``users`` from the Variable's JSON, and the users without one."""
    try:
        book = json.loads(raw or "{}")
    except ValueError as error:
        raise ValueError(
            f"Variable tollgate_approver_emails is not JSON ({error}); expected "
            '{"<airflow user>": "<e-mail address>", ...}'
        ) from None
    if not isinstance(book, dict):
        raise ValueError('Variable tollgate_approver_emails must be a JSON object {"user": "address"}')
    found = [str(book[user]) for user in users if book.get(user)]
    return found, [user for user in users if not book.get(user)]


def request_message(evidence: Mapping[str, Any], link: str, minutes: float) -> tuple[str, str]:
    """Subject and HTML of the request: what to decide, the key evidence, where to answer."""
    name, version = evidence["model_name"], evidence["version"]
    challenger = (evidence.get("metrics") or {}).get("challenger") or {}
    champion = (evidence.get("metrics") or {}).get("champion") or {}
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td>"
        f"<td>{'' if champion.get(k) is None else f'{champion[k]:.4f}'}</td></tr>"
        for k, v in challenger.items()
        if isinstance(v, int | float)
    )
    dataset = evidence.get("dataset") or {}
    subject = f"[Tollgate] Approval needed: promote {name} v{version} to champion"
    body = (
        f"<p>{html.escape(name)} v{html.escape(str(version))} passed every automatic gate and waits for "
        f"your decision (no answer within {minutes:g} min counts as Reject).</p>"
        f'<p><a href="{html.escape(link)}">Answer here (Approve / Reject)</a><br>{html.escape(link)}</p>'
        f"<table><tr><th>metric</th><th>challenger</th><th>champion</th></tr>{rows}</table>"
        f"<p>Dataset {html.escape(str(dataset.get('tag') or dataset.get('rev') or '?'))}; "
        f"evidence sha256 {html.escape(str(evidence.get('digest', ''))[:16])}…</p>"
    )
    return subject, body


def outcome_message(evidence: Mapping[str, Any], answer: Mapping[str, Any] | None) -> tuple[str, str]:
    """Subject and HTML of the outcome: approved / rejected by whom, or no answer in time."""
    name, version = evidence["model_name"], evidence["version"]
    answer = answer or {}
    chosen = (answer.get("chosen_options") or ["?"])[0]
    who = (answer.get("responded_by_user") or {}).get("name")
    comment = (answer.get("params_input") or {}).get("comment") or ""
    if who:
        decided = f"{'Approved' if chosen == 'Approve' else 'Rejected'} by {who}"
    else:
        decided = f"No answer in time: {chosen} (the default) applies"
    subject = f"[Tollgate] {name} v{version}: {decided}"
    body = f"<p>{html.escape(subject)}</p>" + (f"<p>Comment: {html.escape(comment)}</p>" if comment else "")
    return subject, body


def superseded_message(model_name: str, old: str, new: str) -> tuple[str, str]:
    """Subject and HTML telling approvers an older candidate's request is closed."""
    subject = f"[Tollgate] {model_name} v{old}: superseded by v{new}, approval request closed"
    body = (
        f"<p>{html.escape(model_name)} v{old} is no longer a candidate: the newer challenger v{new} "
        "replaces it. Its evaluation and any pending approval request were closed; you will be asked "
        f"about v{new} once it passes the automatic gates.</p>"
    )
    return subject, body


def tell_approvers(users: Sequence[str], subject: str, body: str) -> list[str]:
    """Tell ``users`` by mail (addresses: Variable tollgate_approver_emails) and Slack when set up.

    Never raises; returns where it was delivered (addresses, and ``slack:<conn id>``)."""
    from tollgate.runtime import setting

    try:
        addresses, unknown = approver_addresses(setting("tollgate_approver_emails"), users)
    except Exception as error:  # telling people must never change the decision
        log.warning("Could not read the approvers' addresses: %s", error)
        addresses, unknown = [], []
    if unknown:
        log.warning("No e-mail address for %s in Variable tollgate_approver_emails", unknown)
    return deliver(addresses, subject, body)


def deliver(addresses: Sequence[str], subject: str, body: str) -> list[str]:
    """Mail ``addresses`` and post to Slack when its Connection is set; each channel fails on its own."""
    told = []
    if addresses:
        try:
            send_mail(addresses, subject, body)
            told += list(addresses)
        except Exception as error:  # telling people must never change the decision
            log.warning("Could not mail %s: %s", ", ".join(addresses), error)
    try:
        if slack_connection_set():
            post_to_slack(subject, body)
            told.append(f"slack:{SLACK_CONN_ID}")
    except Exception as error:
        log.warning("Could not post to Slack (Connection %s): %s", SLACK_CONN_ID, error)
    if told:
        log.info("Told %s: %s", ", ".join(told), subject)
    else:
        log.warning("Nobody was told (no approver address, no Slack Connection): %s", subject)
    return told


def slack_connection_set(conn_id: str = SLACK_CONN_ID) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def post_to_slack(subject: str, body: str, conn_id: str = SLACK_CONN_ID) -> None:
    """One message: the subject in bold, then the body as plain text (links stay as URLs)."""
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    from tollgate.htmltext import plain_text

    SlackWebhookHook(slack_webhook_conn_id=conn_id).send_text(f"*{subject}*\n{plain_text(body)}")


def send_mail(to: Sequence[str], subject: str, body: str, conn_id: str = SMTP_CONN_ID) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=list(to), subject=subject, html_content=body,
                             from_email=hook.from_email or FROM_ADDRESS)  # fmt: skip


class ApprovalNotifier(BaseNotifier):
    """Tells the approval's assigned users: ``kind`` = "request" (it waits) or "outcome" (decided)."""

    template_fields = ()

    def __init__(self, kind: str, evidence_task_id: str = "assemble_evidence") -> None:
        super().__init__()
        if kind not in ("request", "outcome"):
            raise ValueError(f"kind must be 'request' or 'outcome', not {kind!r}")
        self.kind = kind
        self.evidence_task_id = evidence_task_id

    def notify(self, context: Any) -> None:
        try:
            self._notify(context)
        except Exception as error:  # telling people must never change the decision
            log.warning("Could not notify the approvers (%s): %s", self.kind, error)

    def _notify(self, context: Any) -> None:
        from airflow.providers.standard.operators.hitl import HITLOperator

        from tollgate.runtime import setting

        task, ti = context["task"], context["ti"]
        evidence = ti.xcom_pull(task_ids=self.evidence_task_id)
        # The assigned users are set when the request is made; a task resumed with the answer is a fresh
        # operator, so they come from the same Variable the request used.
        users = [u["id"] for u in (getattr(task, "assigned_users", None) or [])] or setting(
            "tollgate_approvers"
        ).replace(",", " ").split()
        if self.kind == "request":
            link = HITLOperator.generate_link_to_ui_from_context(context=context)
            minutes = float(evidence.get("approval_timeout_minutes") or 0)
            subject, body = request_message(evidence, link, minutes)
        else:
            from tollgate.evaluation.approval import ANSWER_KEY

            subject, body = outcome_message(evidence, ti.xcom_pull(task_ids=task.task_id, key=ANSWER_KEY))
        tell_approvers(users, subject, body)

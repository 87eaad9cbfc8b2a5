"""Tollgate as an Airflow provider (entry point ``apache_airflow_provider`` in pyproject.toml).

It registers one thing: the message-queue provider of the landing bucket's notifications, so
common-messaging's ``MessageQueueTrigger(scheme="tollgate-landing")`` finds Tollgate's SQS trigger
(``tollgate.data.landing_queue``).
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "tollgate",
        "name": "Tollgate",
        "description": "Gated MLOps pipeline: the landing bucket's S3 notifications as a message queue.",
        "queues": ["tollgate.data.landing_queue.LandingQueueProvider"],
    }

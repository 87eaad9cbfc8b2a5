"""Data-triggered ingest from object storage: an AssetWatcher on the landing bucket's SQS queue.

S3 sends an ``ObjectCreated`` notification to an SQS queue for each object in the landing bucket.
``dataset_ingest`` is scheduled on the landing Asset; when ``TOLLGATE_LANDING_QUEUE_URL`` is set in the
environment of the dag-processor (read when the DAG file is parsed, never from a Variable), that Asset
carries an AssetWatcher whose trigger is common-messaging's ``MessageQueueTrigger``. Tollgate registers
itself as an Airflow provider (``tollgate.airflow_provider``) with one message-queue provider, scheme
``tollgate-landing``, whose trigger is the amazon provider's SQS trigger with one change: each message is
parsed by ``landing_events.announcement`` and every message received is deleted, the ones that announce
no partition only logged. So a test event, another prefix, a ``_SUCCESS`` file or a body that is not
JSON never crashes the triggerer, never loops on the queue and never starts a run; a partition file
becomes an asset event whose payload names the day (``{"partitions": ["2024-03-01"], "keys": [...]}``).

Environment (dag-processor): ``TOLLGATE_LANDING_QUEUE_URL`` (the queue), ``TOLLGATE_LANDING_PREFIX``
(key prefix of the partitions in the bucket, default ``landing/``), ``TOLLGATE_LANDING_BUCKET`` (only
this bucket's events count; default any), ``TOLLGATE_LANDING_POLL_SECONDS`` (default 20),
``TOLLGATE_LANDING_AWS_CONN_ID`` (default ``aws_default``; the standard AWS chain when it is absent).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider
from airflow.triggers.base import TriggerEvent

from tollgate.data.landing_events import Announcement, announcement

SCHEME = "tollgate-landing"
QUEUE_ENV = "TOLLGATE_LANDING_QUEUE_URL"
WATCHER_NAME = "landing_bucket_notifications"


class LandingQueueTrigger(SqsSensorTrigger):
    """The amazon provider's SQS trigger, reading S3 notifications of landed partitions safely."""

    def __init__(self, *, sqs_queue: str, key_prefix: str = "landing/", bucket: str | None = None, **kwargs):
        kwargs["delete_message_on_reception"] = True
        kwargs.pop("message_filtering", None)  # filtering is announcement(): it never raises on a body
        super().__init__(sqs_queue=sqs_queue, **kwargs)
        self.key_prefix = key_prefix
        self.bucket = bucket

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.pop("message_filtering", None)
        kwargs.pop("delete_message_on_reception", None)
        path = f"{type(self).__module__}.{type(self).__qualname__}"
        return path, {**kwargs, "key_prefix": self.key_prefix, "bucket": self.bucket}

    async def poke(self, client: Any) -> list[dict[str, Any]]:
        """Receive a batch, delete every message of it, return the announcements of partitions."""
        response = await self.poll_sqs(client=client)
        messages = response.get("Messages", []) if isinstance(response, dict) else []
        found: list[dict[str, Any]] = []
        for message in messages:
            try:
                parsed = announcement(message.get("Body", ""), self.key_prefix, self.bucket)
            except Exception as exc:  # announcement() does not raise; this is a last guard for the triggerer
                parsed = Announcement(ignored=[f"could not be read ({type(exc).__name__}: {exc})"])
            for reason in parsed.ignored:
                self.log.warning("Landing queue: message %s ignored: %s", message.get("MessageId"), reason)
            if parsed.partitions:
                self.log.info("Landing queue: %s landed (%s)", ", ".join(parsed.partitions), parsed.keys)
                found.append({"partitions": parsed.partitions, "keys": parsed.keys})
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            result = await client.delete_message_batch(QueueUrl=self.sqs_queue, Entries=entries)
            if result.get("Failed"):
                self.log.warning("Landing queue: could not delete %s (they come back)", result["Failed"])
        return found

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                async with await self.hook.get_async_conn() as client:
                    found = await self.poke(client=client)
            except Exception:  # a queue that is briefly unreachable must not end the watch
                self.log.exception("Landing queue %s: polling failed; retrying", self.sqs_queue)
                found = []
            if found:
                partitions = sorted({day for item in found for day in item["partitions"]})
                keys = [key for item in found for key in item["keys"]]
                yield TriggerEvent({"partitions": partitions, "keys": keys, "source": "s3-notification"})
                return
            await asyncio.sleep(self.waiter_delay)


class LandingQueueProvider(BaseMessageQueueProvider):
    """common-messaging's entry for ``MessageQueueTrigger(scheme="tollgate-landing", ...)``."""

    scheme = SCHEME

    def trigger_class(self) -> type[LandingQueueTrigger]:
        return LandingQueueTrigger


def landing_watcher(queue_url: str, env: dict[str, str] | None = None) -> Any:
    """The AssetWatcher on ``queue_url`` (settings from ``env``, default the process environment)."""
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import AssetWatcher

    env = dict(os.environ if env is None else env)
    poll = int(env.get("TOLLGATE_LANDING_POLL_SECONDS") or 20)
    trigger = MessageQueueTrigger(
        scheme=SCHEME,
        sqs_queue=queue_url,
        key_prefix=env.get("TOLLGATE_LANDING_PREFIX", "landing/"),
        bucket=env.get("TOLLGATE_LANDING_BUCKET") or None,
        aws_conn_id=env.get("TOLLGATE_LANDING_AWS_CONN_ID", "aws_default"),
        max_messages=10,
        wait_time_seconds=min(poll, 20),
        waiter_delay=poll,
    )
    return AssetWatcher(name=WATCHER_NAME, trigger=trigger)

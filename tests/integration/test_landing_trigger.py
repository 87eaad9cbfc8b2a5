"""The landing-queue trigger against a real SQS endpoint (``moto_server``), without an Airflow platform:
what it does with each kind of message, and that an unreachable queue never ends the watch."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tollgate.data.landing_queue import LandingQueueTrigger

pytestmark = pytest.mark.integration


def _record(key: str) -> str:
    s3 = {"bucket": {"name": "b"}, "object": {"key": key}}
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": s3}]})


async def _poke(trigger: LandingQueueTrigger) -> list[dict]:
    async with await trigger.hook.get_async_conn() as client:
        return await trigger.poke(client=client)


def test_poke_returns_partitions_and_deletes_every_message(moto_s3):
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_s3.url)
    url = sqs.create_queue(QueueName=f"landing-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for body in ("{not json", _record("other/x.csv"), _record("landing/dt=2024-07-01/impressions.parquet")):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    trigger = LandingQueueTrigger(sqs_queue=url, key_prefix="landing/", aws_conn_id=None, wait_time_seconds=0)

    found = asyncio.run(_poke(trigger))

    assert found == [
        {"partitions": ["2024-07-01"], "keys": ["s3://b/landing/dt=2024-07-01/impressions.parquet"]}
    ]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    assert [attributes[name] for name in names] == ["0", "0"]  # junk does not come back to loop forever


def test_an_unreachable_queue_is_logged_and_retried_not_raised(moto_s3, capfd):
    url = "http://127.0.0.1:9/123456789012/nowhere"  # nothing listens on port 9
    trigger = LandingQueueTrigger(sqs_queue=url, aws_conn_id=None, wait_time_seconds=0, waiter_delay=0)

    async def watch_briefly() -> None:
        events = trigger.run()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(events.__anext__(), timeout=3)

    asyncio.run(watch_briefly())
    logged = capfd.readouterr()
    assert "polling failed; retrying" in logged.err + logged.out  # Airflow's structured log goes to stderr

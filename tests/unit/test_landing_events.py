"""S3 notifications on the landing queue: which ones announce a partition, which are ignored, and the
watcher that dataset_ingest gets only when the queue is configured in the environment."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tollgate.data.landing_events import announcement, from_watcher, partition_of
from tollgate.data.pipeline import announced_days

pytestmark = pytest.mark.unit


def _s3_event(key: str, event: str = "ObjectCreated:Put", bucket: str = "landing-bucket") -> str:
    record = {
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
    }
    return json.dumps({"Records": [record]})


def test_a_partition_file_announces_its_day():
    found = announcement(_s3_event("landing/dt%3D2024-03-01/impressions.parquet"), "landing/")
    assert found.partitions == ["2024-03-01"] and not found.ignored
    assert found.keys == ["s3://landing-bucket/landing/dt=2024-03-01/impressions.parquet"]


def test_an_sns_wrapped_notification_is_read_too():
    body = json.dumps(
        {"Type": "Notification", "Message": _s3_event("landing/dt=2024-03-02/impressions.parquet")}
    )
    assert announcement(body, "landing/").partitions == ["2024-03-02"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json", "not JSON"),
        ("", "not JSON"),
        (json.dumps({"Event": "s3:TestEvent", "Bucket": "landing-bucket"}), "test event"),
        (json.dumps({"hello": "world"}), "not an S3 event notification"),
        (json.dumps([1, 2, 3]), "not an S3 event notification"),
        (json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}), "malformed S3 record"),
        (json.dumps({"Records": ["x"]}), "malformed S3 record"),
        (_s3_event("other/dt=2024-03-01/impressions.parquet"), "not a partition file"),
        (_s3_event("landing/dt=2024-03-01/_SUCCESS"), "not a partition file"),
        (_s3_event("landing/dt=2024-02-30/impressions.parquet"), "not a partition file"),
        (
            _s3_event("landing/dt=2024-03-01/impressions.parquet", event="ObjectRemoved:Delete"),
            "not a new object",
        ),
        (json.dumps({"Type": "Notification", "Message": "{broken"}), "not an S3 event notification"),
    ],
)
def test_foreign_and_malformed_messages_are_ignored_with_a_reason(body, reason):
    found = announcement(body, "landing/")
    assert found.partitions == []
    assert any(reason in text for text in found.ignored), found.ignored


def test_another_bucket_is_ignored_when_the_landing_bucket_is_named():
    found = announcement(_s3_event("landing/dt=2024-03-01/impressions.parquet", bucket="x"), "landing/", "y")
    assert found.partitions == [] and "not the landing bucket" in found.ignored[0]


def test_partition_of_needs_the_exact_layout():
    assert partition_of("landing/dt=2024-03-01/impressions.parquet", "landing/") == "2024-03-01"
    assert partition_of("landing/dt=2024-03-01/sub/impressions.parquet", "landing/") is None
    assert partition_of("landing/dt=24-03-01/impressions.parquet", "landing/") is None


def test_watcher_events_and_rest_events_name_days_alike():
    watcher = {"from_trigger": True, "payload": {"partitions": ["2024-03-02", "2024-03-01"], "keys": []}}
    assert from_watcher({"partition": "2024-03-05"}) == {"partition": "2024-03-05"}
    assert announced_days([watcher, {"partition": "2024-03-05"}]) == [
        "2024-03-01",
        "2024-03-02",
        "2024-03-05",
    ]


def _watchers_at_parse(env: dict[str, str]) -> list:
    """dataset_ingest parsed in a fresh interpreter with ``env``: its landing asset's watchers."""
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from tollgate.config import REPO_ROOT\n"
        "import json\n"
        "bag = DagBag(str(REPO_ROOT / 'dags' / 'dataset_ingest.py'))\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "dag = bag.dags['dataset_ingest']\n"
        "cond = dag.timetable.asset_condition\n"
        "assets = [cond] if hasattr(cond, 'watchers') else [a for _, a in cond.iter_assets()]\n"
        "outlets = [o for t in dag.tasks for o in t.outlets if getattr(o, 'name', '') == cond.name]\n"
        "assert all(o.watchers == cond.watchers for o in outlets), 'an outlet would drop the watcher'\n"
        "print(json.dumps([[w.name, *w.trigger.serialize()] for a in assets for w in a.watchers]))\n"
    )
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_watcher_is_attached_only_when_the_queue_is_in_the_environment():
    assert _watchers_at_parse({"TOLLGATE_LANDING_QUEUE_URL": ""}) == []
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/tollgate-landing"
    ((name, classpath, kwargs),) = _watchers_at_parse(
        {
            "TOLLGATE_LANDING_QUEUE_URL": url,
            "TOLLGATE_LANDING_PREFIX": "in/",
            "TOLLGATE_LANDING_POLL_SECONDS": "5",
        }
    )
    assert name == "landing_bucket_notifications"
    assert classpath == "tollgate.data.landing_queue.LandingQueueTrigger"  # found through MessageQueueTrigger
    assert kwargs["sqs_queue"] == url and kwargs["key_prefix"] == "in/" and kwargs["waiter_delay"] == 5

"""Pure pieces of the router: sticky buckets, rollout record, guardrail, input checks, outputs, shadow."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from tollgate.serving.guardrail import Guardrail
from tollgate.serving.inputs import Column, InputError, InputSpec
from tollgate.serving.outputs import to_jsonable, to_v2_outputs
from tollgate.serving.rollout import (
    Conflict,
    Rollout,
    RolloutError,
    RolloutStore,
    bucket,
    in_canary,
    validate,
)
from tollgate.serving.settings import GuardrailLimits
from tollgate.serving.shadow import ShadowMirror

pytestmark = pytest.mark.unit


def test_buckets_are_stable_and_raising_the_weight_only_adds_users():
    users = [f"u{i}" for i in range(2000)]
    assert [bucket("r1", u) for u in users] == [bucket("r1", u) for u in users]
    low = {u for u in users if in_canary(Rollout(rollout_id="r1", mode="canary", weight_bp=1000), u)}
    high = {u for u in users if in_canary(Rollout(rollout_id="r1", mode="canary", weight_bp=5000), u)}
    assert low < high
    assert 140 < len(low) < 260 and 900 < len(high) < 1100  # about 10 % and 50 %
    other = {u for u in users if in_canary(Rollout(rollout_id="r2", mode="canary", weight_bp=1000), u)}
    assert other != low  # a new rollout id draws new arms


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("blue", "2", 0, "r"), "mode must be one of"),
        (("canary", "latest", 100, "r"), "challenger_version"),
        (("canary", "2", 10_001, "r"), "weight_bp"),
        (("canary", "2", 1.5, "r"), "weight_bp"),
        (("shadow", "2", 100, "r"), "must be 0 in shadow"),
        (("canary", "2", 100, ""), "rollout_id is required"),
    ],
)
def test_bad_rollout_requests_are_refused_with_the_field(args, words):
    with pytest.raises(RolloutError, match=words):
        validate(*args)


def test_rollout_record_is_versioned_and_a_stale_writer_conflicts(tmp_path):
    store = RolloutStore(str(tmp_path), "m")
    assert store.read() == Rollout()
    first = store.write(Rollout(mode="canary", challenger_version="2", weight_bp=100, rollout_id="r"), 0, "a")
    assert first.revision == 1 and RolloutStore(str(tmp_path), "m").read() == first  # another replica sees it
    with pytest.raises(Conflict):
        store.write(Rollout(mode="off"), 0, "stale")
    aborted = store.abort("guardrail: too slow", "router")
    assert (aborted.revision, aborted.mode, aborted.weight_bp, aborted.challenger_version) == (
        2,
        "off",
        0,
        None,
    )
    assert aborted.rollout_id == "r" and aborted.aborted_reason == "guardrail: too slow"


def test_lease_expiry():
    live = Rollout(mode="canary", challenger_version="2", rollout_id="r", lease_expires_at=time.time() + 60)
    assert not live.lease_expired()
    assert Rollout(mode="canary", challenger_version="2", rollout_id="r", lease_expires_at=1).lease_expired()
    assert not Rollout(mode="off", lease_expires_at=1).lease_expired()


def test_guardrail_judges_error_rate_and_p99_over_the_window_only():
    guard = Guardrail(GuardrailLimits(window_s=10, min_requests=20, max_error_rate=0.05, max_p99_ms=100))
    for i in range(19):
        guard.observe(False, 0.01, now=100 + i * 0.01)
    assert guard.breach(now=101) is None  # too few requests decide nothing
    guard.observe(True, 0.01, now=101)
    assert "error rate" in guard.breach(now=101)
    assert guard.breach(now=200) is None  # outside the window: forgotten
    for i in range(100):
        guard.observe(True, 0.5 if i < 3 else 0.01, now=300)
    assert "p99 latency 500.0 ms" in guard.breach(now=300)


SPEC = InputSpec(columns=(Column("n", "long"), Column("x", "double"), Column("when", "datetime"),
                          Column("tag", "string", required=False)))  # fmt: skip


def test_rows_become_a_typed_frame():
    frame = SPEC.from_rows(
        [{"n": 1, "x": 2, "when": "2026-01-01T10:00:00Z"}, {"n": 2, "x": 0.5, "when": "2026-01-02"}]
    )
    assert str(frame["n"].dtype) == "int64" and str(frame["x"].dtype) == "float64"
    assert str(frame["when"].dtype).startswith("datetime64") and frame["tag"].isna().all()


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"x": 1.0, "when": "2026-01-01"}, "n"),
        ({"n": True, "x": 1.0, "when": "2026-01-01"}, "n"),
        ({"n": 1, "x": float("nan"), "when": "2026-01-01"}, "x"),
        ({"n": 1, "x": 1.0, "when": "yesterday"}, "when"),
        ({"n": 1, "x": 1.0, "when": "2026-01-01", "tag": 3}, "tag"),
    ],
)
def test_bad_rows_name_the_field(row, field):
    with pytest.raises(InputError) as err:
        SPEC.from_rows([row])
    assert err.value.field == field


def test_v2_inputs_are_checked_against_the_signature():
    body = {"inputs": [
        {"name": "n", "shape": [2], "datatype": "INT64", "data": [1, 2]},
        {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2.5]},
        {"name": "when", "shape": [2], "datatype": "BYTES", "data": ["2026-01-01", "2026-01-02"]},
    ]}  # fmt: skip
    frame = SPEC.from_v2(body)
    assert list(frame["x"]) == [1.0, 2.5] and len(frame) == 2
    body["inputs"][0]["data"] = [1]
    with pytest.raises(InputError, match="every input needs 2 rows"):
        SPEC.from_v2(body)
    body["inputs"].append({"name": "z", "shape": [2], "datatype": "FP32", "data": [1, 2]})
    with pytest.raises(InputError, match="'z' is not in the model's signature"):
        SPEC.from_v2(body)


def test_tensor_signatures_check_the_shape():
    spec = InputSpec(tensor_dtype="float32", tensor_shape=(-1, 3))
    assert spec.from_rows([[1, 2, 3]]).shape == (1, 3)
    with pytest.raises(InputError, match="shape"):
        spec.from_rows([[1, 2]])


def test_outputs_pass_through_whatever_the_pyfunc_returns():
    assert to_jsonable(np.array([0.25, 0.75])) == [0.25, 0.75]
    assert to_jsonable(np.array(["yes", "no"])) == ["yes", "no"]
    frame = pd.DataFrame({"label": [1, 0], "score": [0.9, 0.2]})
    assert to_jsonable(frame) == [{"label": 1, "score": 0.9}, {"label": 0, "score": 0.2}]
    assert [(t["name"], t["datatype"], t["shape"]) for t in to_v2_outputs(frame)] == [
        ("label", "INT64", [2]), ("score", "FP64", [2])
    ]  # fmt: skip
    assert to_v2_outputs(np.array(["a"]))[0]["datatype"] == "BYTES"


class _Metrics:
    def __init__(self):
        from tollgate.serving.metrics import RouterMetrics

        self.m = RouterMetrics()

    def __getattr__(self, name):
        return getattr(self.m, name)


class _Challenger:
    version = "9"
    path = "/nonexistent/model"


def test_a_full_shadow_queue_drops_and_counts_without_blocking():
    logged: list[dict] = []
    metrics = _Metrics()
    mirror = ShadowMirror(2, logged.append, metrics)  # its worker is not started: nothing drains the queue
    started = time.perf_counter()
    results = [mirror.offer(_Challenger(), "rows", [{"x": i}], {"request_id": str(i)}) for i in range(10)]
    assert time.perf_counter() - started < 0.5  # never waits for the worker
    assert results.count(True) == 2 and mirror.dropped == 8
    assert [r["shadow_status"] for r in logged] == ["dropped"] * 8
    assert metrics.shadow_dropped._value.get() == 8
    mirror.close(timeout=1)
    assert len(logged) == 10 and sum(r["shadow_status"].startswith("lost") for r in logged) == 2


def test_the_shadow_process_predicts_with_the_challengers_own_signature(tmp_path):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from tests.fixtures.serving import TINY_MODEL_CODE, example_rows

    example = pd.DataFrame(example_rows(2))
    path = tmp_path / "challenger"
    mlflow.pyfunc.save_model(
        str(path), python_model=str(TINY_MODEL_CODE), model_config={"output": "label"},
        signature=infer_signature(example, np.array(["yes", "no"])), pip_requirements=["mlflow"],
    )  # fmt: skip
    challenger = type("Challenger", (), {"version": "3", "path": path})()
    logged: list[dict] = []
    mirror = ShadowMirror(10, logged.append, _Metrics())
    mirror.start()
    assert mirror.offer(challenger, "rows", example_rows(2), {"request_id": "a"})
    assert mirror.offer(challenger, "rows", [{"x1": "bad"}], {"request_id": "b"})
    # drains: both answered before the worker stops. close returns once they are; the bound is wide
    # because a niced worker spawning and importing MLflow took over 60 s on a busy 2-core CI machine
    mirror.close(timeout=600)
    rows = {r["request_id"]: r for r in logged}
    assert rows["a"]["shadow_status"] == "ok" and rows["a"]["shadow_version"] == "3"
    assert json.loads(rows["a"]["shadow_output"]) in (
        ["yes", "yes"],
        ["yes", "no"],
        ["no", "yes"],
        ["no", "no"],
    )
    assert rows["b"]["shadow_status"].startswith("error: InputError")


def test_shadow_batches_answer_each_request_as_one_by_one_and_a_bad_request_alone(tmp_path):
    import os

    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from tests.fixtures.serving import TINY_MODEL_CODE, example_rows
    from tollgate.serving.handoff import FrameReader, FrameWriter
    from tollgate.serving.shadow import _STOP, _answer, _Inbox

    example = pd.DataFrame(example_rows(3))
    path = tmp_path / "challenger"
    signature = infer_signature(example, pd.Series([0.5] * 3))
    mlflow.pyfunc.save_model(
        str(path), python_model=str(TINY_MODEL_CODE), signature=signature, pip_requirements=["mlflow"]
    )
    pyfunc = mlflow.pyfunc.load_model(str(path))
    spec = InputSpec.from_pyfunc(pyfunc)
    requests = [(f"r{i}", str(path), "rows", example_rows(1 + i % 3, start=i)) for i in range(7)]

    alone = [_answer(lambda _: (pyfunc, spec), [item])[0] for item in requests]
    together = _answer(lambda _: (pyfunc, spec), requests)
    assert [a[:3] for a in together] == [a[:3] for a in alone]  # same ids, outputs and statuses, in order
    assert all(status == "ok" for _, _, status, _ in together)
    assert len(set(ms for *_, ms in together)) == 1  # one shared predict answered them all

    with_bad = [*requests[:3], ("bad", str(path), "rows", [{"x1": "text"}]), *requests[3:]]
    answers = {a[0]: a for a in _answer(lambda _: (pyfunc, spec), with_bad)}
    assert answers["bad"][2].startswith("error: InputError") and answers["bad"][1] is None
    assert [answers[r[0]][1] for r in requests] == [a[1] for a in alone]  # the others are unaffected

    # through a real pipe, as the router hands them to its worker
    worker_end, router_end = os.pipe()
    writer = FrameWriter(router_end)
    for item in requests:
        writer.send(item)
    writer.send(_STOP)
    writer.send(requests[0])  # after the stop: never part of a batch with what came before it
    inbox = _Inbox(FrameReader(worker_end), batch_size=4, linger_s=0.0)
    assert inbox.next_batch() == requests[:4]
    assert inbox.next_batch() == [*requests[4:], _STOP]  # the stop ends a batch
    assert inbox.next_batch() == [requests[0]]
    os.close(router_end)
    assert inbox.next_batch() == [_STOP]  # the router's end gone reads as a stop
    os.close(worker_end)


def test_the_log_writer_hashes_the_features_and_serialises_the_output_off_the_request(tmp_path):
    import hashlib

    from tollgate.serving.predlog import FEATURES, SERVED, PredictionLog, read_log

    body = {"rows": [{"x1": 1.5, "segment": "a"}], "user_id": "u1"}
    log = PredictionLog(str(tmp_path), flush_s=60)
    log.append({"request_id": "r1", "ts": time.time(), "status": 200, FEATURES: body, SERVED: [0.25, "yes"]})
    log.append({"request_id": "r2", "ts": time.time(), "status": 422, FEATURES: body})
    assert log.flush() == 2
    logged = read_log(str(tmp_path)).set_index("request_id")
    # the same hash the request path used to compute: sha256 of the sorted-keys JSON of the request body
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    assert list(logged.features_sha256) == [expected, expected]
    assert json.loads(logged.loc["r1", "served_output"]) == [0.25, "yes"]
    assert pd.isna(logged.loc["r2", "served_output"])
    assert not any(c.startswith("_") for c in logged.columns)


def test_metric_children_are_looked_up_once_and_count_under_the_same_names():
    from prometheus_client.parser import text_string_to_metric_families

    from tollgate.serving.metrics import RouterMetrics

    metrics = RouterMetrics()
    first = metrics.served("champion", "3")
    assert metrics.served("champion", "3") is first and metrics.served("challenger", "3") is not first
    for _ in range(3):
        latency, served = metrics.served("champion", "3")
        latency.observe(0.001)
        served.inc()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    counts = {(s.labels["variant"], s.labels["version"], s.labels["status"]): s.value
              for s in families["tollgate_router_requests"].samples if s.name.endswith("_total")}  # fmt: skip
    assert counts == {("champion", "3", "200"): 3, ("challenger", "3", "200"): 0}
    histogram = [s for s in families["tollgate_router_request_seconds"].samples if s.name.endswith("_count")]
    assert sorted((s.labels["variant"], s.value) for s in histogram) == [("challenger", 0), ("champion", 3)]


def test_pruning_keeps_what_a_table_uses_and_other_live_replicas_copies(tmp_path):
    import os
    import subprocess
    import sys

    from tollgate.serving.loader import prune_cache

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    folder = tmp_path / "m"
    mine = [folder / f"{v}-p{os.getpid()}-{i:08x}" for i, v in enumerate("1234")]
    other_live = folder / f"5-p{os.getppid()}-0000000a"  # another replica sharing the folder
    other_dead = folder / f"6-p{dead_pid}-0000000b"  # left by a router that is gone
    foreign = folder / "notes"  # not a copy this loader named
    for path in [*mine, other_live, other_dead, foreign]:
        (path / "model").mkdir(parents=True)
    removed = prune_cache(tmp_path, "m", keep={mine[2], mine[3]})
    assert sorted(p.name for p in removed) == sorted(p.name for p in (mine[0], mine[1], other_dead))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (mine[2], mine[3], other_live, foreign)
    )
    assert prune_cache(tmp_path, "missing", keep=set()) == []


def test_the_shadow_mirror_reports_the_model_copies_it_still_needs():
    mirror = ShadowMirror(5, lambda row: None, _Metrics())  # not started: offers stay pending
    assert mirror.paths_in_flight() == set()
    mirror.offer(_Challenger(), "rows", [{"x": 1}], {"request_id": "p1"})
    from pathlib import Path

    assert mirror.paths_in_flight() == {Path(_Challenger.path)}
    mirror.close(timeout=1)  # nothing pending any more: nothing to keep
    assert mirror.paths_in_flight() == set()


def test_the_shadow_worker_runs_on_the_cpus_it_is_given():
    """TOLLGATE_ROUTER_SHADOW_CPUS: the challenger's work on a core of its own, off the router's."""
    import os

    cpu = max(os.sched_getaffinity(0))
    mirror = ShadowMirror(10, [].append, _Metrics(), cpus=frozenset({cpu}))
    mirror.start()
    try:
        deadline = time.monotonic() + 300  # the spawned worker pins itself once started
        while os.sched_getaffinity(mirror._process.pid) != {cpu}:
            assert time.monotonic() < deadline, os.sched_getaffinity(mirror._process.pid)
            time.sleep(0.2)
    finally:
        mirror.close(timeout=60)
    assert os.sched_getaffinity(0) != {cpu} or os.cpu_count() == 1  # the router itself is not pinned


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("", set()), ("1", {1}), ("0,2-3", {0, 2, 3}), (" 4 , 6-6", {4, 6}), ("a", None), ("3-1", None)],
)
def test_shadow_cpus_are_read_as_taskset_lists_and_a_wrong_one_names_the_variable(text, cpus):
    from tollgate.serving.settings import parse_cpus

    if cpus is None:
        with pytest.raises(ValueError, match=r"TOLLGATE_ROUTER_SHADOW_CPUS=.*write e\.g\. 1 or 2-3,6"):
            parse_cpus(text, "TOLLGATE_ROUTER_SHADOW_CPUS")
    else:
        assert parse_cpus(text, "TOLLGATE_ROUTER_SHADOW_CPUS") == cpus


def test_the_hand_off_never_blocks_and_delivers_everything_in_order_once_the_reader_catches_up():
    """More than a pipe holds (64 KiB here): ``send`` returns at once, the rest waits in the outbox, and
    ``pump`` (what the router's results reader calls when the worker answers) writes it as room appears."""
    import os

    from tollgate.serving.handoff import FrameReader, FrameWriter

    worker_end, router_end = os.pipe()
    writer, reader = FrameWriter(router_end), FrameReader(worker_end)
    items = [(f"r{i}", "x" * 1000) for i in range(300)]  # about 300 KB of frames
    started = time.perf_counter()
    for item in items:
        writer.send(item)
    assert time.perf_counter() - started < 0.5 and writer.backlog > 0  # it did not wait for the reader
    received: list = []
    while len(received) < len(items):
        got = reader.read(1.0)
        assert got, "the reader starved with items still waiting"
        received += got
        writer.pump()
    assert received == items and writer.backlog == 0
    os.close(router_end)
    assert reader.read(1.0) == [] and reader.closed
    os.close(worker_end)

"""The shadow and canary stages' work against a real router process and a real MLflow server: the
stage is set on the router, replayed traffic flows, the triggerer's counter wait fires, the stage's
rows are read back from the prediction log and judged; a FAIL rolls the rollout back and the teardown
leaves the champion alone. Tiny signed models (tests/fixtures/tiny_pyfunc.py) keep it to seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.serving import RouterProcess, ServingModels
from tollgate.config import default_for
from tollgate.evaluation.rollout_plan import RolloutPlan
from tollgate.evaluation.rollout_stages import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    analyse_stage,
    end_rollout,
    rollback,
    rollout_gate,
    start_stage,
)
from tollgate.evaluation.rollout_wait import DEADLINE, ENDED, READY, RolloutCountersTrigger, settle_inline
from tollgate.extensions import TaskType
from tollgate.serving.admin_client import RouterAdmin

pytestmark = pytest.mark.integration
MODEL = "tiny-rollout"


@pytest.fixture(scope="module")
def world(mlflow_server, tmp_path_factory):
    models = ServingModels(mlflow_server.url, tmp_path_factory.mktemp("rollout-models"))
    champion = models.register(MODEL)
    models.set_alias(MODEL, "champion", champion)
    versions = {
        "same": models.register(MODEL, approve=False),
        "slow": models.register(MODEL, {"sleep_ms": 25}, approve=False),
    }
    router = RouterProcess(tmp_path_factory.mktemp("rollout-router"), models, MODEL)
    router.start()
    router.wait_for(lambda s: s.get("ready"), "the champion served", timeout=120)
    rng = np.random.default_rng(0)
    n = 400
    rows = pd.DataFrame(
        {"x1": rng.normal(0, 1, n), "x2": rng.normal(0, 1, n), "segment": rng.choice(["a", "b"], n),
         "count": rng.integers(1, 5, n)}
    )  # fmt: skip
    proba = 1 / (1 + np.exp(-(rows["x1"] - rows["x2"] + np.where(rows["segment"] == "b", 0.5, 0.0))))
    rows["clicked"] = (rng.uniform(size=n) < proba).astype(int)
    plan = replace(RolloutPlan.from_json(default_for("tollgate_rollout")), router_url=router.url, poll_s=0.3)
    yield {"router": router, "versions": versions, "rows": rows, "plan": plan,
           "admin": RouterAdmin(router.url, router.token)}  # fmt: skip
    router.stop()


def wait(started: dict) -> dict:
    async def first() -> dict:
        async for event in RolloutCountersTrigger(started, started["poll_s"]).run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def run_stage(world, stage: str, version: str, rollout_id: str, plan: RolloutPlan | None = None) -> dict:
    plan = plan or world["plan"]
    started = start_stage(
        plan, stage, rollout_id, version, "test", world["rows"], "clicked", world["router"].storage_root,
        admin=world["admin"],
    )  # fmt: skip
    event = wait(started)
    return analyse_stage(plan, started, event, TaskType.BINARY, world["router"].storage_root, world["admin"])


def champion_only(world) -> bool:
    status = world["router"].status()
    return status["variants"]["challenger"] is None and status["rollout"]["mode"] == "off"


def test_a_challenger_like_the_champion_passes_shadow_and_canary_and_the_teardown_ends_it(world):
    rollout_id = f"pass-{time.time_ns()}"
    shadow = run_stage(world, "shadow", world["versions"]["same"], rollout_id)
    canary = run_stage(world, "canary_25", world["versions"]["same"], rollout_id)

    assert shadow["verdict"] == PASS, shadow["reasons"]
    assert shadow["wait"] == READY and shadow["labelled_pairs"] >= 200
    assert {s["name"] for s in shadow["statistics"]} >= {"delta_auc", "delta_log_loss"}
    assert canary["verdict"] == PASS, canary["reasons"]
    assert canary["samples"]["challenger"] >= 30 and canary["srm_p_value"] > 0.001
    assert all(s["low"] <= s["estimate"] <= s["high"] and s["n"] > 0 for s in canary["statistics"])
    gate = rollout_gate({"shadow": shadow, "canary_1": canary, "canary_5": canary, "canary_25": canary}, {})
    assert gate["passed"] and len(gate["sha256"]) == 64

    assert not champion_only(world)
    assert end_rollout(world["plan"], rollout_id, world["admin"])["ended"]
    assert champion_only(world)


def test_a_slower_model_fails_the_canary_on_latency_and_is_rolled_back(world):
    rollout_id = f"slow-{time.time_ns()}"
    record = run_stage(world, "canary_25", world["versions"]["slow"], rollout_id)

    assert record["verdict"] == FAIL, record
    assert any("latency_shift_ms" in r or "p99_ratio" in r for r in record["reasons"])
    rollback(world["plan"], record, world["admin"])
    assert champion_only(world)
    assert "canary_25 FAIL" in world["router"].status()["rollout"]["aborted_reason"]


def test_no_traffic_by_the_deadline_is_inconclusive_never_pass(world):
    plan = replace(world["plan"], replay=False, stage_deadline_s=2.0)
    rollout_id = f"quiet-{time.time_ns()}"
    record = run_stage(world, "canary_5", world["versions"]["same"], rollout_id, plan)

    assert record["wait"] == DEADLINE and record["verdict"] == INCONCLUSIVE
    assert any("too few samples" in r for r in record["reasons"])
    gate = rollout_gate({"canary_5": record}, {"canary_5": "Extend"})
    assert not gate["passed"] and any("canary_5 INCONCLUSIVE" in r for r in gate["reasons"])
    end_rollout(plan, rollout_id, world["admin"])
    assert champion_only(world)


def test_a_rollout_ended_under_the_wait_is_a_fail(world):
    plan = replace(world["plan"], replay=False, stage_deadline_s=30.0)
    started = start_stage(plan, "canary_5", f"ended-{time.time_ns()}", world["versions"]["same"], "test",
                          admin=world["admin"])  # fmt: skip
    world["admin"].abort("guardrail-like abort from the test")
    event = wait(started)
    record = analyse_stage(
        plan, started, event, TaskType.BINARY, world["router"].storage_root, world["admin"]
    )
    assert event["outcome"] == ENDED and record["verdict"] == FAIL
    assert "guardrail-like abort" in record["reasons"][0]
    assert champion_only(world)


def test_a_replayed_stage_is_settled_in_the_task_and_a_quiet_one_is_left_to_the_trigger(world):
    """After its own replay a stage's counters settle within seconds: the task reads them itself instead of
    deferring. Without traffic the same read gives up after its bound (the task then defers)."""
    rollout_id = f"inline-{time.time_ns()}"
    started = start_stage(
        world["plan"], "canary_25", rollout_id, world["versions"]["same"], "test", world["rows"], "clicked",
        world["router"].storage_root, admin=world["admin"],
    )  # fmt: skip
    event = settle_inline(started, 10.0, admin=world["admin"])
    assert event is not None and event["outcome"] == READY, event
    assert (
        event["progress"]["challenger"] >= 30
        and event["progress"]["log_rows"] >= event["progress"]["requests"]
    )
    record = analyse_stage(
        world["plan"], started, event, TaskType.BINARY, world["router"].storage_root, world["admin"]
    )
    assert record["verdict"] == PASS and record["wait"] == READY, record["reasons"]

    quiet = replace(world["plan"], replay=False, stage_deadline_s=60.0)
    quiet_id = f"quiet-inline-{time.time_ns()}"
    started = start_stage(
        quiet, "canary_5", quiet_id, world["versions"]["same"], "test", admin=world["admin"]
    )
    began = time.monotonic()
    assert settle_inline(started, 1.0, admin=world["admin"]) is None
    assert time.monotonic() - began < 5
    end_rollout(quiet, started["rollout_id"], world["admin"])
    assert champion_only(world)


def test_a_deferred_stage_s_trigger_holds_its_event_until_fire_after(world):
    """A trigger never fires sooner than ``fire_after`` (the operator sets it MIN_DEFERRAL_S after deferring:
    Airflow 3.3 fails a task resumed before the scheduler saw its deferring try exit)."""
    plan = replace(world["plan"], replay=False, stage_deadline_s=30.0)
    started = start_stage(plan, "canary_5", f"held-{time.time_ns()}", world["versions"]["same"], "test",
                          admin=world["admin"])  # fmt: skip
    world["admin"].abort("ended at once: the trigger's outcome is known at its first look")
    began = time.time()
    event = wait({**started, "fire_after": began + 2.0})
    assert event["outcome"] == ENDED and time.time() - began >= 2.0
    assert event["at"] < began + 1.5  # decided at the first look, only held back

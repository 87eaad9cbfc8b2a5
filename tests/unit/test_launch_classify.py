"""Classification of failed attempts, retry budgets, the attempt ledger and the job description."""

from __future__ import annotations

import json

import pytest

from tollgate.launch import ledger as ledgers
from tollgate.launch.budget import Budgets, Tally, decide, wants_on_demand
from tollgate.launch.classify import Classification, Outcome, classify_exit, classify_pod
from tollgate.launch.job import Resources, TrainingJob, sanitize_label_value, training_run_id
from tollgate.launch.ledger import AttemptLedger
from tollgate.launch.local import Interruption
from tollgate.launch.plan import LaunchPlan

pytestmark = pytest.mark.unit


# ---- local exit status -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exit_code", "interrupted", "outcome", "retryable"),
    [
        (0, False, Outcome.SUCCEEDED, True),
        (75, True, Outcome.PREEMPTED, True),
        (75, False, Outcome.PREEMPTED, True),  # a real spot notice reached the trainer
        (-9, True, Outcome.PREEMPTED, True),  # injected SIGKILL: capacity lost without notice
        (-9, False, Outcome.FAILED, True),  # nobody interrupted it: e.g. the OOM killer
        (2, False, Outcome.FAILED, False),  # bad input: a retry cannot help
        (1, False, Outcome.FAILED, True),
        (1, True, Outcome.FAILED, True),  # a crash during an interruption is still a crash
    ],
)
def test_classify_exit(exit_code, interrupted, outcome, retryable):
    result = classify_exit(exit_code, interrupted=interrupted)
    assert result.outcome == outcome
    assert result.retryable == retryable
    assert result.exit_code == exit_code


def test_classify_exit_names_the_signal():
    assert "SIGKILL" in classify_exit(-9, interrupted=True).reason
    assert "out of memory" in classify_exit(-9).reason


# ---- pod status (manifests as the API returns them; no cluster exists here) ---------------------
def _pod(phase="Failed", reason=None, exit_code=None, term_reason=None, conditions=(), deleting=False):
    status = {"phase": phase, "conditions": list(conditions)}
    if reason:
        status["reason"] = reason
        status["message"] = f"The node was {reason.lower()}"
    if exit_code is not None:
        terminated = {"exitCode": exit_code}
        if term_reason:
            terminated["reason"] = term_reason
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
    meta = {"name": "tollgate-train-abc", "deletionTimestamp": "2026-01-01T00:00:00Z" if deleting else None}
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    ("pod", "outcome"),
    [
        (None, Outcome.PREEMPTED),  # pod not found: gone with its node
        (_pod("Succeeded", exit_code=0, term_reason="Completed"), Outcome.SUCCEEDED),
        (_pod(exit_code=75, term_reason="Error"), Outcome.PREEMPTED),
        (_pod(reason="Evicted"), Outcome.PREEMPTED),
        (_pod(reason="NodeLost", phase="Unknown"), Outcome.PREEMPTED),
        (_pod(reason="Shutdown"), Outcome.PREEMPTED),
        (
            _pod(
                exit_code=137,
                conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}],
            ),
            Outcome.PREEMPTED,
        ),
        (_pod(exit_code=143, deleting=True), Outcome.PREEMPTED),
        (
            _pod(
                "Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes available",
                    }
                ],
            ),
            Outcome.PREEMPTED,
        ),
        (_pod(exit_code=137, term_reason="OOMKilled"), Outcome.FAILED),
        (_pod(exit_code=2, term_reason="Error"), Outcome.FAILED),
        (_pod(exit_code=1, term_reason="Error"), Outcome.FAILED),
        (_pod(exit_code=137, term_reason="Error"), Outcome.FAILED),  # SIGKILL with no disruption: not spot
    ],
)
def test_classify_pod(pod, outcome):
    assert classify_pod(pod, container="trainer").outcome == outcome


def test_oom_beats_a_deleting_pod_and_bad_input_is_not_retryable():
    assert classify_pod(_pod(exit_code=137, term_reason="OOMKilled", deleting=True), "trainer").outcome == (
        Outcome.FAILED
    )
    assert classify_pod(_pod(exit_code=2), "trainer").retryable is False
    assert "memory" in classify_pod(_pod(exit_code=137, term_reason="OOMKilled"), "trainer").reason


# ---- budgets -----------------------------------------------------------------------------------
PREEMPTED = Classification(Outcome.PREEMPTED, "trainer exited 75", 75)
FAILED = Classification(Outcome.FAILED, "trainer failed with exit code 1", 1)
BAD_INPUT = classify_exit(2)


def test_preemptions_retry_until_their_budget_is_spent():
    budgets = Budgets(preemptions=2, failures=1)
    assert decide(PREEMPTED, Tally(1, 1, 0), budgets).action == "retry"
    assert decide(PREEMPTED, Tally(2, 2, 0), budgets).action == "retry"
    final = decide(PREEMPTED, Tally(3, 3, 0), budgets)
    assert final.action == "fail"
    assert "preemption budget exhausted" in final.message.lower()
    assert "preemption_budget" in final.message  # names the fix


def test_failures_have_their_own_small_budget():
    budgets = Budgets(preemptions=5, failures=1)
    assert decide(FAILED, Tally(1, 0, 1), budgets).action == "retry"
    final = decide(FAILED, Tally(4, 2, 2), budgets)  # preemptions left do not matter
    assert final.action == "fail"
    assert "not a preemption" in final.message


def test_bad_input_fails_at_once():
    decision = decide(BAD_INPUT, Tally(1, 0, 1), Budgets(preemptions=5, failures=3))
    assert decision.action == "fail"
    assert "bad input" in decision.message


def test_last_attempt_asks_for_on_demand():
    budgets = Budgets(preemptions=2)
    assert not wants_on_demand(1, budgets)
    assert wants_on_demand(2, budgets)
    assert not wants_on_demand(2, Budgets(preemptions=2, on_demand_last_attempt=False))


# ---- ledger ------------------------------------------------------------------------------------
def test_ledger_tallies_a_series_and_counts_a_lost_attempt_as_preemption(tmp_path):
    uri = str(tmp_path / "ckpt")
    led = ledgers.load(uri, "run-1")
    first = led.begin(try_number=1, series=1, backend="local", capacity="spot", instance_type="m5.xlarge")
    first.finish(PREEMPTED, last_step=20)
    led.begin(try_number=2, series=1, backend="local", capacity="spot", instance_type="m5.xlarge")
    ledgers.save(uri, led)  # try 2 never reports: its worker died with it

    led = ledgers.load(uri, "run-1")
    third = led.begin(try_number=3, series=1, backend="local", capacity="spot", instance_type="m5.xlarge")
    assert [a.outcome for a in led.attempts] == ["preempted", "lost", "running"]
    assert led.tally(1) == Tally(attempts=2, preemptions=2, failures=0)
    assert third.attempt == 3
    # re-entering the same try (after a deferral) returns the same record
    assert led.begin(try_number=3, series=1, backend="local", capacity="spot", instance_type="x") is third
    third.finish(FAILED)
    assert led.tally(1) == Tally(attempts=3, preemptions=2, failures=1)
    # after the task is cleared, a new series starts with fresh budgets
    led.begin(try_number=4, series=4, backend="local", capacity="spot", instance_type="m5.xlarge")
    assert led.tally(4) == Tally()


def test_ledger_refuses_another_runs_file(tmp_path):
    uri = str(tmp_path / "ckpt")
    ledgers.save(uri, AttemptLedger("run-1"))
    assert json.loads((tmp_path / "ckpt" / "attempts.json").read_text())["training_run_id"] == "run-1"
    with pytest.raises(ValueError, match="belongs to training run 'run-1'"):
        ledgers.load(uri, "run-2")


# ---- job description ---------------------------------------------------------------------------
def test_training_run_id_is_stable_label_safe_and_unique():
    run_id = "manual__2026-11-27T17:53:33.530998+00:00"
    first = training_run_id("train_model", run_id)
    assert first == training_run_id("train_model", run_id)
    assert first != training_run_id("train_model", run_id + "x")
    assert len(first) <= 63
    assert first == sanitize_label_value(first)
    assert first.startswith("train-model-manual-2026-11-27t17-53-33")
    long_id = training_run_id("d" * 200, "asset_triggered__" + "9" * 200)
    assert len(long_id) <= 63 and long_id == sanitize_label_value(long_id)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("manual__2026-11-27T17:53:33+00:00", "manual__2026-11-27T17-53-33-00-00"),
        ("--x--", "x"),
        ("ok.value_1", "ok.value_1"),
    ],
)
def test_sanitize_label_value(value, expected):
    assert sanitize_label_value(value) == expected


def test_long_label_values_keep_a_hash():
    a, b = sanitize_label_value("a" * 100 + "1"), sanitize_label_value("a" * 100 + "2")
    assert len(a) <= 63 and len(b) <= 63 and a != b


def _job(**changes) -> TrainingJob:
    values = dict(
        training_run_id="run-1",
        image="registry/tollgate-training:1",
        checkpoint_uri="s3://bucket/checkpoints/run-1",
        output_uri="s3://bucket/models/run-1",
        mlflow_uri="http://mlflow:5000",
        trainer_args={"data-rev": "abc123", "epochs": 2, "lr": 0.01},
        resources=Resources(cpu="4", memory="8Gi", gpu=1),
        grace_seconds=30,
    )
    values.update(changes)
    return TrainingJob(**values)


def test_job_renders_trainer_arguments_and_round_trips():
    job = _job()
    assert job.argv() == [
        "--training-run-id", "run-1", "--checkpoint-uri", "s3://bucket/checkpoints/run-1",
        "--output-uri", "s3://bucket/models/run-1", "--grace-seconds", "30",
        "--mlflow-uri", "http://mlflow:5000", "--data-rev", "abc123", "--epochs", "2", "--lr", "0.01",
    ]  # fmt: skip
    assert job.command_line()[:3] == ["python", "-m", "tollgate.training"]
    assert job.pod_grace_seconds == 40
    assert TrainingJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_job_rejects_bad_values_with_the_fix():
    with pytest.raises(ValueError, match="kebab-case"):
        _job(trainer_args={"--epochs": 2})
    with pytest.raises(ValueError, match="checkpoint_uri is empty"):
        _job(checkpoint_uri="")
    with pytest.raises(ValueError, match="tollgate_training_resources"):
        Resources.parse('{"cpus": 2}')
    assert Resources.parse('{"cpu": "1", "memory": "2Gi", "gpu": 2}') == Resources("1", "2Gi", 2)


def test_plan_round_trips_and_limits_injection_to_the_first_attempts():
    plan = LaunchPlan(
        job=_job(),
        budgets=Budgets(preemptions=3, failures=1),
        interruption=Interruption(at_step=5, sigkill=True),
        interrupt_attempts=2,
    )
    again = LaunchPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.interruption_for(0) == again.interruption_for(1) == Interruption(at_step=5, sigkill=True)
    assert again.interruption_for(2) is None
    with pytest.raises(ValueError, match="tollgate_launch_backend"):
        LaunchPlan(job=_job(), backend="slurm")


@pytest.mark.parametrize(
    ("mode", "value", "sigkill", "expected"),
    [
        ("none", 20, False, None),
        ("sigterm_at_step", 20, False, Interruption(at_step=20)),
        ("sigterm_after_seconds", 7.5, True, Interruption(after_seconds=7.5, sigkill=True)),
    ],
)
def test_interruption_from_params(mode, value, sigkill, expected):
    assert Interruption.from_params(mode, value, sigkill) == expected


def test_interruption_from_params_rejects_unknown_modes():
    with pytest.raises(ValueError, match="sigterm_at_step"):
        Interruption.from_params("sigint", 3)

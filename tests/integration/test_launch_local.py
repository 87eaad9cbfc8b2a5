"""The local launcher with the real trainer as a real process, interrupted by real signals.

Tiny data (3,000 rows, 150 steps, checkpoints every 10). Steps sleep 20 ms (TOLLGATE_STEP_DELAY_SECONDS)
so an injected signal lands near the step that triggered it; the tests read where each attempt really
stopped from its own output. MLflow tracking is off here. SIGTERM at step N -> preempted -> the retry
resumes with nothing redone is tested through the DAG (tests/integration/test_train_dag.py), which drives
this launcher with Airflow's own retries.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tollgate.launch.classify import Outcome, classify_exit
from tollgate.launch.job import TrainingJob
from tollgate.launch.local import Interruption, LocalLauncher, LocalRunResult
from tollgate.training.synthetic import write_parquet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

STEPS, EVERY = 150, 10


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(write_parquet(tmp_path_factory.mktemp("data") / "events.parquet", 3000, seed=3))


def _job(run: Path, data_file: Path | str, **changes) -> TrainingJob:
    values = dict(
        training_run_id=run.name,
        image="unused-locally",
        checkpoint_uri=str(run / "checkpoints"),
        output_uri=str(run / "model"),
        trainer_args={
            "data-file": str(data_file),
            "epochs": 2,
            "batch-size": 32,
            "checkpoint-every": EVERY,
            "seed": 7,
            "mlflow-uri": "",
        },
        env={"TOLLGATE_STEP_DELAY_SECONDS": "0.02"},
        grace_seconds=30,
    )
    values.update(changes)
    return TrainingJob(**values)


def _run(job: TrainingJob, interruption: Interruption | None = None) -> tuple[LocalRunResult, list[str]]:
    lines: list[str] = []
    return LocalLauncher(job, log=lines.append).run(interruption), lines


def _result(job: TrainingJob) -> dict:
    return json.loads((Path(job.output_uri) / "result.json").read_text())


def test_sigkill_loses_at_most_one_checkpoint_interval(tmp_path, data):
    job = _job(tmp_path / "sigkill", data)
    first, lines = _run(job, Interruption(at_step=25, sigkill=True))
    assert first.exit_code == -9, "\n".join(lines[-20:])
    assert first.preempted_at_step is None  # no notice, no final checkpoint
    assert classify_exit(first.exit_code, interrupted=first.interrupted).outcome == Outcome.PREEMPTED

    second, lines = _run(job)
    assert second.exit_code == 0, "\n".join(lines[-20:])
    assert any(line.startswith("TOLLGATE_PROGRESS") for line in lines)  # the output was streamed
    assert second.last_step == STEPS
    assert second.resumed_from_step is not None and second.resumed_from_step % EVERY == 0
    lost = first.last_step - second.resumed_from_step
    assert 0 <= lost <= EVERY
    assert _result(job)["steps_redone"] == lost


def test_bad_input_is_a_failure_that_is_not_retried(tmp_path):
    job = _job(tmp_path / "bad", tmp_path / "missing.parquet")
    result, lines = _run(job)
    classification = classify_exit(result.exit_code, interrupted=result.interrupted)
    assert result.exit_code == 2
    assert classification.outcome == Outcome.FAILED and not classification.retryable
    assert any("missing.parquet" in line and "does not exist" in line for line in lines)


def test_stop_behaves_like_the_kubelet(tmp_path, data):
    """Airflow's on_kill: SIGTERM to the group; the trainer checkpoints and exits within the grace."""
    job = _job(tmp_path / "stop", data)
    launcher = LocalLauncher(job, log=lambda line: None)
    outcome: list[LocalRunResult] = []
    runner = threading.Thread(target=lambda: outcome.append(launcher.run()))
    runner.start()
    deadline = time.monotonic() + 300
    while not (Path(job.checkpoint_uri) / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    launcher.stop("test")
    runner.join(120)
    (result,) = outcome
    assert result.stopped and not result.escalated
    assert result.exit_code == 75
    assert result.preempted_at_step is not None


HUNG_TRAINER = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a trainer that never honours the notice
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    open(sys.argv[1], "w").write(str(child.pid))
    print("TOLLGATE_RESUMED from_step=0 checkpoint=none", flush=True)
    for step in range(1, 100000):
        print(f"TOLLGATE_PROGRESS step={step} epoch=0", flush=True)
        time.sleep(0.05)
    """
)


def test_grace_runs_out_then_sigkill_takes_the_whole_group(tmp_path):
    """A stand-in for a hung trainer (the real one always exits): SIGTERM is ignored, so SIGKILL follows
    after the grace period, and it reaches the trainer's own children too (its process group)."""
    script = tmp_path / "hung.py"
    script.write_text(HUNG_TRAINER)
    pid_file = tmp_path / "grandchild.pid"
    job = TrainingJob(
        training_run_id="hung",
        image="unused",
        checkpoint_uri=str(tmp_path / "c"),
        output_uri=str(tmp_path / "m"),
        command=(sys.executable, str(script), str(pid_file)),
        grace_seconds=1,
        grace_margin_seconds=1,
    )
    started = time.monotonic()
    result, lines = _run(job, Interruption(at_step=5))
    assert result.escalated and result.exit_code == -9
    assert [name for _, name in result.signals] == ["SIGTERM", "SIGKILL"]
    (term_at, _), (kill_at, _) = result.signals
    assert kill_at - term_at >= 2.0  # grace 1 s + margin 1 s
    assert "Grace period over: SIGKILL" in lines
    assert time.monotonic() - started < 120
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild), "the trainer's child survived the group SIGKILL"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by init) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_trainer_never_inherits_the_workers_secrets(tmp_path, monkeypatch):
    """The worker's secrets (as `make up` gives them to every Airflow process) do not reach the trainer
    process; its own settings, MLflow and object-storage access do."""
    secrets = {
        "AIRFLOW_CONN_TOLLGATE_SIGNING": '{"extra": {"private_key_path": "/keys/signing.key"}}',
        "AIRFLOW_CONN_TOLLGATE_DECISION": '{"extra": {"private_key_path": "/keys/decision.key"}}',
        "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-value",
        "AIRFLOW__CORE__FERNET_KEY": "fernet-key-value",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////airflow.db",
    }
    needed = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    for name, value in {**secrets, **needed}.items():
        monkeypatch.setenv(name, value)
    seen = tmp_path / "env.json"
    script = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
    job = TrainingJob(
        training_run_id="env",
        image="unused",
        checkpoint_uri=str(tmp_path / "c"),
        output_uri=str(tmp_path / "m"),
        command=(sys.executable, "-c", script, str(seen)),
        env={"TOLLGATE_STEP_DELAY_SECONDS": "0"},
    )
    result, _ = _run(job)
    assert result.exit_code == 0
    env = json.loads(seen.read_text())
    assert not [name for name in env if name in secrets or name.startswith("AIRFLOW")]
    assert not [value for value in env.values() if value in secrets.values()]
    assert {k: env.get(k) for k in needed} == needed
    assert env["TOLLGATE_STEP_DELAY_SECONDS"] == "0" and env["PATH"] == os.environ["PATH"]

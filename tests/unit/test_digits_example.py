"""The digits example on its own parts: its trainer honours the contract (bad input exits 2, SIGTERM
checkpoints and exits 75, a retry resumes to exactly the weights of an uninterrupted run) and its
multiclass metrics and gate judge the way an approver reads them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import torch

from tollgate import extensions
from tollgate.evaluation.offline_gate import decide, gate_metrics
from tollgate.training.testing import child_env
from tollgate_torch import EXIT_BAD_INPUT, EXIT_PREEMPTED

pytestmark = pytest.mark.unit

TRAIN = [sys.executable, "-m", "tollgate_examples.digits.train"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Two days of scans from the example's own simulated upstream, as one parquet file."""
    from tollgate_examples.digits.dataset import generate

    frame = pd.concat([generate(date(2024, 3, d), 300, seed=7) for d in (1, 2)], ignore_index=True)
    path = tmp_path_factory.mktemp("digits") / "scans.parquet"
    frame.to_parquet(path, index=False)
    return path


def _args(tmp: Path, scans: Path, run: str) -> list[str]:
    return [
        *("--data-file", str(scans), "--training-run-id", run),
        *("--checkpoint-uri", str(tmp / run / "ckpt"), "--output-uri", str(tmp / run / "out")),
        *("--epochs", "2", "--batch-size", "32", "--lr", "0.01", "--channels", "8"),
        *("--checkpoint-every", "5", "--mlflow-uri", ""),
    ]


def _train(args: list[str], sigterm_at_step: int | None = None) -> tuple[int, str]:
    env = child_env({"TOLLGATE_STEP_DELAY_SECONDS": "0.02"} if sigterm_at_step else {})
    proc = subprocess.Popen(
        [*TRAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if sigterm_at_step and line.startswith(f"TOLLGATE_PROGRESS step={sigterm_at_step} "):
            proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read() if proc.stderr else ""
    return proc.wait(timeout=120), "".join(lines) + err


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)


def test_preempted_trainer_resumes_to_the_exact_weights_of_an_uninterrupted_run(tmp_path, scans):
    rc, log = _train(_args(tmp_path, scans, "straight"))
    assert rc == 0, log
    rc, log = _train(_args(tmp_path, scans, "spot"), sigterm_at_step=12)
    assert rc == EXIT_PREEMPTED, log
    # the signal is sent on reading step 12's line; a busy machine may let the loop finish one more step
    stopped = re.search(r"TOLLGATE_PREEMPTED step=(\d+)", log)
    assert stopped and int(stopped[1]) in (12, 13), log
    assert not (tmp_path / "spot" / "out" / "result.json").exists()
    step = int(stopped[1])
    rc, log = _train(_args(tmp_path, scans, "spot"))
    assert rc == 0, log
    assert f"TOLLGATE_RESUMED from_step={step} checkpoint=ckpt-{step:08d}.pt" in log

    straight, resumed = _weights(tmp_path / "straight" / "out"), _weights(tmp_path / "spot" / "out")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    result = json.loads((tmp_path / "spot" / "out" / "result.json").read_text())
    assert result["resumed_from"] == "ckpt-00000012.pt" and result["steps"] == 30  # 480 rows / 32 x 2
    straight_result = json.loads((tmp_path / "straight" / "out" / "result.json").read_text())
    assert result["metrics"] == straight_result["metrics"]  # the same holdout numbers, to the last bit
    assert set(result["metrics"]) == {"accuracy", "macro_f1", "log_loss"}
    assert result["metrics"]["accuracy"] > 0.2  # 30 steps already beat guessing (0.1) by far


def test_bad_input_exits_2_naming_the_fix(tmp_path, scans):
    rc, log = _train([*_args(tmp_path, scans, "bad"), "--epochs", "zero"])
    assert rc == EXIT_BAD_INPUT and "--epochs must be a int, got 'zero'" in log
    rc, log = _train(
        ["--training-run-id", "x", "--checkpoint-uri", str(tmp_path), "--output-uri", str(tmp_path)]
    )
    assert rc == EXIT_BAD_INPUT and "no dataset given: pass --data-repo and --data-rev, or --data-file" in log


def test_the_multiclass_gate_uses_accuracy_macro_f1_and_log_loss():
    digits = extensions.load("digits")
    good = {"accuracy": 0.93, "macro_f1": 0.92, "log_loss": 0.25}  # bounds 0.75 / 0.75 / 1.0
    assert decide(good, None, digits.gate).passed
    worse = decide({**good, "macro_f1": 0.86}, {**good, "macro_f1": 0.95}, digits.gate)
    assert worse.reasons == ["macro f1 0.8600 is 0.0900 below the champion's 0.9500 (allowed drop 0.0200)"]
    guess = decide({"accuracy": 0.1, "macro_f1": 0.02, "log_loss": 2.3}, None, digits.gate)
    assert not guess.passed and len(guess.reasons) == 3
    # The Variable overrides a bound per metric; a click-through key is refused for this example.
    stricter = gate_metrics(digits, '{"accuracy": {"bound": 0.95}}')
    assert stricter.rule("accuracy").bound == 0.95 and stricter.rule("macro_f1").bound == 0.75
    assert not decide(good, None, stricter).passed
    with pytest.raises(ValueError, match=r"unknown metrics \['auc'\]"):
        gate_metrics(digits, '{"auc": {"bound": 0.7}}')
    # One Variable for several examples: per example, and the click-through flat keys leave digits alone.
    both = '{"digits": {"macro_f1": {"max_regression": 0.2}}, "ctr": {"auc": {"bound": 0.7}}}'
    assert gate_metrics(digits, both).rule("macro_f1").max_regression == 0.2
    assert gate_metrics(extensions.load("ctr"), both).rule("auc").bound == 0.7
    said = []
    assert gate_metrics(digits, '{"max_auc_drop": 0.05}', log=said.append) == digits.gate
    assert "do not apply to example digits" in said[0]
    with pytest.raises(ValueError, match="unknown offline gate thresholds"):
        gate_metrics(digits, '{"min_acu": 0.7}')


def test_metrics_match_what_they_mean():
    from tollgate_examples.digits.model import evaluate

    labels = [0, 1, 2, 2]
    sure = torch.eye(10)[labels].numpy()
    perfect = evaluate(labels, sure)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0 and perfect["log_loss"] < 1e-6
    uniform = evaluate(labels, torch.full((4, 10), 0.1).numpy())
    assert uniform["log_loss"] == pytest.approx(2.302585, abs=1e-5)

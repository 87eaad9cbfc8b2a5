"""A trained model folder scores frames through load_predictor; the degraded mode is really worse."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tollgate.training.dataset import time_split
from tollgate.training.errors import BadInput
from tollgate.training.metrics import evaluate
from tollgate.training.predict import load_predictor
from tollgate.training.settings import parse
from tollgate.training.synthetic import make_events, write_parquet
from tollgate.training.trainer import Trainer
from tollgate_torch.preemption import PreemptionGuard

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """The trainer sets one thread and deterministic kernels: give the test process its settings back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch._C._set_deterministic_algorithms(deterministic)


def _train(tmp: Path, data: Path, quality: str, *extra: str) -> dict:
    settings = parse(
        [
            "--data-file", str(data), "--checkpoint-uri", str(tmp / quality / "ckpt"),
            "--output-uri", str(tmp / quality / "model"), "--training-run-id", quality,
            "--epochs", "2", "--batch-size", "64", "--checkpoint-every", "100", "--quality", quality,
            *extra,
        ],
        environ={},
    )  # fmt: skip
    return Trainer(settings, PreemptionGuard(30)).run()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    tmp = tmp_path_factory.mktemp("predict")
    data = Path(write_parquet(tmp / "events.parquet", 4000, seed=5))
    return tmp, data, _train(tmp, data, "normal"), _train(tmp, data, "degraded")


def test_predictor_reproduces_the_holdout_metrics(trained) -> None:
    tmp, data, normal, _ = trained
    predictor = load_predictor(tmp / "normal" / "model")
    _, holdout = time_split(pd.read_parquet(data), 0.2)
    p = predictor.predict_proba(holdout)
    assert p.shape == (len(holdout),) and p.dtype == np.float64 and ((p > 0) & (p < 1)).all()
    assert evaluate(holdout["clicked"].to_numpy(), p) == pytest.approx(normal["metrics"], rel=1e-6)
    config = json.loads((tmp / "normal" / "model" / "model_config.json").read_text())
    assert predictor.feature_columns == config["feature_columns"]
    # extra columns are ignored, missing ones are named
    assert np.allclose(predictor.predict_proba(holdout.assign(extra=1)), p)
    with pytest.raises(ValueError, match="lacks feature columns"):
        predictor.predict_proba(holdout.drop(columns=["bid_price"]))
    assert predictor.predict_proba(make_events(0)).shape == (0,)


def test_result_json_follows_the_contract(trained) -> None:
    tmp, _, normal, _ = trained
    on_disk = json.loads((tmp / "normal" / "model" / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(normal))
    for key in (
        "metrics", "mlflow_run_id", "training_run_id", "steps", "epochs", "rows_per_second", "resumed_from",
        "final_checkpoint", "checkpoint_save_seconds_total", "checkpoint_restore_seconds_total",
        "steps_redone", "dataset",
    ):  # fmt: skip
        assert key in on_disk, key
    assert set(on_disk["metrics"]) == {"auc", "log_loss", "calibration_error"}
    assert on_disk["mlflow_run_id"] is None and on_disk["final_checkpoint"] == "ckpt-00000100.pt"
    assert len(on_disk["dataset"]["content_hash"]) == 64 and on_disk["rows_per_second"] > 0


def test_degraded_quality_is_clearly_worse(trained) -> None:
    _, _, normal, degraded = trained
    assert normal["metrics"]["auc"] > 0.6
    assert degraded["metrics"]["auc"] < normal["metrics"]["auc"] - 0.05


def test_resuming_with_other_hyperparameters_is_refused(trained) -> None:
    """A checkpoint folder belongs to one training run: mixing settings would silently change the model."""
    tmp, data, _, _ = trained
    with pytest.raises(BadInput, match=r"other data or hyperparameters .*'lr': \(0.003, 0.01\)"):
        _train(tmp, data, "normal", "--lr", "0.01")


def test_slow_quality_is_as_good_but_its_files_make_every_predict_wait(trained) -> None:
    """Fault injection for the canary: the delay lives in the model's own (signed) config, not the router."""
    tmp, data, normal, _ = trained
    slow = _train(tmp, data, "slow")
    assert slow["metrics"] == pytest.approx(normal["metrics"], rel=1e-6)
    config = json.loads((tmp / "slow" / "model" / "model_config.json").read_text())
    assert config["serving_delay_ms"] == 40.0
    rows = make_events(5)
    fast_p, slow_p = load_predictor(tmp / "normal" / "model"), load_predictor(tmp / "slow" / "model")
    timings = {}
    for name, predictor in (("normal", fast_p), ("slow", slow_p)):
        start = time.perf_counter()
        for _ in range(5):
            predictor.predict_proba(rows)
        timings[name] = (time.perf_counter() - start) / 5
    assert timings["slow"] >= timings["normal"] + 0.035
    assert np.allclose(fast_p.predict_proba(rows), slow_p.predict_proba(rows))


def test_miscalibrated_quality_is_the_same_network_over_confident_for_unseen_users(trained) -> None:
    """Fault injection for the shadow stage: the shift lives in the model's own (signed) config; rows of users
    up to the bound it names (its training split's highest user id) score as the normal model."""
    tmp, data, normal, _ = trained
    wrong = _train(tmp, data, "miscalibrated")
    assert wrong["metrics"] == pytest.approx(normal["metrics"], rel=1e-6)  # the same network
    config = json.loads((tmp / "miscalibrated" / "model" / "model_config.json").read_text())
    fault = config["miscalibration"]
    train, holdout = time_split(pd.read_parquet(data), 0.2)
    assert fault["column"] == "user_id" and fault["logit_shift"] == 4.0
    assert fault["above"] == train["user_id"].max()
    good, bad = load_predictor(tmp / "normal" / "model"), load_predictor(tmp / "miscalibrated" / "model")
    inside = holdout[holdout["user_id"] <= fault["above"]]
    assert len(inside) >= 0.99 * len(holdout)  # offline, almost every row is scored as before
    assert np.allclose(good.predict_proba(inside), bad.predict_proba(inside))
    beyond = holdout.assign(user_id=int(fault["above"]) + 1)
    p_good, p_bad = good.predict_proba(beyond), bad.predict_proba(beyond)
    odds_ratio = (p_bad / (1 - p_bad)) / (p_good / (1 - p_good))
    assert np.allclose(odds_ratio, np.exp(4.0), rtol=1e-3)  # about x55 the odds of a click

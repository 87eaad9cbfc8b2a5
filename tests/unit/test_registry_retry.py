"""Retry policy for MLflow calls and the shape of the trained-model info registration accepts."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from tollgate.registry.register import RegistrationError, _check_trained, normalize_trained
from tollgate.registry.retry import MlflowUnavailableError, is_transient, retrying
from tollgate.registry.verify import VerificationResult

pytestmark = pytest.mark.unit


def test_transient_failures_are_told_apart_from_real_ones():
    assert is_transient(requests.exceptions.ConnectionError("refused"))
    assert is_transient(MlflowException("API request to http://x failed with exception ConnectionError(...)"))
    assert is_transient(MlflowException("API request to endpoint /x failed with error code 503 != 200."))
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert is_transient(
        MlflowException("(sqlite3.OperationalError) database is locked", error_code=INTERNAL_ERROR)
    )
    assert not is_transient(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_transient(MlflowException("bad filter", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(MlflowException("a client-side bug"))  # INTERNAL_ERROR by default: not retried
    assert not is_transient(ValueError("a bug"))


def test_retrying_waits_out_an_outage_and_gives_up_at_the_deadline():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise requests.exceptions.ConnectionError("server restarting")
        return "done"

    assert retrying("flaky", flaky, sleep=sleeps.append, first_delay_s=1, max_delay_s=3) == "done"
    assert sleeps == [1, 2, 3]  # capped exponential backoff

    def down():
        raise requests.exceptions.ConnectionError("down")

    with pytest.raises(MlflowUnavailableError, match="MLflow still unavailable"):
        retrying("down", down, deadline_s=0.0, sleep=lambda _s: None)
    with pytest.raises(ValueError):  # a real error is not retried
        retrying("bug", lambda: (_ for _ in ()).throw(ValueError("bug")), sleep=sleeps.append)


def test_trained_info_from_the_dag_or_nested_is_accepted_and_gaps_are_named():
    flat = {
        "training_run_id": "t1",
        "mlflow_run_id": "r1",
        "model_uri": "/m",
        "metrics": {"auc": 0.7},
        "rev": "abc",
        "content_hash": "c0",
        "data_repo": "/repo",
        "data_path": "data/x.parquet",
    }
    nested = normalize_trained(flat)
    assert nested["dataset"] == {
        "repo": "/repo",
        "rev": "abc",
        "path": "data/x.parquet",
        "content_hash": "c0",
    }
    _check_trained(nested)
    with pytest.raises(RegistrationError, match=r"lacks mlflow_run_id, dataset\.rev"):
        _check_trained(normalize_trained({**flat, "mlflow_run_id": None, "rev": None}))


def test_verification_result_describes_refusals_and_provenance():
    refused = VerificationResult(
        ok=False, model_name="ctr", requested="challenger", version="3", problems=["x"]
    )
    assert refused.summary() == "Model ctr challenger (version 3) REFUSED: x"
    ok = VerificationResult(
        ok=True,
        model_name="ctr",
        requested="3",
        version="3",
        signer_key_id="k1",
        provenance={"predicate": {"dataset": {"rev": "abc"}, "metrics": {"auc": 0.71234, "n": None}}},
    )
    text = ok.describe()
    assert text.startswith("Model ctr 3 verified: signed by trusted key k1")
    assert "rev abc" in text and "auc 0.7123, n None" in text

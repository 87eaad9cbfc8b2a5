"""Which active evaluate_and_promote runs a newer challenger supersedes."""

from __future__ import annotations

import pytest

from tollgate.evaluation.supersede import Superseded, older_runs

pytestmark = pytest.mark.unit


def test_only_active_runs_of_older_versions_of_the_same_model_are_superseded():
    runs = [{"dag_run_id": r, "state": st} for r, st in
            [("me", "running"), ("a", "running"), ("b", "running"), ("c", "queued"), ("d", "success"),
             ("e", "running"), ("f", "running")]]  # fmt: skip
    challengers = {
        "a": {"model_name": "ctr", "version": "9"},  # older, waiting for approval: superseded
        "b": {"model_name": "ctr", "version": "11"},  # newer: left alone (it supersedes us)
        "c": None,  # not resolved yet: it skips itself when it sees the newer challenger alias
        "d": {"model_name": "ctr", "version": "3"},  # finished: nothing to end
        "e": {"model_name": "other", "version": "1"},  # another model
        "f": {"model_name": "ctr", "version": "10"},  # the same version (by hand): not older
    }
    found = older_runs(runs, challengers.get, me="me", model_name="ctr", version="10")
    assert found == [Superseded("a", "9")]

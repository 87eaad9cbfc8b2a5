"""A second `make demo` on the state an earlier run left refuses and says how to get an empty state;
`make clean-state` deletes a Tollgate state folder and nothing else."""

from __future__ import annotations

import pytest

from tollgate.demo import earlier_work, refusal
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack

pytestmark = pytest.mark.unit


def test_an_empty_state_runs_and_an_earlier_runs_work_is_named():
    assert earlier_work([], {"dataset_ingest": 0, "train_model": 0}) == []
    found = earlier_work(["data-2026-11-25", "data-2026-11-27", "data-2026-11-26"], {"train_model": 2})
    assert found == ["3 dataset versions (data-2026-11-25, data-2026-11-26, data-2026-11-27, ...)",
                     "2 runs of train_model"]  # fmt: skip
    message = refusal(found, "/x/.tollgate")
    assert "make clean-state && make demo" in message and "2 runs of train_model" in message


def test_clean_state_deletes_a_state_folder_and_refuses_anything_else(tmp_path):
    state = tmp_path / "state"
    (state / "airflow").mkdir(parents=True)
    (state / "airflow" / "airflow.db").write_text("x")
    assert "Deleted" in LocalStack(home=state).clean()
    assert not state.exists()
    assert "Nothing to clean" in LocalStack(home=state).clean()
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("x")
    with pytest.raises(ServiceError, match="does not look like a Tollgate state folder"):
        LocalStack(home=precious).clean()
    assert (precious / "chapter1.tex").exists()

"""Which queued asset event a run acts on: the newest by the data's own order, whatever the list order;
older ones are logged as skipped; stale data (older than the newest version, or backfilled) is not
trained on unless a rev is chosen on purpose."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

from tollgate.events import (
    EventWithoutOrder,
    newest_challenger_event,
    newest_dataset_event,
    newest_tag,
    stale_dataset_reason,
)
from tollgate.launch.pipeline import StaleDataset, choose_dataset

pytestmark = pytest.mark.unit


def _dataset(tag: str, **extra: str) -> dict[str, str]:
    partition = tag.removeprefix("data-")[:10]
    return {"tag": tag, "rev": f"rev-{tag}", "partition": partition, **extra}


QUEUED = [_dataset("data-2024-03-02"), _dataset("data-2024-03-04"), _dataset("data-2024-03-03"),
          _dataset("data-2024-03-04-v2"), _dataset("data-2024-02-28")]  # fmt: skip


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(QUEUED))))[::17])
def test_the_newest_dataset_event_wins_in_any_list_order(order):
    choice = newest_dataset_event([QUEUED[i] for i in order])
    assert choice.chosen["tag"] == "data-2024-03-04-v2"
    lines = choice.log_lines()
    assert len(lines) == 4
    assert all("older than data-2024-03-04-v2" in line for line in lines)
    assert {line.split()[3].rstrip(":") for line in lines} == {
        "data-2024-03-02", "data-2024-03-04", "data-2024-03-03", "data-2024-02-28"}  # fmt: skip


def test_the_newest_challenger_is_the_highest_version_not_the_last_event():
    events = [{"model_name": "ctr", "version": v} for v in ("9", "10", "8")]
    choice = newest_challenger_event(events)
    assert choice.chosen["version"] == "10"
    assert choice.log_lines() == [
        "Skipped queued event ctr v8: older than ctr v10, which this run acts on.",
        "Skipped queued event ctr v9: older than ctr v10, which this run acts on.",
    ]
    with pytest.raises(EventWithoutOrder, match="several registered models"):
        newest_challenger_event([{"model_name": "a", "version": 1}, {"model_name": "b", "version": 2}])
    with pytest.raises(EventWithoutOrder, match="no integer 'version'"):
        newest_challenger_event([{"model_name": "ctr", "version": "latest"}])


def test_no_events_no_choice_and_unordered_events_are_refused():
    assert newest_dataset_event([]).chosen is None
    with pytest.raises(EventWithoutOrder, match="neither a tag nor a partition"):
        newest_dataset_event([{"rev": "abc"}])


def test_stale_means_older_than_the_newest_version_or_backfilled():
    assert newest_tag(["data-2024-03-09", "data-2024-03-10", "data-2024-03-10-v2", "other"]) == (
        "data-2024-03-10-v2"
    )
    newest = _dataset("data-2024-03-10")
    assert stale_dataset_reason(newest, "data-2024-03-10") is None
    assert "older than the newest curated version, data-2024-03-10" in stale_dataset_reason(
        _dataset("data-2024-03-09"), "data-2024-03-10"
    )
    assert "published by a backfill" in stale_dataset_reason(
        _dataset("data-2024-03-10", run_type="backfill"), "data-2024-03-10"
    )


def _repo_with_tags(path: Path, tags: list[str]) -> str:
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    path.mkdir()
    subprocess.run([*git, "init", "-q"], check=True)
    for tag in tags:
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", tag], check=True)
        subprocess.run([*git, "tag", tag], check=True)
    return str(path)


def test_train_model_takes_the_newest_queued_version_and_logs_the_rest(tmp_path):
    repo = _repo_with_tags(tmp_path / "repo", ["data-2024-03-02", "data-2024-03-03", "data-2024-03-04"])
    logged: list[str] = []
    queued = [_dataset(t, data_repo=repo) for t in ("data-2024-03-04", "data-2024-03-02", "data-2024-03-03")]
    dataset = choose_dataset(
        rev_param="latest", triggering_extras=queued, recent_extras=[], data_repo=repo, log=logged.append
    )
    assert (dataset["tag"], dataset["rev"], dataset["source"]) == (
        "data-2024-03-04", "rev-data-2024-03-04", "triggering_event")  # fmt: skip
    assert len(logged) == 2 and all("older than data-2024-03-04" in line for line in logged)


def test_a_backfill_of_old_days_does_not_retrain_but_a_chosen_rev_does(tmp_path):
    repo = _repo_with_tags(tmp_path / "repo", ["data-2024-03-01", "data-2024-03-02", "data-2024-05-10"])
    backfilled = [
        _dataset(t, data_repo=repo, run_type="backfill") for t in ("data-2024-03-02", "data-2024-03-01")
    ]
    with pytest.raises(StaleDataset) as stale:
        choose_dataset(rev_param="latest", triggering_extras=backfilled, recent_extras=[], data_repo=repo)
    message = str(stale.value)
    assert "Not training on data-2024-03-02" in message and "data-2024-05-10" in message
    assert "Param rev=data-2024-03-02" in message  # how to train on it on purpose
    # The newest day, re-published by a backfill: still not retrained by default.
    with pytest.raises(StaleDataset, match="published by a backfill"):
        rerun = _dataset("data-2024-05-10", data_repo=repo, run_type="backfill")
        choose_dataset(rev_param="latest", data_repo=repo, recent_extras=[], triggering_extras=[rerun])
    # On purpose: the Param rev trains exactly that version, whatever the events.
    chosen = choose_dataset(rev_param="data-2024-03-02", triggering_extras=backfilled, recent_extras=[],
                            data_repo=repo)  # fmt: skip
    assert (chosen["rev"], chosen["source"]) == ("data-2024-03-02", "param")


def test_a_run_without_events_takes_the_newest_recent_version_not_the_last_published(tmp_path):
    recent = [_dataset("data-2024-03-01"), _dataset("data-2024-05-10"), _dataset("data-2024-04-01")]
    chosen = choose_dataset(rev_param="latest", triggering_extras=[], recent_extras=recent, data_repo="/r")
    assert (chosen["tag"], chosen["source"]) == ("data-2024-05-10", "latest_event")


def test_evaluate_and_promote_evaluates_the_newest_challenger_and_never_an_older_one():
    from tollgate.evaluation.selection import SupersededChallenger, choose_challenger

    queued = [{"model_name": "ctr", "version": "10"}, {"model_name": "ctr", "version": "9"}]
    logged: list[str] = []
    common = {"param_name": None, "param_version": None, "default_model": "ctr", "log": logged.append}
    chosen = choose_challenger(triggering_extras=queued, current_challenger=lambda _: "10", **common)
    assert chosen == {"model_name": "ctr", "version": "10"}
    assert "Skipped queued event ctr v9: older than ctr v10" in logged[0]
    # v11 was registered while this run waited: v10 is superseded, nothing is evaluated.
    with pytest.raises(SupersededChallenger, match="v10 is superseded by v11"):
        choose_challenger(triggering_extras=queued, current_challenger=lambda _: "11", **common)
    # By hand, a version is evaluated on purpose.
    by_hand = {**common, "param_name": "ctr", "param_version": "9"}
    assert choose_challenger(triggering_extras=queued, current_challenger=lambda _: "11", **by_hand) == {
        "model_name": "ctr", "version": "9"}  # fmt: skip
    with pytest.raises(ValueError, match="Params model_name and version"):
        choose_challenger(triggering_extras=[], current_challenger=lambda _: None, **common)

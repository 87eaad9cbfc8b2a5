"""The README's Airflow CLI commands, typed as written in the clone, act on the running local platform
(here the session platform): backfill create / list / cancel, dags list / unpause / trigger, tasks test.

Each command runs as a subprocess in a user's shell: no AIRFLOW_* settings, only TOLLGATE_HOME naming
the platform's state folder, and a fresh HOME that must not gain an ``airflow/`` folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from airflow_client.client import VariableBody

from tollgate.platform.stack import LocalStack

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "dataset_ingest"
PROJECT_DAGS = sorted(p.stem for p in (REPO_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


def readme_commands() -> list[str]:
    """The command lines of the README's CLI section, comments stripped."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## The Airflow CLI on the local platform", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith(".venv/bin/")]


def readme_command(*words: str, without: str = "\0") -> str:
    matches = [c for c in readme_commands() if all(w in c for w in words) and without not in c]
    assert len(matches) == 1, f"README should show exactly one command with {words}: {matches}"
    return matches[0]


class Shell:
    def __init__(self, stack: LocalStack, home: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {**env, "TOLLGATE_HOME": str(stack.home), "HOME": str(home)}

    def run(self, command: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            shlex.split(command), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        if ok:
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result


def _plain(model: Any) -> dict[str, Any]:
    """A client model as the JSON the REST API sent (dates as ISO text)."""
    return json.loads(model.to_json())


def _backfills(client) -> list[dict[str, Any]]:
    return [_plain(b) for b in client.backfills.list_backfills(dag_id=DAG_ID, order_by=["-id"]).backfills]


def _dag_runs(client, dag_id: str, **query: Any) -> list[dict[str, Any]]:
    return [_plain(r) for r in client.dag_runs.get_dag_runs(dag_id, limit=100, **query).dag_runs]


def _wait_completed(client, backfill_id: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not client.backfills.get_backfill(backfill_id).completed_at:
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} not completed after {timeout:.0f} s")
        time.sleep(1)


def _runs_of(client, days: list[str]) -> list[dict[str, Any]]:
    """The backfill runs of ``days`` (a rerun of a day reuses its run), in date order."""
    runs = _dag_runs(client, DAG_ID, run_type=["backfill"])
    return sorted((r for r in runs if r["logical_date"][:10] in days), key=lambda r: r["logical_date"])


def _curated_events(client) -> int:
    from tollgate.assets import CURATED_DATASET

    asset_id = client.asset_id(CURATED_DATASET.uri)
    return client.assets.get_asset_events(asset_id=asset_id, limit=1).total_entries


def _tags(repo: str, prefix: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", repo, "log", "--reverse", "--format=%D"], capture_output=True, text=True, check=True
    ).stdout
    return re.findall(rf"tag: ({re.escape(prefix)}[^,\s]*)", out)


NEWER = "data-2099-12-31"


def _expect_a_newer_version(client, repo: str) -> set[str]:
    """Tag a version newer than any in the session's data repository, then let train_model listen.

    So a curated event another test left (the daily run's, say) is older than the newest version too,
    and nothing in this test trains. Returns the train_model runs that existed before.
    """
    time.sleep(5)  # the scheduler creates the daily run of the latest interval on unpause
    deadline = time.monotonic() + 300  # that run: done first
    while any(r["state"] in ("queued", "running") for r in _dag_runs(client, DAG_ID)):
        assert time.monotonic() < deadline, "dataset_ingest still busy"
        time.sleep(1)
    git = ["git", "-C", repo, "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "tag", "-a", NEWER, "-m", "a newer version (test)", "HEAD"], check=True)
    before = _dag_runs(client, "train_model")
    client.unpause("train_model")  # asset events queue runs only for an unpaused DAG
    return {r["dag_run_id"] for r in before}


def _backfill_did_not_retrain(client, repo: str, days: list[str], before: set[str]) -> None:
    """The backfill's curated events started train_model runs that recorded them and trained on none."""
    try:
        deadline = time.monotonic() + 240
        while True:
            runs = [r for r in _dag_runs(client, "train_model") if r["dag_run_id"] not in before]
            if runs and all(r["state"] in ("success", "failed") for r in runs):
                log = "\n".join(client.task_log("train_model", r["dag_run_id"], "prepare_job") for r in runs)
                if all(f"data-{day}" in log for day in days):
                    break
            assert time.monotonic() < deadline, f"train_model runs for the backfill's events: {runs}"
            time.sleep(2)
    finally:
        client.pause("train_model")
        subprocess.run(["git", "-C", repo, "tag", "-d", NEWER], check=True, capture_output=True)
    for run in runs:
        tis = client.task_instances.get_task_instances("train_model", run["dag_run_id"]).task_instances
        states = {ti.task_id: ti.state for ti in tis}
        assert run["run_type"] == "asset_triggered" and run["state"] == "success", (run, states)
        assert states["prepare_job"] == "skipped" and states["train_local"] == "skipped", states
    assert "SKIPPED: Not training on data-" in log and "Param rev=" in log, log
    for day in days:  # each backfilled version: skipped as older than the one chosen, or not trained on
        assert f"Skipped queued event data-{day}:" in log or f"Not training on data-{day}:" in log, log


def test_readme_cli_commands_act_on_the_local_platform(local_platform, admin_client, tmp_path):
    client = admin_client
    client.wait_for_dag(DAG_ID)
    (tmp_path / "home").mkdir()
    shell = Shell(local_platform, tmp_path / "home")
    repo = client.variables.get_variable("tollgate_data_repo").value
    client.variables.patch_variable(
        "tollgate_simulated_rows", VariableBody(key="tollgate_simulated_rows", value="2000")
    )
    create = readme_command("backfill create", "--to-date 2024-03-03", without="--reprocess-behavior")
    days = ["2024-03-01", "2024-03-02", "2024-03-03"]

    # dags list, through tollgate and through the bare command: every DAG of the project.
    for command in (readme_command("dags list"), ".venv/bin/airflow dags list"):
        listed = shell.run(command).stdout
        assert all(dag_id in listed for dag_id in PROJECT_DAGS), (command, listed)

    try:
        # Cancel: a backfill created while the DAG is paused, cancelled before any of its runs starts.
        client.pause(DAG_ID)
        shell.run(".venv/bin/tollgate airflow backfill create --dag-id dataset_ingest "
                  "--from-date 2024-03-20 --to-date 2024-03-20")  # fmt: skip
        doomed = _backfills(client)[0]
        cancel = readme_command("backfill cancel").rsplit("--id", 1)[0] + f"--id {doomed['id']}"
        assert "cancelled" in shell.run(cancel).stdout
        assert client.backfills.get_backfill(doomed["id"]).completed_at
        assert [r["state"] for r in _runs_of(client, ["2024-03-20"])] == ["failed"]

        # The README's backfill: one version per day, in date order.
        shell.run(readme_command("dags unpause"))
        train_runs_before = _expect_a_newer_version(client, repo)
        shell.run(create)
        first = _backfills(client)[0]
        assert first["id"] != doomed["id"] and first["from_date"][:10] == days[0]
        _wait_completed(client, first["id"])
        runs = _runs_of(client, days)
        assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(d, "success") for d in days]
        assert _tags(repo, "data-2024-03-0") == [f"data-{d}" for d in days]
        _backfill_did_not_retrain(client, repo, days, train_runs_before)
        listing = shell.run(readme_command("backfill list")).stdout
        assert re.search(rf"^\s*{first['id']}\s+2024-03-01\s+2024-03-03\s+done", listing, re.M), listing

        # Again as written: nothing new, no new version, no new curated asset event.
        published = _curated_events(client)
        shell.run(create)
        again = _backfills(client)[0]
        assert again["id"] != first["id"]
        _wait_completed(client, again["id"])
        assert [r["state"] for r in _runs_of(client, days)] == ["success"] * len(days)
        assert _tags(repo, "data-2024-03-0") == [f"data-{d}" for d in days]
        assert _curated_events(client) == published

        # dags trigger with a conf, and tasks test of one task.
        shell.run(readme_command("dags trigger"))
        run = _dag_runs(client, DAG_ID, run_type=["manual"], order_by=["-run_after"])[0]
        assert run["conf"] == {"partition": "2024-03-04"}
        assert client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=600).state == "success"
        assert _tags(repo, "data-2024-03-0")[-1] == "data-2024-03-04"
        tested = shell.run(readme_command("tasks test", "locate_partition"))
        if "Ingesting dt=2024-03-05 of example ctr (from the param)" not in tested.stdout + tested.stderr:
            pytest.fail(f"tasks test did not run the task:\n{tested.stdout}\n{tested.stderr}")  # all of it
    finally:
        client.pause(DAG_ID)
        client.pause("train_model")
        subprocess.run(["git", "-C", repo, "tag", "-d", NEWER], capture_output=True)
    assert not (tmp_path / "home" / "airflow").exists()

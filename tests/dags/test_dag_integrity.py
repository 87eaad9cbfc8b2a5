"""Every DAG file imports cleanly and follows the project's DAG conventions."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (REPO_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("torch", "pandas", "mlflow", "great_expectations", "dvc", "sklearn")

pytestmark = pytest.mark.dags


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_there_are_dag_files():
    assert DAG_FILES, "dags/ holds no DAG files"


def test_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}, "\n".join(f"{f}: {e}" for f, e in dag_bag.import_errors.items())


def test_every_file_defines_a_dag(dag_bag):
    files_with_dags = {Path(dag.fileloc).name for dag in dag_bag.dags.values()}
    assert {p.name for p in DAG_FILES} <= files_with_dags


def test_dag_conventions(dag_bag):
    problems = []
    for dag_id, dag in dag_bag.dags.items():
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: no doc_md")
        for task in dag.tasks:
            if not task.owner or task.owner == "airflow":
                problems.append(f"{dag_id}.{task.task_id}: owner not set")
            if task.retries < 2:
                problems.append(f"{dag_id}.{task.task_id}: retries {task.retries} < 2")
            if task.retry_delay and task.retry_delay > timedelta(hours=1):
                problems.append(f"{dag_id}.{task.task_id}: retry_delay over an hour")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_parse_time(dag_file: Path):
    """Parse each file in a fresh interpreter and look at what it pulled into sys.modules."""
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{dag_file.name} imports {loaded} at parse time; import them inside the task"

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


PARSE_PROBE = """
import importlib.util, json, sys
found = {}
for path in json.loads(sys.argv[1]):
    spec = importlib.util.spec_from_file_location("dag_under_test", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    heavy = json.loads(sys.argv[2])
    found[path] = sorted(m for m in heavy if m in sys.modules and not any(m in v for v in found.values()))
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def parse_time_imports() -> dict[str, list[str]]:
    """Every DAG file parsed in turn in one fresh interpreter: the heavy modules each one pulled in first.

    One interpreter instead of one per file saves an Airflow import per file; a heavy module is blamed
    on the first file that brought it, so a file that imports one still fails its test."""
    files, heavy = json.dumps([str(p) for p in DAG_FILES]), json.dumps(HEAVY_MODULES)
    result = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, files, heavy], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_parse_time(dag_file: Path, parse_time_imports: dict[str, list[str]]):
    loaded = parse_time_imports[str(dag_file)]
    assert loaded == [], f"{dag_file.name} imports {loaded} at parse time; import them inside the task"


def test_train_quality_param_offers_exactly_the_trainers_qualities(dag_bag):
    """Each fault-injection value (slow, miscalibrated) the form offers is one the trainer knows, and back."""
    from tollgate.training.settings import QUALITIES

    param = dag_bag.dags["train_model"].params.get_param("quality")
    assert param.schema["enum"] == list(QUALITIES)

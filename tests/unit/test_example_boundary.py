"""The core never imports an example: DAG files and include/tollgate/ load the configured one by name.

Parsed with ``ast`` (every import statement, at module level or inside a function), so a lazy import
inside a task body counts too. A string default like ``"ctr"`` is configuration, not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tollgate import extensions

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CORE = [*sorted((REPO / "dags").glob("*.py")), *sorted((REPO / "include" / "tollgate").rglob("*.py"))]
EXAMPLES = extensions.EXAMPLES_PACKAGE


def example_imports(source: str) -> list[str]:
    """Modules of the examples package that ``source`` imports, including importlib calls by literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == EXAMPLES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == EXAMPLES:
            found.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).split(".")[0] == EXAMPLES
        ):
            found.append(str(node.args[0].value))
    return found


def test_no_dag_file_or_core_module_imports_an_example():
    assert len(CORE) > 50  # the walk found the DAGs and the library
    offenders = {
        str(path.relative_to(REPO)): names for path in CORE if (names := example_imports(path.read_text()))
    }
    assert offenders == {}, (
        f"These core files import example code: {offenders}. Load the example through "
        "tollgate.extensions.active() (env TOLLGATE_EXAMPLE) instead."
    )


@pytest.mark.parametrize(
    "source",
    [
        "import tollgate_examples.ctr",
        "from tollgate_examples.digits import EXAMPLE",
        "def task():\n    from tollgate_examples import ctr\n",
        "import importlib\nimportlib.import_module('tollgate_examples.digits')",
    ],
)
def test_the_check_sees_every_kind_of_import(source):
    assert example_imports(source)


def test_every_shipped_example_loads_by_name_and_is_complete():
    names = extensions.shipped()
    assert "ctr" in names
    for name in names:
        example = extensions.load(name)
        assert example.name == name
        assert isinstance(example.dataset, extensions.Dataset)
        assert example.packaging.model_code.is_file()
        assert example.gate.rules and example.trainer.command


def test_an_unknown_example_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv(extensions.EXAMPLE_ENV, "no_such_example")
    with pytest.raises(ValueError, match=r"TOLLGATE_EXAMPLE.*shipped example"):
        extensions.active()


def test_a_run_names_its_example_and_the_process_keeps_its_own(monkeypatch):
    from tollgate.data.pipeline import PartitionNotFound, run_example

    monkeypatch.delenv(extensions.EXAMPLE_ENV, raising=False)
    with extensions.using("digits") as example:
        assert example.name == "digits" and extensions.active().dataset.schema.label == "digit"
    assert extensions.active().name == "ctr"  # restored: the next task of this worker is not affected
    assert run_example(None, [{"partition": "2024-01-01", "example": "digits"}]) == "digits"
    assert run_example("ctr", [{"example": "digits"}]) == "ctr"  # the Param wins
    assert run_example(None, [{"partition": "2024-01-01"}]) == "ctr"  # the configured one
    with pytest.raises(PartitionNotFound, match=r"different examples \['ctr', 'digits'\]"):
        run_example(None, [{"example": "digits"}, {"example": "ctr"}])


def test_each_example_versions_into_its_own_repository():
    assert extensions.scoped("/state/data-repo", "ctr") == "/state/data-repo"
    assert extensions.scoped("/state/data-repo/", "digits") == "/state/data-repo-digits"
    assert extensions.scoped("s3://b/dvc", "mycompany.churn") == "s3://b/dvc-churn"

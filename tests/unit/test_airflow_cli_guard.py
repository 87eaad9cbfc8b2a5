"""With no local platform, the Airflow CLI refuses and names the right command; it never creates
``~/airflow`` (a second, empty database). Runs the real console scripts of the venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tollgate.platform.airflow_cli import _is_airflow_cli

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent


def _user_shell(tmp_path: Path) -> dict[str, str]:
    """A user's shell in the clone: no AIRFLOW_* settings, an empty state folder, a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {**env, "HOME": str(tmp_path / "home"), "TOLLGATE_HOME": str(tmp_path / "state")}


@pytest.mark.parametrize("command", [["airflow", "dags", "list"], ["tollgate", "airflow", "dags", "list"]])
def test_without_a_platform_the_cli_refuses_and_names_make_up(tmp_path, command):
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], env=_user_shell(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "make up" in result.stderr and "tollgate airflow" in result.stderr
    assert not (tmp_path / "home" / "airflow").exists()
    assert not (tmp_path / "state").exists()


def test_a_chosen_airflow_home_is_left_alone(tmp_path):
    env = {**_user_shell(tmp_path), "AIRFLOW_HOME": str(tmp_path / "mine")}
    result = subprocess.run([str(BIN / "airflow"), "version"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("3.")
    assert (tmp_path / "mine").is_dir()


def test_only_the_airflow_command_is_guarded():
    assert _is_airflow_cli(["/venv/bin/python", "/venv/bin/airflow", "dags", "list"])
    assert _is_airflow_cli(["python", "-m", "airflow", "version"])
    assert not _is_airflow_cli(["python", "-m", "pytest"])
    assert not _is_airflow_cli(["python", "-c", "import airflow"])
    assert not _is_airflow_cli(["python"])

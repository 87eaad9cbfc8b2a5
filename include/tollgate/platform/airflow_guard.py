"""Imported at interpreter start-up by ``tollgate-airflow-cli.pth`` (written by ``make setup``).

Cheap for every other Python process: it only looks at the command line, and does the rest
(:func:`tollgate.platform.airflow_cli.guard_bare_airflow`) when the command is ``airflow``.
"""

import sys
from pathlib import Path

_args = sys.orig_argv[1:]
if _args[:2] == ["-m", "airflow"] or (_args and Path(_args[0]).name == "airflow"):
    from tollgate.platform.airflow_cli import guard_bare_airflow

    guard_bare_airflow()

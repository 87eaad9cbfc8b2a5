"""``airflow scheduler`` (or ``airflow celery worker``) with the libraries tasks use imported first.

The LocalExecutor forks its worker processes from the scheduler, and every task process is forked from a
worker, so a library the scheduler has imported is already there in each task: no task pays the
import again (Great Expectations alone is ~7 CPU seconds per process, MLflow ~3.5, scikit-learn ~3).
A Celery worker (the distributed profile) is the same: its prefork pool processes are forked from it,
and each task process from a pool process.
None of these libraries starts a thread on import, which is what makes importing them before a fork
safe. Run as ``python -m tollgate.platform.preload scheduler [airflow options]`` or
``python -m tollgate.platform.preload celery worker [options]``.
"""

from __future__ import annotations

import importlib
import sys

TASK_LIBRARIES = (
    "pandas",
    "pyarrow.parquet",
    "great_expectations",
    "mlflow",
    "mlflow.pyfunc",
    "sklearn.metrics",
    "model_signing",
    "dvc.repo",
    "torch",
)


def main() -> None:
    for name in TASK_LIBRARIES:
        importlib.import_module(name)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *sys.argv[1:]]
    airflow_main()


if __name__ == "__main__":
    main()

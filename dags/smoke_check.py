"""
### Platform smoke check

A two-task DAG that proves the local platform schedules and runs work: it reads the Tollgate
settings Variables and reports where state lives. Trigger it from the UI or REST API after
`make up`; it has no side effects.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

default_args = {"owner": "tollgate", "retries": 2, "retry_delay": timedelta(seconds=10)}


@dag(
    schedule=None,
    catchup=False,
    tags=["tollgate", "platform"],
    default_args=default_args,
    doc_md=__doc__,
)
def smoke_check():
    @task
    def read_settings() -> dict[str, str]:
        from airflow.sdk import Variable

        from tollgate.config import VARIABLE_DEFAULTS, default_for

        return {name: Variable.get(name, default=default_for(name)) for name in VARIABLE_DEFAULTS}

    @task
    def report(settings: dict[str, str]) -> int:
        for name, value in sorted(settings.items()):
            print(f"{name} = {value}")
        return len(settings)

    report(read_settings())


smoke_check()

"""The local stack (the embedded default): Airflow + MLflow on loopback, state in one folder."""

"""The training container's code: CTR model, exact checkpoint resume, MLflow tracking.

Nothing here imports Airflow: this package is the entrypoint of the training image
(``python -m tollgate.training``) and runs the same as a local child process or a spot pod.
"""

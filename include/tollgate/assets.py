"""The Assets that link Tollgate's DAGs, and the keys their events carry in ``extra``.

Ingest publishes CURATED_DATASET; train_model is scheduled on it and publishes TRAINED_MODEL, then
(after signed registration) CHALLENGER_MODEL, on which evaluate_and_promote is scheduled. The names say
the role in the pipeline, never the example's data: every example flows through the same Assets, and
each event's ``extra`` names its ``example``.
"""

from __future__ import annotations

import os

from airflow.sdk import Asset

# Scheme-less URIs on purpose: an Asset URI with a scheme makes Airflow load every provider's URI
# handlers (boto3 and more, ~1.5 s) while parsing each DAG file that defines it.

# An upstream system posts an event here (REST API) when a partition lands;
# extra: {"partition": "YYYY-MM-DD"} (optionally "example": which example's data landed).
LANDING = Asset(name="landing_data", uri="tollgate.landing.data")
LANDING_IMPRESSIONS = LANDING  # the name it had while Tollgate had one example


def watched_landing() -> Asset:
    """LANDING_IMPRESSIONS as dataset_ingest schedules on it: with an AssetWatcher on the landing bucket's
    SQS queue when ``TOLLGATE_LANDING_QUEUE_URL`` is set in the environment at parse time (never a
    Variable), else as it is. The watcher's module loads only then (tollgate.data.landing_queue)."""
    queue_url = os.environ.get("TOLLGATE_LANDING_QUEUE_URL", "").strip()
    if not queue_url:
        return LANDING_IMPRESSIONS
    from tollgate.data.landing_queue import landing_watcher

    return Asset(
        name=LANDING_IMPRESSIONS.name, uri=LANDING_IMPRESSIONS.uri, watchers=[landing_watcher(queue_url)]
    )


# extra: rev, content_hash, rows, quarantined_rows, window_start, window_end, partition,
#        data_repo, data_path, example
CURATED_DATASET = Asset(name="curated_dataset", uri="tollgate.datasets.curated")

# extra: training_run_id, mlflow_run_id, model_uri (folder or s3:// of the trained model files),
#        dataset rev/content_hash, metrics, attempts, preemptions, final_checkpoint
TRAINED_MODEL = Asset(name="trained_model", uri="tollgate.models.trained")

# extra: model_name, version, example
CHALLENGER_MODEL = Asset(name="challenger_model", uri="tollgate.models.challenger")

# extra: model_name, version (watch_champion reads what was promoted, from what and when, from the
#        version's signed promoted attestation, not from here)
CHAMPION_MODEL = Asset(name="champion_model", uri="tollgate.models.champion")

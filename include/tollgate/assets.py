"""The Assets that link Tollgate's DAGs, and the keys their events carry in ``extra``.

Ingest publishes CURATED_DATASET; train_model is scheduled on it and publishes TRAINED_MODEL, then
(after signed registration) CHALLENGER_MODEL, on which evaluate_and_promote is scheduled.
"""

from __future__ import annotations

import os

from airflow.sdk import Asset

# Scheme-less URIs on purpose: an Asset URI with a scheme makes Airflow load every provider's URI
# handlers (boto3 and more, ~1.5 s) while parsing each DAG file that defines it.

# An upstream system posts an event here (REST API) when a partition lands;
# extra: {"partition": "YYYY-MM-DD"}.
LANDING_IMPRESSIONS = Asset(name="landing_ad_impressions", uri="tollgate.landing.ad_impressions")


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
#        data_repo, data_path
CURATED_DATASET = Asset(name="curated_ctr_dataset", uri="tollgate.datasets.ctr_curated")

# extra: training_run_id, mlflow_run_id, model_uri (folder or s3:// of the trained model files),
#        dataset rev/content_hash, metrics, attempts, preemptions, final_checkpoint
TRAINED_MODEL = Asset(name="trained_ctr_model", uri="tollgate.models.ctr_trained")

# extra: model_name, version
CHALLENGER_MODEL = Asset(name="challenger_ctr_model", uri="tollgate.models.ctr_challenger")

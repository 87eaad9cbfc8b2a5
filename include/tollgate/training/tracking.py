"""MLflow tracking of a training run: ONE MLflow run per training run, across all its attempts.

The run is found by the tag ``tollgate.training_run_id`` and continued; otherwise created. Step
metrics are buffered and flushed just before each checkpoint is saved: if the attempt is killed
after a flush, the steps since the last checkpoint are recomputed (bit-identically) and logged
again with the same step numbers and values, so nothing is lost and nothing contradicts.
When no tracking URI is given, :class:`NullTracker` does nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_ID_TAG = "tollgate.training_run_id"


def _warn(message: str) -> None:
    print(f"[tollgate.training.tracking] {message}", file=sys.stderr, flush=True)


class NullTracker:
    run_id: str | None = None

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        pass

    def end(self, status: str) -> None:
        pass


def _dvc_source(dataset: dict[str, Any]):
    """An MLflow DatasetSource that records the DVC repo, rev, path and content hash."""
    from mlflow.data.dataset_source import DatasetSource

    class DvcDatasetSource(DatasetSource):
        def __init__(self, info: dict[str, Any]) -> None:
            self.info = info

        @staticmethod
        def _get_source_type() -> str:
            return "dvc"

        def load(self) -> Any:
            import dvc.api

            return dvc.api.read(self.info["path"], repo=self.info["repo"], rev=self.info["rev"], mode="rb")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return dict(self.info)

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DvcDatasetSource:
            return cls(dict(source_dict))

    return DvcDatasetSource(dataset)


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, training_run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.training_run_id = training_run_id
        self._buffer: list[Any] = []
        self._logged_params: dict[str, str] = {}
        self._has_dataset = False
        self.experiment_id = self._experiment_id(experiment)
        self.run_id, self.created = self._find_or_create()

    def _experiment_id(self, name: str) -> str:
        """Find or create the experiment. Two first trainings at once both find none; the one whose
        create loses gets RESOURCE_ALREADY_EXISTS and uses the experiment the other made."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def _find_or_create(self) -> tuple[str, bool]:
        escaped = self.training_run_id.replace("'", "\\'")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_ID_TAG}` = '{escaped}'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if runs:
            run = runs[0]
            self.client.update_run(run.info.run_id, status="RUNNING")
            self._logged_params = dict(run.data.params)
            inputs = run.inputs.dataset_inputs if run.inputs is not None else []
            self._has_dataset = bool(inputs)
            return run.info.run_id, False
        run = self.client.create_run(
            self.experiment_id, run_name=self.training_run_id, tags={RUN_ID_TAG: self.training_run_id}
        )
        return run.info.run_id, True

    def log_params(self, params: dict[str, Any]) -> None:
        """Params not logged yet (an earlier attempt may have died before logging them)."""
        from mlflow.entities import Param

        missing = [Param(k, str(v)) for k, v in params.items() if k not in self._logged_params]
        if missing:
            self.client.log_batch(self.run_id, params=missing)
            self._logged_params.update({p.key: p.value for p in missing})

    def log_dataset(self, frame: Any, dataset: dict[str, Any], target: str) -> None:
        """The training data as a run input, once per run."""
        if self._has_dataset:
            return
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        rev = dataset.get("rev") or "local-file"
        ds = mlflow.data.from_pandas(
            frame,
            source=_dvc_source(dataset),
            targets=target,
            name=f"ctr_curated@{rev[:12]}",
            digest=dataset["content_hash"][:32],
        )
        tags = [InputTag("mlflow.data.context", "training")]
        tags += [InputTag(f"dvc.{k}", str(v)) for k, v in dataset.items() if v is not None]
        inputs = [DatasetInput(ds._to_mlflow_entity(), tags=tags)]
        # Two trainings on the same dataset version (parallel spot runs) may both insert its row at the
        # same moment; the server answers the loser with a unique-constraint error. The row then exists,
        # and logging again links it to this run.
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                break
            except MlflowException as exc:
                if "UNIQUE constraint failed: datasets" not in str(exc) or attempt == 2:
                    raise
                time.sleep(0.5)
        self._has_dataset = True

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.log_step(step, metrics)
        self.flush()

    def flush(self) -> None:
        """Send buffered metrics. A tracking outage only delays them: training goes on."""
        while self._buffer:
            chunk = self._buffer[:1000]  # MLflow's per-request metric limit
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as exc:
                _warn(f"could not log {len(self._buffer)} metric values to {self.uri} ({exc}); will retry")
                return
            del self._buffer[: len(chunk)]

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def end(self, status: str) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def open_tracker(uri: str, experiment: str, training_run_id: str) -> MlflowTracker | NullTracker:
    if not uri:
        return NullTracker()
    return MlflowTracker(uri, experiment, training_run_id)


class OpeningTracker:
    """A tracker opened in a background thread, so the first training step never waits for MLflow.

    Opening costs the ``mlflow`` import (seconds of CPU in a fresh process) and a few requests; training
    needs none of it before its first checkpoint. Step metrics are buffered here until the tracker is
    open; every other call (flush, which each checkpoint makes first, tags, artifacts, end) waits for the
    opening and raises its error, so a tracking server that cannot be used still fails the attempt.
    """

    def __init__(self, open_: Callable[[], MlflowTracker | NullTracker]) -> None:
        self._open_ = open_
        self._tracker: MlflowTracker | NullTracker | None = None
        self._error: BaseException | None = None
        self._buffer: list[tuple[int, dict[str, float]]] = []
        self._thread = threading.Thread(target=self._open, name="tollgate-tracking-open", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            self._tracker = self._open_()
        except BaseException as exc:  # re-raised in the training thread by ready()
            self._error = exc

    def ready(self) -> MlflowTracker | NullTracker:
        """The open tracker (waits for the opening; raises what it raised), with the buffered steps."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        tracker = self._tracker
        assert tracker is not None
        for step, metrics in self._buffer:
            tracker.log_step(step, metrics)
        self._buffer.clear()
        return tracker

    @property
    def run_id(self) -> str | None:
        return self.ready().run_id

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if self._tracker is not None and not self._buffer:
            self._tracker.log_step(step, metrics)
        else:
            self._buffer.append((step, metrics))

    def flush(self) -> None:
        self.ready().flush()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.ready().log_metrics(step, metrics)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.ready().set_tags(tags)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.ready().log_artifacts(folder, artifact_path)

    def end(self, status: str) -> None:
        self.ready().end(status)

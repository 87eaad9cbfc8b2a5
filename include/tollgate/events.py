"""Which of a run's queued asset events it acts on: the newest, by the order of what the events name.

Airflow hands a run every event queued since the DAG's previous run (a backfill or a slow run queues
several), and ``triggering_asset_events`` is not in time order: taking its last element trains on, or
promotes, whatever happens to be last. "Newest" is defined per asset, by the data's own order, never by
list position or emission time:

- **curated dataset** (``train_model``): the partition date, then the version of that day
  (``data-2024-03-02-v2`` after ``data-2024-03-02``);
- **challenger** (``evaluate_and_promote``): the registered model version number.

Every other event is returned as skipped, with the reason, for the task log. Nothing here imports
Airflow: the functions take the events' ``extra`` dicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

_TAG = re.compile(r"^data-(\d{4}-\d{2}-\d{2})(?:-v(\d+))?$")

Extra = Mapping[str, Any]


class EventWithoutOrder(ValueError):
    """An event lacks what orders it (a dataset without partition or tag, a challenger without version)."""


def dataset_tag_order(tag: str) -> tuple[date, int]:
    """``data-2024-03-02`` → (2024-03-02, 1); ``data-2024-03-02-v3`` → (2024-03-02, 3)."""
    match = _TAG.match(tag)
    if not match:
        raise EventWithoutOrder(
            f"{tag!r} is not a dataset version tag (data-YYYY-MM-DD or data-YYYY-MM-DD-vN)"
        )
    return date.fromisoformat(match.group(1)), int(match.group(2) or 1)


def dataset_order(extra: Extra) -> tuple[date, int]:
    """Order of a curated-dataset event: its tag, else its partition date."""
    if extra.get("tag"):
        return dataset_tag_order(str(extra["tag"]))
    if extra.get("partition"):
        return date.fromisoformat(str(extra["partition"])), 1
    raise EventWithoutOrder(
        f"A curated-dataset event names neither a tag nor a partition: {dict(extra)}. Events come from "
        "dataset_ingest's publish task; an event posted by hand must carry 'tag' (data-YYYY-MM-DD) and 'rev'."
    )


def challenger_order(extra: Extra) -> int:
    """Order of a challenger event: the registered model version number."""
    try:
        return int(str(extra["version"]))
    except (KeyError, ValueError):
        raise EventWithoutOrder(
            f"A challenger event has no integer 'version': {dict(extra)}. Events come from train_model's "
            "register_challenger task ({'model_name': ..., 'version': ...})."
        ) from None


def describe_dataset(extra: Extra) -> str:
    return str(extra.get("tag") or f"partition {extra.get('partition')}")


def describe_challenger(extra: Extra) -> str:
    return f"{extra.get('model_name', '?')} v{extra.get('version', '?')}"


@dataclass(frozen=True)
class Choice:
    """The event a run acts on (None when there was none) and the ones it skips, with reasons."""

    chosen: Extra | None
    skipped: list[tuple[Extra, str]] = field(default_factory=list)

    def log_lines(self) -> list[str]:
        return [reason for _extra, reason in self.skipped]


def choose_newest(
    extras: Sequence[Extra], order: Callable[[Extra], Any], describe: Callable[[Extra], str]
) -> Choice:
    """The newest event by ``order``; every other one skipped (a duplicate of the chosen one too)."""
    if not extras:
        return Choice(None)
    ranked = sorted(extras, key=order)
    chosen = ranked[-1]
    skipped = [
        (
            extra,
            f"Skipped queued event {describe(extra)}: "
            + ("the same as" if order(extra) == order(chosen) else "older than")
            + f" {describe(chosen)}, which this run acts on.",
        )
        for extra in ranked[:-1]
    ]
    return Choice(chosen, skipped)


def newest_dataset_event(extras: Sequence[Extra]) -> Choice:
    return choose_newest(extras, dataset_order, describe_dataset)


def newest_challenger_event(extras: Sequence[Extra]) -> Choice:
    """The highest version; events of several registered models at once are refused (ambiguous)."""
    names = {str(extra.get("model_name")) for extra in extras}
    if len(names) > 1:
        raise EventWithoutOrder(
            f"Challenger events of several registered models reached one run ({', '.join(sorted(names))}); "
            "trigger evaluate_and_promote by hand with Params model_name and version for each."
        )
    return choose_newest(extras, challenger_order, describe_challenger)


def newest_tag(tags: Sequence[str]) -> str | None:
    """The newest dataset version among ``tags`` (others ignored), by date then version."""
    ordered = [tag for tag in tags if _TAG.match(tag)]
    return max(ordered, key=dataset_tag_order) if ordered else None


def stale_dataset_reason(chosen: Extra, newest_known_tag: str | None) -> str | None:
    """Why training on ``chosen`` would be training on stale data, or None when it is the newest.

    Stale: a version published by a backfill, or one older than the newest curated version the data
    repository holds (``newest_known_tag``).
    """
    name = describe_dataset(chosen)
    if newest_known_tag and dataset_order(chosen) < dataset_tag_order(newest_known_tag):
        return (
            f"Not training on {name}: it is older than the newest curated version, {newest_known_tag}. "
            "Training follows the newest data only."
        )
    if chosen.get("run_type") == "backfill":
        return f"Not training on {name}: it was published by a backfill, which does not retrain by default."
    return None

"""Which challenger an ``evaluate_and_promote`` run evaluates: the one named by hand, else the newest.

The run's Params (``model_name``, ``version``) choose a version on purpose. Otherwise the newest of the
triggering challenger events by version number (never the list's last element; the others are logged
as skipped), and only while it is still the newest challenger: when the registry's ``challenger`` alias
already points to a later version, this run is superseded before it evaluates anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tollgate.events import newest_challenger_event


class SupersededChallenger(Exception):
    """A newer challenger exists: this run must not evaluate (or ask approval for) an older one."""


def choose_challenger(
    *,
    param_name: str | None,
    param_version: str | int | None,
    triggering_extras: Sequence[Mapping[str, Any]],
    default_model: str,
    current_challenger: Callable[[str], str | None],
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """``{"model_name", "version"}`` to evaluate; raises :class:`SupersededChallenger` for a stale event."""
    if param_version:
        return {"model_name": param_name or default_model, "version": str(param_version)}
    if not triggering_extras:
        raise ValueError(
            "No challenger to evaluate: trigger with Params model_name and version, or let the "
            "challenger Asset event from train_model trigger this DAG."
        )
    choice = newest_challenger_event(triggering_extras)
    for line in choice.log_lines():
        log(line)
    chosen = choice.chosen or {}
    name, version = str(chosen.get("model_name") or default_model), str(chosen["version"])
    current = current_challenger(name)
    if current is not None and current.isdigit() and int(current) > int(version):
        raise SupersededChallenger(
            f"{name} v{version} is superseded by v{current}, the current challenger: not evaluating an "
            f"older model (v{current} gets its own run). To evaluate v{version} anyway, trigger "
            f"evaluate_and_promote with Params model_name={name} and version={version}."
        )
    log(f"Evaluating {name} v{version} (the newest challenger event of this run).")
    return {"model_name": name, "version": version}

"""Is a failed training attempt a spot preemption (resume from the checkpoint) or a real failure?

Plain Python. The local launcher classifies by exit status; the pod launcher by the pod's status as the
Kubernetes API returns it (the camelCase manifest dict, ``ApiClient().sanitize_for_serialization(pod)``).
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tollgate.training import exit_codes


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PREEMPTED = "preempted"  # spot capacity went away: resume from the checkpoint, own budget
    FAILED = "failed"  # a real failure: small retry budget (none for bad input)
    LOST = "lost"  # an attempt that never reported (the worker died with it): counted as a preemption


@dataclass(frozen=True)
class Classification:
    outcome: Outcome
    reason: str
    exit_code: int | None = None
    retryable: bool = True  # False for failures that a retry cannot fix (bad input)

    @property
    def is_preemption(self) -> bool:
        return self.outcome in (Outcome.PREEMPTED, Outcome.LOST)


# Pod-level status reasons that mean "the node or its capacity went away".
PREEMPTION_POD_REASONS = frozenset({"Evicted", "NodeLost", "Shutdown", "NodeShutdown", "Terminated"})


def classify_exit(exit_code: int | None, *, interrupted: bool = False) -> Classification:
    """Classify a local trainer process by its exit status.

    ``exit_code`` is ``Popen.returncode`` (negative for a signal death). ``interrupted`` says a spot
    interruption was injected into this attempt: a signal death is then the interruption (e.g. an injected
    SIGKILL), while a signal death nobody asked for (the kernel's OOM killer) is a failure.
    """
    if exit_code == exit_codes.SUCCESS:
        return Classification(Outcome.SUCCEEDED, "trainer exited 0", exit_code)
    if exit_code == exit_codes.PREEMPTED:
        return Classification(
            Outcome.PREEMPTED, "trainer checkpointed on SIGTERM and exited 75 (preempted)", exit_code
        )
    if exit_code is not None and exit_code < 0:
        name = _signal_name(-exit_code)
        if interrupted:
            return Classification(
                Outcome.PREEMPTED, f"killed by {name} (injected spot interruption)", exit_code
            )
        return Classification(
            Outcome.FAILED, f"killed by {name} without a spot interruption (e.g. out of memory)", exit_code
        )
    if exit_code == exit_codes.BAD_INPUT:
        return _bad_input(exit_code)
    if exit_code == exit_codes.SUPERSEDED:
        return Classification(
            Outcome.FAILED,
            "a newer attempt of this training run took over its checkpoint folder; this attempt stopped "
            "without writing (exit 3)",
            exit_code,
        )
    return Classification(Outcome.FAILED, f"trainer failed with exit code {exit_code}", exit_code)


def classify_pod(pod: Mapping[str, Any] | None, container: str = "base") -> Classification:
    """Classify a finished (or vanished) training pod from its API manifest.

    Preemption: pod not found, being deleted, evicted, its node lost or shut down, a DisruptionTarget
    condition, or the trainer's own exit 75. Failure: OOMKilled, exit 2 (bad input), any other exit.
    """
    if not pod:
        return Classification(Outcome.PREEMPTED, "pod not found (deleted with its node or by the cluster)")
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    terminated = _terminated_state(status, container)
    exit_code = terminated.get("exitCode") if terminated else None

    if terminated and terminated.get("reason") == "OOMKilled":
        return Classification(Outcome.FAILED, "container OOMKilled: raise the memory limit", exit_code)
    if exit_code == exit_codes.SUCCESS and status.get("phase") == "Succeeded":
        return Classification(Outcome.SUCCEEDED, "pod succeeded", exit_code)
    if exit_code == exit_codes.PREEMPTED:
        return Classification(
            Outcome.PREEMPTED, "trainer checkpointed on SIGTERM and exited 75 (preempted)", exit_code
        )
    reason = status.get("reason") or ""
    if reason in PREEMPTION_POD_REASONS:
        message = status.get("message") or ""
        return Classification(Outcome.PREEMPTED, f"pod {reason}: {message}".rstrip(": "), exit_code)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            # Kubernetes sets it before deleting a pod for a disruption (PreemptionByScheduler,
            # DeletionByTaintManager, EvictionByEvictionAPI, DeletionByPodGC, TerminationByKubelet).
            why = condition.get("reason") or "unknown reason"
            return Classification(Outcome.PREEMPTED, f"pod disrupted ({why})", exit_code)
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return Classification(
                Outcome.PREEMPTED,
                f"no capacity could schedule the pod: {condition.get('message', '')}".rstrip(": "),
            )
    if meta.get("deletionTimestamp"):
        return Classification(Outcome.PREEMPTED, "pod deleted while running", exit_code)
    if exit_code == exit_codes.BAD_INPUT:
        return _bad_input(exit_code)
    if exit_code is None:
        phase = status.get("phase") or "unknown"
        return Classification(Outcome.FAILED, f"pod ended in phase {phase} without a container exit code")
    return Classification(Outcome.FAILED, f"trainer container failed with exit code {exit_code}", exit_code)


def _terminated_state(status: Mapping[str, Any], container: str) -> dict[str, Any]:
    for item in status.get("containerStatuses") or []:
        if item.get("name") == container:
            state = item.get("state") or {}
            last = item.get("lastState") or {}
            return state.get("terminated") or last.get("terminated") or {}
    return {}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _bad_input(exit_code: int) -> Classification:
    """Exit 2: the trainer refused its input; no retry can fix it, so no budget is spent on one."""
    return Classification(
        Outcome.FAILED,
        "trainer rejected its input (exit 2, bad input): a retry cannot fix it",
        exit_code,
        False,
    )

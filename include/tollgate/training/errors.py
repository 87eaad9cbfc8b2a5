"""Exceptions that map to the trainer's exit codes (the classes of the tollgate-torch helper package)."""

from __future__ import annotations

from tollgate_torch import BadInput, Preempted, StaleAttempt

__all__ = ["BadInput", "Preempted", "StaleAttempt"]

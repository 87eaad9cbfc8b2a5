"""Exceptions that map to the trainer's exit codes."""

from __future__ import annotations


class BadInput(Exception):
    """Input the user must fix (arguments, dataset, rev). The message names the problem and the fix."""


class Preempted(Exception):
    """Raised when SIGTERM arrives outside the training loop (set-up, evaluation, upload)."""


class StaleAttempt(Exception):
    """A newer attempt of the same training run owns the checkpoint folder: this one must not write."""

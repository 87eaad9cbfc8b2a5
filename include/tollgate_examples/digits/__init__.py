"""Digits example: 8x8 handwritten-digit scans -> a small CNN -> probabilities of 0..9 (multiclass).

The proof that Tollgate is not tied to one model: the same DAGs land, validate (its own suite and
faults), version, train (its own trainer, through the contract, with preemption and exact resume),
sign, gate (accuracy, macro-F1, log loss), approve and promote it. Select it with
``TOLLGATE_EXAMPLE=digits`` (``make demo EXAMPLE=digits``).

``EXAMPLE`` is built on first access (``example.py``): the logged pyfunc imports this package's
``model`` module inside a model folder that carries no other Tollgate code.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "EXAMPLE":
        from tollgate_examples.digits.example import EXAMPLE

        return EXAMPLE
    raise AttributeError(name)

"""Exit codes of ``python -m tollgate.training``; the launcher classifies attempts by them.

They are the trainer contract's codes, defined once in the tollgate-torch helper package.
"""

from tollgate_torch import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_PREEMPTED, EXIT_SUCCESS, EXIT_SUPERSEDED

SUCCESS = EXIT_SUCCESS
FAILURE = EXIT_FAILURE
BAD_INPUT = EXIT_BAD_INPUT  # missing dataset or rev, bad arguments: retrying will not help
SUPERSEDED = EXIT_SUPERSEDED  # a newer attempt claimed the checkpoint folder: this one stopped unwritten
PREEMPTED = EXIT_PREEMPTED  # stopped on SIGTERM (spot notice) after saving a checkpoint: resume on retry

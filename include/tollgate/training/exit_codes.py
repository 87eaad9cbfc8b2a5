"""Exit codes of ``python -m tollgate.training``; the launcher classifies attempts by them."""

SUCCESS = 0
FAILURE = 1
BAD_INPUT = 2  # missing dataset or rev, bad arguments: retrying will not help
SUPERSEDED = 3  # a newer attempt of the run claimed the checkpoint folder: this stale one stopped unwritten
PREEMPTED = 75  # stopped on SIGTERM (spot notice) after saving a checkpoint: resume on retry (EX_TEMPFAIL)

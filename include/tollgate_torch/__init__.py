"""tollgate-torch: the pieces of a PyTorch training loop that survive spot preemption.

Installable on its own into any training image (``pip install ./packages/tollgate-torch``); it
depends on torch and fsspec only (numpy RNG state is saved too when numpy is importable) and imports
nothing of Tollgate, Airflow or MLflow. A trainer that honours Tollgate's trainer contract uses:

* :class:`~tollgate_torch.checkpoints.CheckpointStore`: atomic checkpoints with a sha256 manifest,
  keep-last-K and fallback to the previous one when the newest is corrupt (local folder or s3://);
* :class:`~tollgate_torch.preemption.PreemptionGuard`: SIGTERM (the spot notice) sets a flag inside
  the loop, so the loop finishes its step, checkpoints and exits with :data:`EXIT_PREEMPTED`;
* :mod:`~tollgate_torch.state`: every RNG state and a per-epoch order that is a pure function of
  (seed, epoch), so a resumed attempt recomputes the interrupted steps bit for bit.

Exit codes of the contract: 0 success, 1 failure, 2 bad input (no retry), 3 superseded by a newer
attempt (no retry), 75 preempted (resume).
"""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2  # missing dataset, bad arguments: retrying will not help
EXIT_SUPERSEDED = 3  # a newer attempt of the run claimed the checkpoint folder: this one stopped unwritten
EXIT_PREEMPTED = 75  # stopped on SIGTERM after saving a checkpoint: resume on retry (EX_TEMPFAIL)


class Preempted(Exception):
    """SIGTERM arrived outside the training loop (set-up, evaluation, upload): exit with EXIT_PREEMPTED."""


class StaleAttempt(Exception):
    """A newer attempt of the same training run owns the checkpoint folder: this one must not write."""


class BadInput(Exception):
    """Input the user must fix (arguments, dataset). The message names the problem and the fix."""

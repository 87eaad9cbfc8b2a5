"""Retries for calls to the MLflow server: transient failures (server down, restarting, 5xx, timeouts)
are retried with capped exponential backoff until a deadline; anything else fails at once."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# Error codes a server sends when a later attempt may succeed. INTERNAL_ERROR is not among them: it is
# also what every client-side MlflowException defaults to, so it counts only with a transient message.
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
_TRANSIENT_TEXT = re.compile(
    r"failed with exception"  # the client wrapping a requests/urllib3 connection error
    r"|failed with error code 5\d\d"  # a proxy or the server answering 502/503/504...
    r"|max retries exceeded|connection refused|connection reset|connection aborted|remote end closed"
    r"|read timed out|database is locked",
    re.IGNORECASE,
)


def is_transient(err: BaseException) -> bool:
    """True for failures that a later attempt can get past (the server was down or overloaded)."""
    import requests

    if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError):
        return True
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code in _TRANSIENT_CODES or bool(_TRANSIENT_TEXT.search(str(err)))
    return False


class MlflowUnavailableError(RuntimeError):
    """MLflow kept failing transiently until the deadline."""


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    deadline_s: float = 300.0,
    first_delay_s: float = 1.0,
    max_delay_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call`` until it succeeds, retrying transient MLflow failures until ``deadline_s``.

    Waits 1, 2, 4 ... s (capped at ``max_delay_s``); gives up instead of sleeping past the deadline.
    """
    import tenacity

    def log_retry(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception()
        log.warning(
            "%s: MLflow unavailable (attempt %d, %s: %s); retrying in %.0f s",
            what,
            state.attempt_number,
            type(err).__name__,
            str(err)[:200],
            state.upcoming_sleep,
        )

    def give_up(state: tenacity.RetryCallState) -> T:
        err = state.outcome.exception()
        raise MlflowUnavailableError(
            f"{what}: MLflow still unavailable after {state.attempt_number} attempts in "
            f"{state.seconds_since_start:.0f} s ({type(err).__name__}: {str(err)[:300]}). Check that the "
            "tracking server is up (MLFLOW_TRACKING_URI / Connection mlflow_default) and run the task "
            "again; it resumes where it stopped."
        ) from err

    policy = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_exponential(multiplier=first_delay_s, max=max_delay_s),
        stop=tenacity.stop_before_delay(deadline_s),
        sleep=sleep,
        before_sleep=log_retry,
        retry_error_callback=give_up,
    )
    return policy(call)

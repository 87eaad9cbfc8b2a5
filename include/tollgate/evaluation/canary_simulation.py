"""Synthetic prediction logs in the canary schema: for the power benchmark and the verdict tests.

Latencies are log-normal (median 10 ms); a binary model's score is a noisy view of a latent
risk, the label a Bernoulli draw of that risk; the shadow challenger scores the same requests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tollgate.evaluation import canary_schema as col


def canary_log(
    rng: np.random.Generator,
    n_total: int,
    weight: float,
    *,
    latency_factor: float = 1.0,
    latency_add_ms: float = 0.0,
    error_rate_b: float = 0.01,
    error_rate_c: float = 0.01,
    median_ms: float = 10.0,
    sigma: float = 0.4,
) -> pd.DataFrame:
    """A canary stage's log: each request goes to the challenger with probability ``weight``."""
    is_c = rng.uniform(size=n_total) < weight
    latency = rng.lognormal(np.log(median_ms), sigma, n_total)
    latency = np.where(is_c, latency * latency_factor + latency_add_ms, latency)
    error = rng.uniform(size=n_total) < np.where(is_c, error_rate_c, error_rate_b)
    ids = np.arange(n_total)
    return pd.DataFrame(
        {
            col.REQUEST_ID: ids,
            col.TIMESTAMP: pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(n_total), unit="s"),
            col.ROLLOUT_ID: "r1",
            col.ARM: np.where(is_c, col.CHALLENGER, col.CHAMPION),
            col.SERVED_VERSION: np.where(is_c, "2", "1"),
            col.SHADOW_VERSION: None,
            col.SERVED_OUTPUT: rng.uniform(size=n_total),
            col.SHADOW_OUTPUT: np.nan,
            col.LATENCY_MS: latency,
            col.SHADOW_LATENCY_MS: np.nan,
            col.STATUS: np.where(error, "error", col.STATUS_OK),
        }
    )


def shadow_log(
    rng: np.random.Generator,
    n_pairs: int,
    *,
    noise_b: float = 1.0,
    noise_c: float = 1.0,
    calibration_c: float = 1.0,
    labelled_share: float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shadow pairs of a binary model and their labels.

    Scores are sigmoid(latent + noise); more noise means a lower AUC; ``calibration_c`` scales the
    challenger's odds (1: calibrated like the champion). Returns (log, labels).
    """
    latent = rng.normal(-2.0, 1.2, n_pairs)
    label = (rng.uniform(size=n_pairs) < 1 / (1 + np.exp(-latent))).astype(int)
    shared = rng.normal(0, 1, n_pairs)
    score_b = latent + noise_b * shared
    score_c = latent + noise_c * (0.8 * shared + 0.6 * rng.normal(0, 1, n_pairs))

    def shrink(score: np.ndarray, noise: float) -> np.ndarray:
        # the calibrated probability given a noisy latent: shrink toward the mean
        k = 1.2**2 / (1.2**2 + noise**2)
        return 1 / (1 + np.exp(-(-2.0 + k * (score + 2.0)) / np.sqrt(1 + k * noise**2 * 0.35)))

    p_b, p_c = shrink(score_b, noise_b), shrink(score_c, noise_c)
    odds_c = calibration_c * p_c / (1 - p_c)
    p_c = odds_c / (1 + odds_c)
    ids = np.arange(n_pairs).astype(str)
    log = pd.DataFrame(
        {
            col.REQUEST_ID: ids,
            col.TIMESTAMP: pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(n_pairs), unit="s"),
            col.ROLLOUT_ID: "r1",
            col.ARM: col.CHAMPION,
            col.SERVED_VERSION: "1",
            col.SHADOW_VERSION: "2",
            col.SERVED_OUTPUT: p_b,
            col.SHADOW_OUTPUT: p_c,
            col.LATENCY_MS: rng.lognormal(np.log(10), 0.4, n_pairs),
            col.SHADOW_LATENCY_MS: rng.lognormal(np.log(10), 0.4, n_pairs),
            col.STATUS: col.STATUS_OK,
        }
    )
    keep = rng.uniform(size=n_pairs) < labelled_share
    labels = pd.DataFrame({col.REQUEST_ID: ids[keep], col.LABEL: label[keep]})
    return log, labels

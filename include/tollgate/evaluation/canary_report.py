"""The HTML canary report of one rollout: what each variant served, drawn from the prediction log.

Latency distributions per variant, score distributions per variant and, for binary models, a calibration
curve per variant on the matured labels, above the stage verdict table. Self-contained HTML with inline
SVG (no plotting library, nothing fetched when opened), stored as an MLflow artifact of the challenger's
training run and linked from the approval. It shows; the verdicts decide.

Variants: ``champion`` (requests the champion served), ``challenger (canary)`` (requests it served in a
canary stage) and ``challenger (shadow)`` (mirrored requests, with the shadow latency and output).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from tollgate.evaluation import canary_schema as col
from tollgate.extensions import TaskType

if TYPE_CHECKING:
    import pandas as pd

CALIBRATION_BINS = 10
HISTOGRAM_BINS = 30
COLOURS = {"champion": "#1f77b4", "challenger (canary)": "#d62728", "challenger (shadow)": "#ff7f0e"}


def _scores(outputs: pd.Series) -> np.ndarray:
    """One number per request: the output, or for class probabilities the top class's probability."""
    values = outputs.dropna().tolist()
    if values and isinstance(values[0], (list, tuple, np.ndarray)):
        return np.array([float(np.max(v)) for v in values])
    return np.asarray(values, dtype=float)


def variants(log: pd.DataFrame, labels: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Per variant: latencies (ms), scores and, where matured, (score, label) pairs; successful requests."""
    joined = col.join_labels(log, labels)
    ok = joined[joined[col.STATUS] == col.STATUS_OK]
    served = {
        "champion": ok[ok[col.ARM] == col.CHAMPION],
        "challenger (canary)": ok[ok[col.ARM] == col.CHALLENGER],
    }
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, rows in served.items():
        out[name] = _variant(rows, col.LATENCY_MS, col.SERVED_OUTPUT)
    out["challenger (shadow)"] = _variant(
        ok[ok[col.SHADOW_OUTPUT].notna()], col.SHADOW_LATENCY_MS, col.SHADOW_OUTPUT
    )
    return {name: v for name, v in out.items() if len(v["latency_ms"]) or len(v["scores"])}


def _variant(rows: pd.DataFrame, latency: str, output: str) -> dict[str, np.ndarray]:
    labelled = rows[rows[col.LABEL].notna() & rows[output].notna()]
    return {
        "latency_ms": rows[latency].dropna().to_numpy(float),
        "scores": _scores(rows[output]),
        "labelled_scores": _scores(labelled[output]),
        "labels": labelled[col.LABEL].to_numpy(float),
    }


def calibration(
    scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1]: mean predicted, observed positive rate, n (empty bins left out)."""
    index = np.clip((scores * bins).astype(int), 0, bins - 1)
    points = []
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            points.append(
                {"predicted": float(scores[in_bin].mean()), "observed": float(labels[in_bin].mean()),
                 "n": int(in_bin.sum())}
            )  # fmt: skip
    return points


def histograms(series: dict[str, np.ndarray], bins: int = HISTOGRAM_BINS, log_scale: bool = False) -> dict:
    """Shared bin edges for all variants and each variant's share of its requests per bin."""
    values = [v for v in series.values() if len(v)]
    if not values:
        return {"edges": [], "shares": {}}
    allv = np.concatenate(values)
    low, high = float(allv.min()), float(allv.max())
    if log_scale:
        low = max(low, 1e-3)
        edges = np.geomspace(low, max(high, low * 1.01), bins + 1)
    else:
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    shares = {}
    for name, v in series.items():
        if len(v):
            counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
            shares[name] = (counts / len(v)).tolist()
    return {"edges": edges.tolist(), "shares": shares}


# ---- SVG ------------------------------------------------------------------------------------------
W, H, PAD = 560, 260, 40


def _axes(title: str, xlabel: str, ylabel: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="24" stroke="#333"/>',
        f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>',
        f'<text x="12" y="{H / 2}" font-size="11" transform="rotate(-90 12 {H / 2})" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>',
    ]


def _legend(names: list[str]) -> list[str]:
    return [
        f'<text x="{W - 200}" y="{36 + 14 * i}" font-size="11" fill="{COLOURS.get(n, "#555")}">'
        f"■ {html.escape(n)}</text>"
        for i, n in enumerate(names)
    ]


def histogram_svg(hist: dict, title: str, xlabel: str) -> str:
    """Step lines of each variant's share per bin on shared edges."""
    edges, shares = hist["edges"], hist["shares"]
    parts = _axes(title, xlabel, "share of requests")
    if not shares:
        return "\n".join([*parts, '<text x="80" y="120">no requests</text>', "</svg>"])
    top = max(max(s) for s in shares.values()) or 1.0
    span_x, span_y = W - 10 - PAD, H - PAD - 30
    for name, share in shares.items():
        points = []
        for i, s in enumerate(share):
            y = H - PAD - span_y * s / top
            points += [
                f"{PAD + span_x * i / len(share):.1f},{y:.1f}",
                f"{PAD + span_x * (i + 1) / len(share):.1f},{y:.1f}",
            ]
        parts.append(
            f'<polyline fill="none" stroke="{COLOURS.get(name, "#555")}" stroke-width="1.5" '
            f'points="{" ".join(points)}"/>'
        )
    parts += [
        f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">{edges[0]:.3g}</text>',
        f'<text x="{W - 10}" y="{H - PAD + 14}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>',
        *_legend(list(shares)),
        "</svg>",
    ]
    return "\n".join(parts)


def calibration_svg(curves: dict[str, list[dict[str, float]]]) -> str:
    """Observed positive rate against mean predicted probability per bin; the diagonal is perfect."""
    parts = _axes("Calibration on matured labels", "mean predicted probability", "observed positive rate")
    span_x, span_y = W - 10 - PAD, H - PAD - 30
    parts.append(
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="30" stroke="#aaa" stroke-dasharray="4"/>'
    )
    for name, points in curves.items():
        xy = [f"{PAD + span_x * p['predicted']:.1f},{H - PAD - span_y * p['observed']:.1f}" for p in points]
        colour = COLOURS.get(name, "#555")
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(xy)}"/>')
    parts += [*_legend(list(curves)), "</svg>"]
    return "\n".join(parts)


# ---- the page -------------------------------------------------------------------------------------
def _verdict_rows(records: dict[str, dict[str, Any] | None]) -> str:
    rows = []
    for stage, record in records.items():
        if record is None:
            rows.append(f"<tr><td>{html.escape(stage)}</td><td>not run</td><td></td></tr>")
            continue
        stats = "<br>".join(
            f"{html.escape(s['name'])}: {s['estimate']:.4g} [{s['low']:.4g}, {s['high']:.4g}] n={s['n']}"
            for s in record.get("statistics") or []
        )
        reasons = "<br>".join(html.escape(r) for r in record.get("reasons") or [])
        rows.append(
            f"<tr><td>{html.escape(stage)}</td><td><b>{html.escape(record['verdict'])}</b><br>{reasons}</td>"
            f"<td>{stats}</td></tr>"
        )
    return "\n".join(rows)


def render(
    rollout: dict[str, Any],
    records: dict[str, dict[str, Any] | None],
    log: pd.DataFrame,
    labels: pd.DataFrame,
) -> str:
    """The report of ``rollout`` (its stored record: model_name, version, rollout_id, task)."""
    by_variant = variants(log, labels)
    counts = ", ".join(f"{name}: {len(v['latency_ms'])} requests" for name, v in by_variant.items())
    figures = [
        histogram_svg(
            histograms({n: v["latency_ms"] for n, v in by_variant.items()}, log_scale=True),
            "Latency per variant (log scale)",
            "milliseconds",
        ),
        histogram_svg(
            histograms({n: v["scores"] for n, v in by_variant.items()}), "Scores per variant", "score"
        ),
    ]
    if TaskType(rollout["task"]) is TaskType.BINARY:
        curves = {
            n: calibration(v["labelled_scores"], v["labels"])
            for n, v in by_variant.items()
            if len(v["labels"])
        }
        figures.append(calibration_svg(curves))
    title = f"Canary report: {rollout['model_name']} v{rollout['version']}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}td{border-top:1px solid #ddd;padding:4px;"
            "vertical-align:top}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>Rollout <code>{html.escape(rollout['rollout_id'])}</code>; {html.escape(counts)}.</p>",
            "<table><tr><th>stage</th><th>verdict</th><th>statistics [95 % interval]</th></tr>",
            _verdict_rows(records),
            "</table>",
            *figures,
            "</body></html>",
        ]
    )


def publish_report(rollout: dict[str, Any], records: dict[str, dict[str, Any] | None], mlflow_ui: str) -> str:
    """Render the report from the rollout's prediction log, store it as an MLflow artifact of the version's
    training run, tag the version with its location and return a link to it.

    The report shows what the verdicts decided from; a failure to draw or store it is said in its place
    (and in the task log) rather than failing the gate, which rests on the stored verdicts."""
    import logging

    try:
        return _publish(rollout, records, mlflow_ui)
    except Exception as error:  # a view of the evidence, not the evidence
        logging.getLogger(__name__).warning("canary report not stored: %s", error, exc_info=True)
        return f"not stored ({type(error).__name__}: {error})"


def _publish(rollout: dict[str, Any], records: dict[str, dict[str, Any] | None], mlflow_ui: str) -> str:
    import time

    from tollgate.evaluation.canary_log import load_for_analysis
    from tollgate.registry.register import mlflow_client
    from tollgate.runtime import mlflow_uri

    client = mlflow_client(mlflow_uri())
    name, version = rollout["model_name"], str(rollout["version"])
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        return "not stored (the version has no MLflow run)"
    log, labels = load_for_analysis(rollout["storage_root"], rollout["rollout_id"], time.time())
    path = f"canary_report/{rollout['rollout_id']}.html"
    client.log_text(run_id, render(rollout, records, log, labels), path)
    experiment = client.get_run(run_id).info.experiment_id
    link = f"{mlflow_ui}/#/experiments/{experiment}/runs/{run_id}/artifacts/{path}"
    client.set_model_version_tag(name, version, TAG_REPORT, f"runs:/{run_id}/{path}")
    return link


TAG_REPORT = "tollgate.rollout.report"

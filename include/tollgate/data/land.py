"""Land one day's partition in the landing area, as the upstream system would (optionally with a fault).

    python -m tollgate.data.land --date 2024-03-01
    python -m tollgate.data.land --date 2024-03-02 --fault null_burst --landing s3://bucket/landing

The landing area defaults to the Variable's embedded default (``tollgate_landing_uri``; env
``AIRFLOW_VAR_TOLLGATE_LANDING_URI`` overrides it). An existing partition is kept unless ``--replace``
(a re-delivery). Prints one JSON line: uri, partition, rows, fault, written. To have the platform ingest
it right away, post a landing asset event (see the dataset_ingest DAG's docs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from tollgate.config import default_for
from tollgate.data import generator


def default_landing() -> str:
    return os.environ.get("AIRFLOW_VAR_TOLLGATE_LANDING_URI") or default_for("tollgate_landing_uri")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollgate.data.land", description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True, help="partition day, YYYY-MM-DD")
    parser.add_argument("--fault", choices=generator.fault_names(), help="inject this fault")
    parser.add_argument("--landing", default=None, help="landing area: folder or s3://bucket/prefix")
    parser.add_argument("--rows", type=int, default=generator.DEFAULT_ROWS, help="rows before faults")
    parser.add_argument("--seed", type=int, default=generator.DEFAULT_SEED)
    parser.add_argument("--share", type=float, default=0.02, help="share of rows a row-level fault touches")
    parser.add_argument("--replace", action="store_true", help="replace an existing partition (re-delivery)")
    args = parser.parse_args(argv)
    try:
        landed = generator.land(
            args.date,
            args.landing or default_landing(),
            fault=args.fault,
            rows=args.rows,
            seed=args.seed,
            share=args.share,
            replace=args.replace,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(asdict(landed)))
    if not landed.written:
        print(
            f"{landed.uri} already existed and was kept; pass --replace to deliver it again.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

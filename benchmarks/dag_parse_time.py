"""Parse time of each DAG file next to an empty DAG file that only imports ``airflow.sdk``.

Each file is parsed in a fresh interpreter, as the dag-processor parses each file in a child:
- **cold**: the file's execution including every import it triggers (``airflow.sdk`` included); the
  ratio to the empty file says how much the DAG file adds to Airflow's own start-up;
- **warm**: ``airflow.sdk`` already imported (as in a long-lived dag-processor), so the figure is the
  file's own cost: its imports beyond the SDK and building the DAG object.
Usage: python benchmarks/dag_parse_time.py [--repeat N]   (medians of N runs)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EMPTY_DAG = "from airflow.sdk import DAG  # noqa: F401\n"

PROBE = """
import importlib.util, sys, time
if sys.argv[2] == "warm":
    import airflow.sdk  # noqa: F401
path = sys.argv[1]
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - start)
"""


def parse_seconds(path: Path, mode: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path), mode], capture_output=True, text=True, check=True
        ).stdout
        samples.append(float(out.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        files = [("(empty, imports airflow.sdk)", empty)]
        files += [(p.name, p) for p in sorted((REPO_ROOT / "dags").glob("*.py"))]
        rows = [
            (name, parse_seconds(p, "cold", args.repeat), parse_seconds(p, "warm", args.repeat))
            for name, p in files
        ]
    base_cold, base_warm = rows[0][1], rows[0][2]
    print(f"{'file':<30} {'cold ms':>9} {'cold ratio':>11} {'warm ms':>9} {'warm extra ms':>14}")
    for name, cold, warm in rows:
        extra = (warm - base_warm) * 1000
        print(f"{name:<30} {cold * 1000:>9.0f} {cold / base_cold:>11.2f} {warm * 1000:>9.1f} {extra:>14.1f}")


if __name__ == "__main__":
    main()

"""Parse time of each DAG file next to an empty DAG file that only imports ``airflow.sdk``.

Each file is parsed in a fresh interpreter (as the dag-processor does per file) after a warm-up
import of ``airflow.sdk``, so the figure is the file's own cost. Prints a table with the ratio.
Usage: python benchmarks/dag_parse_time.py [--repeat N]
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
import airflow.sdk  # warm: the dag-processor has it loaded already
path = sys.argv[1]
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - start)
"""


def parse_seconds(path: Path, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True
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
        baseline = parse_seconds(empty, args.repeat)
    print(f"{'file':<32} {'parse ms':>10} {'ratio to empty':>15}")
    print(f"{'(empty, imports airflow.sdk)':<32} {baseline * 1000:>10.2f} {1.0:>15.1f}")
    for dag_file in sorted((REPO_ROOT / "dags").glob("*.py")):
        seconds = parse_seconds(dag_file, args.repeat)
        print(f"{dag_file.name:<32} {seconds * 1000:>10.2f} {seconds / baseline:>15.1f}")


if __name__ == "__main__":
    main()

"""Time from a spot notice to training again, through Airflow on the local platform: what a user sees.

Starts the local platform (api-server, scheduler, dag-processor, triggerer, LocalExecutor, MLflow) in a
temporary folder, makes a git + DVC data repository with one curated dataset, and triggers ``train_model``
``--trials`` times with a SIGTERM injected at step ``--at-step`` of the first try. For each run it reads
the two tries' logs and records through the REST API and prints the split of SIGTERM -> first new step of
the retry (tollgate.launch.recovery: exit, scheduling, start, data, restore, first step) as median, min
and max over the trials. Needs a quiet machine for figures worth comparing; the platform alone takes
about 35 s to start.

Usage: python benchmarks/preemption_resume_airflow.py [--trials 3] [--rows 6000] [--at-step 20]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tollgate.data.schema import CURATED_PATH
from tollgate.launch.recovery import PHASES, from_airflow
from tollgate.platform.api import AirflowClient
from tollgate.platform.stack import LocalStack, Ports
from tollgate.training.synthetic import write_parquet

DAG_ID = "train_model"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_repo(root: Path, rows: int) -> tuple[Path, str]:
    """A git + DVC repository holding one curated dataset version, pushed to a local DVC remote."""
    repo = root / "data-repo"
    (repo / Path(CURATED_PATH).parent).mkdir(parents=True)

    def run(*command: str) -> str:
        return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.email", "bench@tollgate.local")
    run("git", "config", "user.name", "bench")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "remote", "add", "-d", "local", str(root / "dvc-remote"))
    write_parquet(repo / CURATED_PATH, rows, seed=3)
    run(str(BIN / "dvc"), "add", "-q", CURATED_PATH)
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "curated dataset v1")
    run(str(BIN / "dvc"), "push", "-q")
    return repo, run("git", "rev-parse", "HEAD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--at-step", type=int, default=20)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    args = parser.parse_args()
    # A timeout's SIGTERM still stops the platform (its services run in their own process groups).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-airflow-") as tmp:
        root = Path(tmp)
        repo, rev = data_repo(root, args.rows)
        ports = Ports(
            airflow=free_port(), mlflow=free_port(), worker_log=free_port(), trigger_log=free_port(),
            router=free_port(),
        )  # fmt: skip
        stack = LocalStack(home=root / "platform", ports=ports, dag_refresh_seconds=5)
        started = time.monotonic()
        stack.up(announce=False)
        print(f"platform up in {time.monotonic() - started:.1f} s", flush=True)
        try:
            client = AirflowClient(stack.airflow_url, "admin", stack.passwords()["admin"])
            client.wait_for_dag(DAG_ID, timeout=300)
            client.unpause(DAG_ID)
            rows = []
            for trial in range(args.trials):
                conf = {
                    "rev": rev, "data_repo": str(repo), "epochs": 1, "batch_size": 32,
                    "checkpoint_every": args.checkpoint_every, "interruption": "sigterm_at_step",
                    "interruption_value": args.at_step,
                }  # fmt: skip
                run_id = client.trigger(DAG_ID, conf=conf, run_id=f"bench-{trial}").dag_run_id
                run = client.wait_for_run(DAG_ID, run_id, timeout=900)
                if run.state != "success":
                    raise SystemExit(f"run {run_id} ended {run.state}: see {stack.logs}")
                rows.append(from_airflow(client, DAG_ID, run_id))
                print(f"trial {trial + 1}: {rows[-1]['total']:.2f} s", flush=True)
        finally:
            stack.down(quiet=True)
    print(
        f"\nSIGTERM -> first new step of the retry, through Airflow on the local platform ({args.trials} "
        f"trials, {args.rows} rows, SIGTERM at step {args.at_step}, checkpoint every "
        f"{args.checkpoint_every}; python {sys.version.split()[0]})"
    )
    print(f"{'phase':<24}{'median':>10}{'min':>10}{'max':>10}")
    for key in (*PHASES, "total", "preempted_at_step", "resumed_from_step"):
        values = [r[key] for r in rows]
        print(f"{key:<24}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")


if __name__ == "__main__":
    main()

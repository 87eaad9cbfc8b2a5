"""``tollgate-platform up|down|status|clean-state``: the local platform from the command line (make)."""

from __future__ import annotations

import argparse
import os
import sys

from tollgate.platform.distributed import stack_for
from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack


def _running_profile(fallback: str) -> str:
    """The profile recorded by the last ``up`` (``make down`` needs no PROFILE)."""
    state = LocalStack().read_state()
    return state.profile if state else fallback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate-platform", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "clean-state"])
    parser.add_argument(
        "--profile",
        default=os.environ.get("TOLLGATE_PROFILE") or "default",
        help="default (SQLite, LocalExecutor, folders) or distributed (PostgreSQL, Redis + Celery, S3, "
        "MLflow auth); down/status/clean-state use the profile the running platform was started with",
    )
    args = parser.parse_args(argv)
    try:
        stack = stack_for(args.profile if args.command == "up" else _running_profile(args.profile))
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "clean-state":
            print(stack.clean())
        else:
            print(stack.status())
    except ServiceError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tollgate-platform up|down|status|clean-state``: the local platform from the command line (make)."""

from __future__ import annotations

import argparse
import sys

from tollgate.platform.processes import ServiceError
from tollgate.platform.stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate-platform", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "clean-state"])
    args = parser.parse_args(argv)
    stack = LocalStack()
    try:
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

"""``tollgate``: the project's command line.

``tollgate airflow <command …>`` runs any Airflow CLI command against the local platform
(see :mod:`tollgate.platform.airflow_cli`); ``tollgate up|down|status`` manage the platform itself.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "airflow":
        from tollgate.platform import airflow_cli

        return airflow_cli.main(args[1:])
    if args and args[0] in ("up", "down", "status", "clean-state"):
        from tollgate.platform import cli

        return cli.main(args)
    print(
        "usage: tollgate airflow <airflow command …>   any Airflow CLI command, against the local platform\n"
        "       tollgate up | down | status | clean-state   the local platform (as the make targets)",
        file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout,
    )
    return 0 if args and args[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())

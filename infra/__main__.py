"""``python -m infra install|up|down|status [kafka|hazelcast|kube ...]`` (default: all)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from infra.components import MODULES, component
from infra.process import exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    parser.add_argument("action", choices=["install", "up", "down", "status"])
    parser.add_argument(
        "components",
        nargs="*",
        metavar="component",
        help=f"one of {', '.join(MODULES)}; default: all",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.components if name not in MODULES]
    if unknown:
        parser.error(f"unknown component(s): {', '.join(unknown)}")
    names: list[str] = args.components or list(MODULES)
    if args.action == "down":
        names.reverse()

    def run() -> None:
        for name in names:
            getattr(component(name), args.action)()

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())

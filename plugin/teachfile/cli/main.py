"""The ``teachfile`` command: a thin shell over library functions.

Each subcommand group lives in its own module and registers itself through
``register(subparsers)``; ``main`` maps :class:`~teachfile.errors.TeachfileError` to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import TeachfileError

#: Modules that contribute subcommands; each has ``register(subparsers) -> None``.
_COMMAND_MODULES = ("teachfile.cli.launcher", "teachfile.roster.cli", "teachfile.cli.cases",
                    "teachfile.cli.network", "teachfile.cli.invite", "teachfile.cli.service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teachfile", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"teachfile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TeachfileError as exc:
        print(f"teachfile: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

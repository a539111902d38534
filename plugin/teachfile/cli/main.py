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

DESCRIPTION = """\
A teaching file on Orthanc: every received DICOM instance is de-identified (DICOM PS3.15
Annex E) and compressed to JPEG 2000 before anything is stored. This command starts a node,
turns a workshop roster into Orthanc configurations, and exports, backs up and restores
teaching cases over a node's REST API."""
EPILOG = """\
'teachfile COMMAND --help' describes each command. Commands that talk to a node take
--url (for example http://127.0.0.1:8042), --user and --password (or $TEACHFILE_USER and
$TEACHFILE_PASSWORD). Exit codes: 0 done, 1 failed (the message says why), 2 usage error."""

#: Modules that contribute subcommands; each has ``register(subparsers) -> None``.
_COMMAND_MODULES = ("teachfile.cli.launcher", "teachfile.roster.cli", "teachfile.cli.cases",
                    "teachfile.cli.explain", "teachfile.cli.network", "teachfile.cli.invite",
                    "teachfile.cli.service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teachfile", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"teachfile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of:")
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

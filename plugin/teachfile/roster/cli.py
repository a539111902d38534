"""``teachfile roster check|render|apply|verify``: thin commands over the roster library.

Exit codes: 0 success; 1 an invalid roster, an unreachable node or a server error; 2 a usage
error (bad arguments, a roster file that cannot be read).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .model import Roster, load_roster
from .remote import OrthancClient, RemoteError, apply_roster, format_table, verify_roster
from .render import render, write
from .source import RosterError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
PASSWORD_ENV = "TEACHFILE_PASSWORD"


def register(subparsers: argparse._SubParsersAction) -> None:
    roster = subparsers.add_parser("roster", help="generate and apply workshop configurations")
    sub = roster.add_subparsers(dest="roster_command", metavar="ACTION", help="one of:")

    check = sub.add_parser("check", help="validate a roster; print every error")
    check.add_argument("roster", type=Path, help="the roster YAML file")
    check.set_defaults(func=cmd_check)

    rend = sub.add_parser("render", help="validate, then write every configuration")
    rend.add_argument("roster", type=Path, help="the roster YAML file")
    rend.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR",
                      help="where to write the configurations (created if missing)")
    rend.add_argument("--templates", type=Path, metavar="DIR",
                      help="templates that override the defaults, file by file")
    rend.set_defaults(func=cmd_render)

    for name, func, text in (
            ("apply", cmd_apply, "make a running server's modalities match the roster"),
            ("verify", cmd_verify, "C-ECHO every participant from the server")):
        p = sub.add_parser(name, help=text)
        p.add_argument("roster", type=Path, help="the roster YAML file")
        p.add_argument("--url", required=True, help="the server's REST API, e.g. "
                       "http://127.0.0.1:8042")
        p.add_argument("--user", help="an admin user of the server")
        p.add_argument("--password", help=f"its password (default: ${PASSWORD_ENV})")
        if name == "apply":
            p.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
        else:
            p.add_argument("--timeout", type=int, default=5, help="C-ECHO timeout in seconds")
        p.set_defaults(func=func)


def _load(path: Path) -> Roster | int:
    if not path.is_file():
        print(f"teachfile roster: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    try:
        return load_roster(path)
    except RosterError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        n = len(exc.diagnostics)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_INVALID


def cmd_check(args: argparse.Namespace) -> int:
    roster = _load(args.roster)
    if isinstance(roster, int):
        return roster
    print(f"{args.roster}: OK, server {roster.server.aet} and {len(roster.participants)}"
          " participants")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    if args.templates is not None and not args.templates.is_dir():
        print(f"teachfile roster: {args.templates}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    roster = _load(args.roster)
    if isinstance(roster, int):
        return roster
    try:
        paths = write(render(roster, args.templates), args.output)
        if roster.tls:
            from .pki import ensure_workshop_pki

            paths += ensure_workshop_pki(roster, args.output)
    except ConfigError as exc:
        print(f"teachfile roster: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"wrote {len(paths)} files to {args.output}")
    return EXIT_OK


def _client(args: argparse.Namespace) -> OrthancClient:
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    return OrthancClient(args.url, args.user, password)


def _against_server(args: argparse.Namespace, verb: str,
                    action: Callable[[OrthancClient, Roster], int]) -> int:
    """Load the roster, then run ``action`` on the server; a server error is exit 1."""
    roster = _load(args.roster)
    if isinstance(roster, int):
        return roster
    try:
        return action(_client(args), roster)
    except RemoteError as exc:
        print(f"teachfile roster {verb}: {exc}", file=sys.stderr)
        return EXIT_INVALID


def cmd_apply(args: argparse.Namespace) -> int:
    def action(client: OrthancClient, roster: Roster) -> int:
        diff = apply_roster(client, roster, dry_run=args.dry_run)
        for line in diff.lines():
            print(line)
        verb = "would change" if args.dry_run else "changed"
        print(f"{verb}: {len(diff.added)} added, {len(diff.changed)} changed,"
              f" {len(diff.removed)} removed")
        return EXIT_OK

    return _against_server(args, "apply", action)


def cmd_verify(args: argparse.Namespace) -> int:
    def action(client: OrthancClient, roster: Roster) -> int:
        results = verify_roster(client, roster, timeout=args.timeout)
        print(format_table(results))
        bad = [r for r in results if not r.ok]
        print(f"{len(results) - len(bad)} reachable, {len(bad)} not reachable")
        return EXIT_INVALID if bad else EXIT_OK

    return _against_server(args, "verify", action)


"""``teachfile explain FILE --url ...``: what the node would do with a file, as a table.

The node answers ``POST /teachfile/explain`` without storing anything; this prints its answer
for a terminal (or as JSON with ``--json``) so a workshop participant can put it beside
``dcmdump`` of what the node stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import TeachfileError
from .cases import _auth, _node

_WIDTHS = (44, 13, 9, 6)


def _cut(text: str | None, width: int) -> str:
    text = "-" if text is None else text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "~"


def format_explanation(answer: dict[str, Any], changed_only: bool = False) -> str:
    lines = [f"decision: {answer['decision']}"
             + (f" ({answer['reason']}{': ' + answer['detail'] if answer.get('detail') else ''})"
                if answer.get("reason") else "")]
    ts = answer.get("transfer_syntax") or {}
    if ts:
        lines.append(f"transfer syntax: {ts.get('before')} -> {ts.get('after')}"
                     + (f" ({answer['transcode_reason']})" if answer.get("transcode_reason")
                        else ""))
    px = answer.get("pixels")
    if px:
        lines.append(f"pixels: {px.get('action')} ({px.get('reason')})"
                     + (f", rule {px['rule']}" if px.get("rule") else ""))
    p, t, a, r = _WIDTHS
    lines.append(f"{'attribute':<{p}} {'tag':<{t}} {'action':<{a}} {'rule':<{r}} before -> after")
    for row in answer.get("attributes", []):
        if changed_only and not row.get("changed"):
            continue
        lines.append(f"{_cut(row['path'], p):<{p}} {row['tag']:<{t}} {_cut(row['action'], a):<{a}}"
                     f" {row['rule']:<{r}} {_cut(row['before'], 40)} -> {_cut(row['after'], 40)}")
    summary = answer.get("summary") or {}
    if summary:
        lines.append("summary: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TeachfileError(f"cannot read {path}: {exc.strerror}") from None
    node = _node(args)
    answer = node.call("POST", "/teachfile/explain", data=data,
                       headers={"Content-Type": "application/dicom"}).json()
    if args.json:
        json.dump(answer, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_explanation(answer, changed_only=args.changed))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="what the node would do with a DICOM file, attribute by "
                       "attribute (nothing is stored)")
    p.add_argument("file", type=Path, metavar="FILE", help="the DICOM file to explain")
    _auth(p)
    p.add_argument("--json", action="store_true", help="print the node's JSON answer")
    p.add_argument("--changed", action="store_true", help="only the attributes that change")
    p.set_defaults(func=cmd_explain)

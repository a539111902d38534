"""``teachfile invite NAME``: a colleague's account, DICOM entry and one-page access sheet.

The sheet says everything a radiologist needs to reach the node from a viewer: the web and REST
addresses, the DICOM AE title, host and port, the TLS fingerprint to compare, and how to enter
the node in Horos/OsiriX, Weasis and RadiAnt. It holds the colleague's password, so it is
written mode 0600; private keys are never in it (they are separate files beside it).
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..errors import ConfigError
from ..node import network
from . import network as net_cli

ROLE_TEXT = {
    "viewer": "look, search, download and retrieve studies",
    "contributor": "as a viewer, and also upload studies and label cases",
}


@dataclass(frozen=True)
class Invitation:
    sheet: Path
    password: str
    modality: network.Modality | None
    files: tuple[Path, ...]
    live: str


def _node_view(settings: Any, data: Path, host: str | None) -> dict[str, Any]:
    host = host or (settings.tls_hosts[0] if settings.tls_hosts else socket.getfqdn())
    cert = data / "tls" / "node.crt"
    fp = None
    if cert.exists():
        from ..node.tls import fingerprint

        fp = fingerprint(cert.read_bytes())
    scheme = "https" if settings.public else "http"
    url_host = host if settings.public else "localhost"
    return {"aet": settings.aet, "host": host, "dicom_port": settings.dicom_port,
            "url": f"{scheme}://{url_host}:{settings.http_port}", "public": settings.public,
            "dicom_tls": settings.dicom_tls, "fingerprint": fp if settings.tls else None,
            "ca_file": "node-ca.crt" if settings.tls and (data / "tls" / "ca.crt").exists()
            else None}


def invite(settings: Any, name: str, role: str, *, aet: str | None = None,
           host: str | None = None, port: int | None = None, node_host: str | None = None,
           out: Path | None = None) -> Invitation:
    if role not in ROLE_TEXT:
        raise ConfigError("an invited colleague is a viewer or a contributor")
    if (aet or host or port) and not (aet and host and port):
        raise ConfigError("give --aet, --host and --port together (the colleague's viewer)")
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out) if out else data / "invites" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    password = net_cli.generate_password()
    # Validate everything before writing anything.
    network.User(name, password, role)
    modality = None
    if aet and host and port:
        perms = set(network.DEFAULT_PERMISSIONS) | ({"Store"} if role == "contributor" else set())
        modality = network.Modality(name=name, aet=aet, host=host, port=port,
                                    permissions=frozenset(perms), tls=settings.dicom_tls)
    net_cli.add_user(data, name, role, password)
    live = "user: " + net_cli._RESTART
    if modality is not None:
        _, m_live = net_cli.add_modality(data, name, modality.aet, modality.host,
                                         modality.port, modality.permissions, modality.tls)
        live += f"; modality: {m_live}"
    files: list[Path] = []
    tls_names = {"key": f"{name}.key", "cert": f"{name}.crt", "ca": "node-ca.crt"}
    view = _node_view(settings, data, node_host)
    ca = data / "tls" / "ca.crt"
    if settings.tls and ca.exists():
        (out_dir / "node-ca.crt").write_bytes(ca.read_bytes())
        files.append(out_dir / "node-ca.crt")
    if settings.dicom_tls and ca.exists():
        from ..node.tls import issue

        issue(data / "tls" / "ca.key", ca, out_dir / tls_names["key"],
              out_dir / tls_names["cert"], name)
        files += [out_dir / tls_names["key"], out_dir / tls_names["cert"]]
    tls_flags = (f"+tls {tls_names['key']} {tls_names['cert']} +cf {tls_names['ca']} "
                 if settings.dicom_tls else "")
    env = jinja2.Environment(loader=jinja2.PackageLoader("teachfile", "data"),
                             autoescape=True, keep_trailing_newline=True)
    html = env.get_template("invite.html.j2").render(
        node=view, user=name, role=role, role_text=ROLE_TEXT[role], password=password,
        modality=modality, tls=tls_names, tls_flags=tls_flags)
    sheet = out_dir / f"{name}.html"
    fd = os.open(sheet, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(html)
    return Invitation(sheet, password, modality, tuple(files), live)


def _run(args: argparse.Namespace) -> int:
    from .launcher import NodeSettings

    settings = NodeSettings.from_env()
    if args.data:
        import dataclasses

        settings = dataclasses.replace(settings, data_dir=Path(args.data).resolve())
    inv = invite(settings, args.name, args.role, aet=args.aet, host=args.host, port=args.port,
                 node_host=args.node_host, out=Path(args.out) if args.out else None)
    print(f"invited {args.name} ({args.role}); {inv.live}")
    print(f"sheet  {inv.sheet}  (holds the password: give it to {args.name} only)")
    for f in inv.files:
        print(f"file   {f}" + ("  (private key: hand over separately)" if f.suffix == ".key"
                                else ""))
    if not settings.public:
        print("note   the node is local only: start it with TEACHFILE_PUBLIC=1 so colleagues "
              "can reach its web port")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invite", help="add a colleague: user, DICOM entry and an access sheet")
    p.add_argument("name", help="the colleague's user name (also the modality's name)")
    p.add_argument("--role", choices=sorted(ROLE_TEXT), default="viewer",
                   help="what the colleague may do (default: viewer)")
    p.add_argument("--aet", help="the AE title of the colleague's viewer")
    p.add_argument("--host", help="the address of the colleague's computer")
    p.add_argument("--port", type=int, help="the viewer's DICOM (C-MOVE) port")
    p.add_argument("--node-host", help="this node's name or address as colleagues reach it "
                   "(default: the first of $TEACHFILE_TLS_HOSTS, else this machine's name)")
    p.add_argument("--out", help="directory for the sheet (default: $TEACHFILE_DATA/invites/NAME)")
    p.add_argument("--data", help="the node's data directory (default: $TEACHFILE_DATA or ./var)")
    p.set_defaults(func=_run)

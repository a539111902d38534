"""``teachfile modalities|users|peers|tls``: the node's network, kept in ``network.json``.

Every command edits ``$TEACHFILE_DATA/network.json`` (see :mod:`teachfile.node.network`), which
the launcher merges at every start. A modality also takes effect at once when the node runs:
the command sends it to the node's ``PUT /modalities/{name}`` on loopback. Users and roles need
a restart (Orthanc reads ``RegisteredUsers`` only at start-up); the command says so.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import requests

from ..errors import ConfigError
from ..node import network
from ..node.roles import ROLES


def data_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "data", None):
        return Path(args.data).resolve()
    from .launcher import NodeSettings

    return NodeSettings.from_env().data_dir


def _path(args: argparse.Namespace) -> Path:
    d = data_dir(args)
    d.mkdir(parents=True, exist_ok=True)
    return network.network_path(d)


# -- talking to the running node (loopback only) -------------------------------------------


def node_api(data: Path) -> tuple[str, tuple[str, str], Any] | None:
    """The running node's loopback URL, admin credentials and TLS verification, from the
    configuration the launcher wrote; None when there is no such node."""
    try:
        config = json.loads((data / "orthanc.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    env_pw = os.environ.get("TEACHFILE_ADMIN_PASSWORD")
    try:
        password = env_pw or (data / "admin-password").read_text().strip()
    except FileNotFoundError:
        return None
    port = int(config.get("HttpPort", 8042))
    if config.get("SslEnabled"):
        return (f"https://localhost:{port}", ("admin", password),
                str(data / "tls" / "ca.crt") if (data / "tls" / "ca.crt").exists() else True)
    return f"http://127.0.0.1:{port}", ("admin", password), True


def _live(data: Path, method: str, path: str, body: Any = None) -> str:
    api = node_api(data)
    if api is None:
        return "the node is not set up here yet: it takes effect at its first start"
    url, auth, verify = api
    try:
        r = requests.request(method, url + path, auth=auth, verify=verify, timeout=15,
                             json=body)
    except requests.ConnectionError:
        return "the node is not running: it takes effect at its next start"
    if r.status_code >= 400:
        try:
            detail = r.json().get("error", r.text)
        except ValueError:
            detail = r.text.strip()[:200]
        return f"saved; the running node answered {r.status_code} ({detail}): restart it"
    return "in effect now on the running node"


# -- modalities -----------------------------------------------------------------------------


def _parse_allow(raw: str | None) -> frozenset[str]:
    if raw is None:
        return network.DEFAULT_PERMISSIONS
    by_lower = {p.lower(): p for p in network.PERMISSIONS}
    out = set()
    for part in raw.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part not in by_lower:
            raise ConfigError(f"unknown permission {part!r}; choose from "
                              f"{', '.join(p.lower() for p in network.PERMISSIONS)}")
        out.add(by_lower[part])
    return frozenset(out)


def add_modality(data: Path, name: str, aet: str, host: str, port: int,
                 allow: frozenset[str] = network.DEFAULT_PERMISSIONS,
                 tls: bool = False) -> tuple[network.Modality, str]:
    entry = network.Modality(name=name, aet=aet, host=host, port=port, permissions=allow,
                             tls=tls)
    network.update(network.network_path(data), lambda n: n.with_modality(entry))
    return entry, _live(data, "PUT", f"/modalities/{name}", entry.to_orthanc())


def _modalities_add(args: argparse.Namespace) -> int:
    data = data_dir(args)
    data.mkdir(parents=True, exist_ok=True)
    entry, live = add_modality(data, args.name, args.aet or args.name.upper(), args.host,
                               args.port, _parse_allow(args.allow), args.tls)
    print(f"modality {entry.name}: AET {entry.aet} at {entry.host}:{entry.port}"
          f"{' (DICOM TLS)' if entry.tls else ''}, may "
          f"{', '.join(sorted(p.lower() for p in entry.permissions)) or 'nothing'}; {live}")
    return 0


def _modalities_remove(args: argparse.Namespace) -> int:
    data = data_dir(args)
    network.update(_path(args), lambda n: n.without_modality(args.name))
    print(f"modality {args.name} removed; {_live(data, 'DELETE', f'/modalities/{args.name}')}")
    return 0


def _modalities_list(args: argparse.Namespace) -> int:
    net = network.load(_path(args))
    if args.json:
        print(json.dumps({n: m.to_json() for n, m in net.modalities.items()}, indent=2))
        return 0
    if not net.modalities:
        print("no modalities")
        return 0
    print(f"{'NAME':16} {'AET':16} {'HOST':24} {'PORT':>5}  TLS  MAY")
    for m in sorted(net.modalities.values(), key=lambda m: m.name):
        print(f"{m.name:16} {m.aet:16} {m.host:24} {m.port:>5}  {'yes' if m.tls else 'no ':3}  "
              f"{','.join(sorted(p.lower() for p in m.permissions))}")
    return 0


# -- users ----------------------------------------------------------------------------------


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): from stdin with --password-stdin, prompted (twice, not echoed)
    on a terminal, else generated."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ConfigError("no password on standard input")
        return line, False
    if not getattr(args, "generate", False) and sys.stdin.isatty():
        first = getpass.getpass("password (empty: generate one): ")
        if not first:
            return generate_password(), True
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ")
        return first, False
    return generate_password(), True


_RESTART = "takes effect when the node restarts (Orthanc reads its users at start-up)"


def add_user(data: Path, name: str, role: str, password: str) -> network.User:
    user = network.User(name, password, role)

    def change(n: network.Network) -> network.Network:
        if name in n.users:
            raise ConfigError(f"user {name!r} exists; use 'teachfile users passwd'")
        return n.with_user(user)

    network.update(network.network_path(data), change)
    return user


def _users_add(args: argparse.Namespace) -> int:
    data = data_dir(args)
    data.mkdir(parents=True, exist_ok=True)
    network.User(args.name, "x" * 8, args.role)  # validate before asking for a password
    password, generated = read_password(args)
    add_user(data, args.name, args.role, password)
    print(f"user {args.name} ({args.role}) added; {_RESTART}")
    if generated:
        print(f"password: {password}  (generated; shown only this once)")
    return 0


def _users_passwd(args: argparse.Namespace) -> int:
    path = _path(args)
    if args.name not in network.load(path).users:
        raise ConfigError(f"no user named {args.name!r}")
    password, generated = read_password(args)

    def change(n: network.Network) -> network.Network:
        old = n.users[args.name]
        return n.with_user(network.User(old.name, password, old.role))

    network.update(path, change)
    print(f"password of {args.name} changed; {_RESTART}")
    if generated:
        print(f"password: {password}  (generated; shown only this once)")
    return 0


def _users_remove(args: argparse.Namespace) -> int:
    network.update(_path(args), lambda n: n.without_user(args.name))
    print(f"user {args.name} removed; {_RESTART}")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    net = network.load(_path(args))
    print(f"{'USER':24} ROLE")
    print(f"{'admin':24} admin (the node's administrator)")
    for u in sorted(net.users.values(), key=lambda u: u.name):
        print(f"{u.name:24} {u.role}")
    return 0


# -- peers ----------------------------------------------------------------------------------


def _peers_add(args: argparse.Namespace) -> int:
    password = None
    if args.user:
        password, _ = read_password(args) if (args.password_stdin or sys.stdin.isatty()) \
            else (None, False)
        if password is None:
            raise ConfigError("give the peer's password with --password-stdin or at the prompt")
    peer = network.Peer(args.name, args.url, args.user, password)
    network.update(_path(args), lambda n: n.with_peer(peer))
    print(f"peer {args.name} ({args.url}) saved; "
          f"{_live(data_dir(args), 'PUT', f'/peers/{args.name}', peer.to_orthanc())}")
    return 0


def _peers_remove(args: argparse.Namespace) -> int:
    network.update(_path(args), lambda n: n.without_peer(args.name))
    print(f"peer {args.name} removed; "
          f"{_live(data_dir(args), 'DELETE', f'/peers/{args.name}')}")
    return 0


def _peers_list(args: argparse.Namespace) -> int:
    net = network.load(_path(args))
    if not net.peers:
        print("no peers")
    for p in sorted(net.peers.values(), key=lambda p: p.name):
        print(f"{p.name:16} {p.url}  {('user ' + p.username) if p.username else 'no login'}")
    return 0


# -- tls ------------------------------------------------------------------------------------


def _tls_trust(args: argparse.Namespace) -> int:
    from ..node.tls import trust

    out = trust(data_dir(args), args.name, Path(args.file).read_bytes())
    print(f"trusted for DICOM TLS: {out}; takes effect when the node restarts")
    return 0


def _tls_show(args: argparse.Namespace) -> int:
    from ..node.tls import fingerprint

    cert = data_dir(args) / "tls" / "node.crt"
    if not cert.exists():
        raise ConfigError("no certificate yet: start the node once with TEACHFILE_PUBLIC=1 or "
                          "TEACHFILE_DICOM_TLS=1")
    print(f"certificate {cert}\nSHA-256 {fingerprint(cert.read_bytes())}")
    return 0


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="the node's data directory (default: $TEACHFILE_DATA or ./var)")


def _password_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (one line)")
    g.add_argument("--generate", action="store_true",
                   help="generate a password (the default without a terminal)")


def _noun(sub: argparse._SubParsersAction, noun: str, help: str) -> argparse._SubParsersAction:
    return sub.add_parser(noun, help=help).add_subparsers(dest="verb", metavar="VERB",
                                                          required=True)


def _verb(group: argparse._SubParsersAction, verb: str, help: str, func: Any,
          name: str | None = None) -> argparse.ArgumentParser:
    """One VERB of a noun: its positional NAME when it takes one, ``--data`` and its handler."""
    p = group.add_parser(verb, help=help)
    if name:
        p.add_argument("name", help=name)
    _data_arg(p)
    p.set_defaults(func=func)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    m = _noun(sub, "modalities", "DICOM peers that may query/retrieve (kept across restarts)")
    p = _verb(m, "add", "add or replace a modality", _modalities_add,
              "the modality's name on this node (e.g. horos)")
    p.add_argument("--aet", help="its AE title (default: NAME in capitals)")
    p.add_argument("--host", required=True, help="its address (C-MOVE sends there)")
    p.add_argument("--port", type=int, required=True, help="its DICOM port (C-MOVE listener)")
    p.add_argument("--allow", help="comma list of echo,find,findworklist,get,move,store,"
                   "storagecommitment,transcoding (default: echo,find,get,move,transcoding)")
    p.add_argument("--tls", action="store_true", help="use DICOM TLS towards it")
    _verb(m, "remove", "remove a modality", _modalities_remove, "the modality's name")
    p = _verb(m, "list", "list the modalities", _modalities_list)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    u = _noun(sub, "users", "HTTP users and their roles (kept across restarts)")
    p = _verb(u, "add", "add a user (password prompted, or generated)", _users_add,
              "the user name")
    p.add_argument("--role", choices=list(ROLES), default="viewer",
                   help="what the user may do (default: viewer)")
    _password_args(p)
    _password_args(_verb(u, "passwd", "change a user's password", _users_passwd,
                         "the user name"))
    _verb(u, "remove", "remove a user", _users_remove, "the user name")
    _verb(u, "list", "list users and roles (never passwords)", _users_list)

    pe = _noun(sub, "peers", "other Orthanc servers (kept across restarts)")
    p = _verb(pe, "add", "add or replace a peer", _peers_add, "the peer's name on this node")
    p.add_argument("url", help="its address, e.g. https://other-node:8042/")
    p.add_argument("--user", help="user name on the peer (password prompted or --password-stdin)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the peer's password from standard input (one line)")
    _verb(pe, "remove", "remove a peer", _peers_remove, "the peer's name")
    _verb(pe, "list", "list the peers (never passwords)", _peers_list)

    t = _noun(sub, "tls", "the node's certificate and the CAs DICOM TLS trusts")
    p = _verb(t, "trust", "trust a CA certificate (PEM) for DICOM TLS peers", _tls_trust,
              "a name for the CA (its file in tls/trusted/)")
    p.add_argument("file", help="the CA certificate, PEM")
    _verb(t, "show", "the node's certificate and its SHA-256 fingerprint", _tls_show)

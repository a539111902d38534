"""A workshop's certificates (``tls: true``): one CA, one certificate for the server and one
per participant node, at fixed paths under the render directory.

Keys are generated once and kept: re-rendering an unchanged roster changes no file, and a
participant's certificate stays valid across re-renders. Private keys are mode 0600 and never
appear in a handout; the handout names the files the instructor hands out with it.

Layout (relative to the render directory)::

    tls/ca.crt  tls/ca.key                     the workshop CA (keep ca.key with the instructor)
    tls/server/{server.crt,server.key,ca.crt,https.pem}
    tls/nodes/<name>/{node.crt,node.key,ca.crt}
"""

from __future__ import annotations

from pathlib import Path

from ..node import tls as tls_mod
from .model import Roster

#: Where the rendered configurations expect the files inside a container (mounted read-only).
CONTAINER_DIR = "/etc/orthanc/tls"


def server_dir(outdir: Path) -> Path:
    return outdir / "tls" / "server"


def node_dir(outdir: Path, name: str) -> Path:
    return outdir / "tls" / "nodes" / name


def _leaf(ca_key: Path, ca_crt: Path, directory: Path, stem: str, name: str,
          hosts: list[str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, crt = directory / f"{stem}.key", directory / f"{stem}.crt"
    ca_copy = directory / "ca.crt"
    if not key.exists() or not crt.exists() or not set(hosts) <= tls_mod.cert_hosts(crt):
        tls_mod.issue(ca_key, ca_crt, key, crt, name, hosts)
    if not ca_copy.exists() or ca_copy.read_bytes() != ca_crt.read_bytes():
        ca_copy.write_bytes(ca_crt.read_bytes())
    return [key, crt, ca_copy]


def ensure_workshop_pki(roster: Roster, outdir: Path) -> list[Path]:
    """Create what is missing; returns every file (for the render's summary)."""
    base = outdir / "tls"
    base.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = base / "ca.key", base / "ca.crt"
    if not ca_key.exists() or not ca_crt.exists():
        tls_mod.make_ca(ca_key, ca_crt, f"{roster.title} CA")
    files = [ca_crt, ca_key]
    s = roster.server
    sdir = server_dir(outdir)
    files += _leaf(ca_key, ca_crt, sdir, "server", s.name,
                   sorted({s.host, s.name, "localhost", "127.0.0.1"}))
    bundle = (sdir / "server.crt").read_bytes().rstrip(b"\n") + b"\n" + \
        (sdir / "server.key").read_bytes()
    https = sdir / "https.pem"
    if not https.exists() or https.read_bytes() != bundle:
        tls_mod.write_private(https, bundle)
    files.append(https)
    for p in roster.participants:
        files += _leaf(ca_key, ca_crt, node_dir(outdir, p.name), "node", p.name,
                       sorted({p.host, p.name}))
    return files

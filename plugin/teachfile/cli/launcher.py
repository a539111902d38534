"""Launching a native teaching-file node on Debian's Orthanc packages.

One function, :func:`prepare`, turns settings (from the environment or from the test harness)
into a data directory with secrets and a generated ``orthanc.json``; ``make run`` and the test
fixtures both go through it, so what the tests start is what a user runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..node.keys import load_or_create_password
from ..node.limits import answering_config

PLUGIN_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = PLUGIN_DIR.parent
ENTRY_SCRIPT = PLUGIN_DIR / "teachfile_entry.py"
CONFIG_DIR = REPO_DIR / "orthanc-config"
ORTHANC_PLUGINS = Path("/usr/share/orthanc/plugins")
#: The plugins a node loads, by file name; others in the directory (worklists, serve-folders)
#: are left out on purpose.
PLUGIN_FILES = ("libOrthancPython.so", "libOrthancGdcm.so", "libOrthancDicomWeb.so")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"${name} must be a port number, not {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"${name} must be between 1 and 65535")
    return value


@dataclass(frozen=True)
class NodeSettings:
    """What distinguishes one node from another on the same machine."""

    aet: str = "TEACHFILE"
    dicom_port: int = 4242
    http_port: int = 8042
    data_dir: Path = REPO_DIR / "var"
    profile: str = "teaching"
    #: Merged last into the generated configuration (tests, advanced users).
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeSettings:
        env = os.environ if env is None else env
        aet = env.get("TEACHFILE_AET", "TEACHFILE")
        if not (1 <= len(aet) <= 16) or not all(c.isascii() and (c.isalnum() or c in "-_")
                                                 for c in aet) or aet.upper() != aet:
            raise ConfigError("$TEACHFILE_AET must be 1-16 characters of A-Z 0-9 - _")
        return cls(
            aet=aet,
            dicom_port=_env_int(env, "TEACHFILE_DICOM_PORT", 4242),
            http_port=_env_int(env, "TEACHFILE_HTTP_PORT", 8042),
            data_dir=Path(env.get("TEACHFILE_DATA") or REPO_DIR / "var").resolve(),
            profile=env.get("TEACHFILE_PROFILE", "teaching"),
        )


def plugin_paths() -> list[str]:
    missing = [p for p in PLUGIN_FILES if not (ORTHANC_PLUGINS / p).exists()]
    if missing:
        raise ConfigError(
            f"Orthanc plugins missing from {ORTHANC_PLUGINS}: {', '.join(missing)}; "
            "run scripts/setup"
        )
    return [str(ORTHANC_PLUGINS / p) for p in PLUGIN_FILES]


def build_config(settings: NodeSettings, password: str) -> dict[str, Any]:
    """The Orthanc configuration of a node; plain data, so tests can inspect it."""
    data = settings.data_dir
    config: dict[str, Any] = {
        "Name": settings.aet,
        "DicomAet": settings.aet,
        "DicomPort": settings.dicom_port,
        "HttpPort": settings.http_port,
        # Orthanc 1.10 has no bind address: refusing remote clients keeps HTTP on localhost.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"admin": password},
        "StorageDirectory": str(data / "storage"),
        "IndexDirectory": str(data / "index"),
        "Plugins": plugin_paths(),
        "PythonScript": str(ENTRY_SCRIPT),
        "PythonVerbose": False,
        # Jobs are not resumed from a previous run; transient by design on a teaching node.
        "SaveJobs": False,
        # Pseudonyms are deterministic: a re-sent or re-labelled case (/modify keeping its UIDs)
        # must replace the stored instance rather than fail as "already stored".
        "OverwriteInstances": True,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        # Silent and half-sent clients must not hold the DICOM and HTTP threads (issue 15).
        **answering_config(),
        # Orthanc stores WebDAV uploads later, from a folder, after answering 201: a refused
        # file could never be reported to whoever put it. Uploads go by C-STORE or HTTP POST.
        "WebDavUploadAllowed": False,
        # Transcoding happens in the plugin; GDCM stays loaded to decode J2K for clients that
        # cannot take it.
        "Gdcm": {"Enable": True},
        "Teachfile": {
            "Profile": settings.profile,
            "ConfigDirectory": str(CONFIG_DIR),
            "DataDirectory": str(data),
        },
    }
    return _merge(config, settings.extra)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Prepared:
    config_path: Path
    password: str
    password_generated: bool
    config: dict[str, Any]


def prepare(settings: NodeSettings, env: Mapping[str, str] | None = None) -> Prepared:
    """Create the data directory, the secrets and ``orthanc.json``; idempotent."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    password, generated = load_or_create_password(data / "admin-password", env)
    config = build_config(settings, password)
    path = data / "orthanc.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return Prepared(path, password, generated, config)


def python_path() -> str:
    """PYTHONPATH for Orthanc's embedded interpreter: the package and this venv's packages."""
    parts = [str(PLUGIN_DIR), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


def orthanc_command(prepared: Prepared, verbose: bool = False) -> list[str]:
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(exe).exists():
        raise ConfigError("Orthanc is not installed; run scripts/setup")
    cmd = [exe, str(prepared.config_path)]
    if verbose:
        cmd.insert(1, "--verbose")
    return cmd


def orthanc_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = python_path()
    # Orthanc's embedded Python must not write bytecode into the source tree as root.
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    # DCMTK reads TCP_NODELAY for the sockets Orthanc accepts. Without it, Nagle's algorithm
    # and the sender's delayed ACK hold back the second half of every C-STORE response for
    # ~40 ms: measured on Debian's Orthanc 1.10.1, one storescu association took 48 ms per
    # 512x512 CT slice on plain Orthanc and 15 ms with TCP_NODELAY=1 (scripts/bench-ingest).
    env.setdefault("TCP_NODELAY", "1")
    return env


def banner(settings: NodeSettings, prepared: Prepared) -> str:
    lines = [
        "Teaching-file node",
        f"  HTTP   http://localhost:{settings.http_port}/  (status: /teachfile/status)",
        f"  DICOM  AET {settings.aet}, port {settings.dicom_port}",
        f"  data   {settings.data_dir}",
        "  login  user admin, password "
        + (
            f"{prepared.password}  (generated now; also in "
            f"{settings.data_dir / 'admin-password'}, shown only this once)"
            if prepared.password_generated
            else f"from {'$TEACHFILE_ADMIN_PASSWORD' if os.environ.get('TEACHFILE_ADMIN_PASSWORD') else settings.data_dir / 'admin-password'}"  # noqa: E501
        ),
        "  stop   Ctrl-C",
    ]
    return "\n".join(lines)


def check_ports(settings: NodeSettings) -> None:
    """Stop before the banner when a port is taken, naming the port and its holder."""
    from .ports import taken_ports

    taken = taken_ports({"HTTP": settings.http_port, "DICOM": settings.dicom_port})
    if taken:
        raise ConfigError("; ".join(taken) + ". Stop that process, or choose other ports with "
                          "TEACHFILE_HTTP_PORT / TEACHFILE_DICOM_PORT")


def run(args: argparse.Namespace) -> int:
    settings = NodeSettings.from_env()
    check_ports(settings)
    prepared = prepare(settings)
    print(banner(settings, prepared), flush=True)
    cmd = orthanc_command(prepared, verbose=args.verbose)
    # exec: Orthanc becomes the foreground process, so Ctrl-C reaches it directly and it shuts
    # down cleanly (it handles SIGINT/SIGTERM itself).
    os.execve(cmd[0], cmd, orthanc_env())
    return 0  # pragma: no cover


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start a teaching-file node in the foreground",
                       description="Start a teaching-file node in the foreground. Settings come "
                       "from TEACHFILE_AET, TEACHFILE_DICOM_PORT, TEACHFILE_HTTP_PORT, "
                       "TEACHFILE_DATA, TEACHFILE_PROFILE and TEACHFILE_ADMIN_PASSWORD.")
    p.add_argument("--verbose", action="store_true", help="Orthanc's verbose log")
    p.set_defaults(func=run)


if __name__ == "__main__":  # pragma: no cover
    from .main import main

    sys.exit(main(["run", *sys.argv[1:]]))

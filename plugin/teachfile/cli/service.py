"""``teachfile service install|uninstall``: keep the node running through crashes and reboots.

A systemd unit that runs ``teachfile run`` (so the service starts exactly what ``make run``
starts) as a dedicated system user, restarts it whatever the exit, waits for the network, and
confines it: read-only system, private /tmp, no new privileges, write access to its data
directory only.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError

UNIT_NAME = "teachfile.service"
UNIT_DIR = Path("/etc/systemd/system")
ENV_FILE = Path("/etc/default/teachfile")

#: Settings passed through from the installing shell to the unit when set there.
PASSED_ENV = ("TEACHFILE_AET", "TEACHFILE_DICOM_PORT", "TEACHFILE_HTTP_PORT",
              "TEACHFILE_PROFILE", "TEACHFILE_PUBLIC", "TEACHFILE_DICOM_TLS",
              "TEACHFILE_TLS_CERT", "TEACHFILE_TLS_KEY", "TEACHFILE_TLS_HOSTS", "TEACHFILE_HTTPS")


def teachfile_executable() -> str:
    exe = Path(sys.executable).with_name("teachfile")
    if exe.exists():
        return str(exe)
    found = shutil.which("teachfile")
    if not found:
        raise ConfigError("the teachfile command is not installed; run scripts/setup")
    return found


def render_unit(*, user: str, data: Path, exe: str, env_file: Path | None = ENV_FILE,
                environment: dict[str, str] | None = None) -> str:
    env_lines = [f'Environment="TEACHFILE_DATA={data}"']
    for k, v in sorted((environment or {}).items()):
        if any(c in v for c in '"\\\n'):
            raise ConfigError(f"${k} holds characters a systemd unit cannot quote")
        env_lines.append(f'Environment="{k}={v}"')
    repo = Path(__file__).resolve().parents[3]
    return "\n".join([
        "[Unit]",
        "Description=Teaching-file node (Orthanc with de-identification on reception)",
        "Documentation=file://" + str(repo / "README.md"),
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=exec",
        f"User={user}",
        f"Group={user}",
        *env_lines,
        *([f"EnvironmentFile=-{env_file}"] if env_file else []),
        f"ExecStart={exe} run",
        "Restart=always",
        "RestartSec=5",
        # Orthanc stops cleanly on SIGTERM; give a large index time to close.
        "TimeoutStopSec=60",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        f"ReadWritePaths={data}",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "RemoveIPC=yes",
        "PrivateMounts=yes",
        "ProtectProc=invisible",
        "LimitNOFILE=65536",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _ensure_user(user: str, data: Path) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", str(data), "--no-create-home",
                        "--shell", "/usr/sbin/nologin", user], check=True)
    data.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(data, entry.pw_uid, entry.pw_gid)
    os.chmod(data, 0o700)


def _systemctl(*args: str) -> None:
    if shutil.which("systemctl") and Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", *args], check=False)


def _install(args: argparse.Namespace) -> int:
    data = Path(args.data).resolve()
    env = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    unit = render_unit(user=args.user, data=data, exe=args.exe or teachfile_executable(),
                       environment=env)
    unit_dir = Path(args.unit_dir)
    if args.dry_run:
        print(unit, end="")
        return 0
    if os.geteuid() != 0 and unit_dir == UNIT_DIR:
        raise ConfigError("installing a system service needs root (sudo teachfile service "
                          "install ...)")
    if unit_dir == UNIT_DIR:
        _ensure_user(args.user, data)
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / UNIT_NAME
    path.write_text(unit)
    os.chmod(path, 0o644)
    if unit_dir == UNIT_DIR:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", UNIT_NAME)
    print(f"installed {path}: the node runs as user {args.user} with data in {data}, "
          "restarts whenever it stops, and starts at boot")
    print(f"logs: journalctl -u {UNIT_NAME.removesuffix('.service')} -f")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    path = Path(args.unit_dir) / UNIT_NAME
    if Path(args.unit_dir) == UNIT_DIR:
        _systemctl("disable", "--now", UNIT_NAME)
    if path.exists():
        path.unlink()
        print(f"removed {path} (the data directory and the user are kept)")
    else:
        print(f"no {path}")
    if Path(args.unit_dir) == UNIT_DIR:
        _systemctl("daemon-reload")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("service", help="run the node as a systemd service"
                       ).add_subparsers(dest="verb", metavar="VERB", required=True)
    p = s.add_parser("install", help="write, enable and start a systemd unit")
    p.add_argument("--user", default="teachfile", help="the dedicated system user (created)")
    p.add_argument("--data", default="/var/lib/teachfile", help="the node's data directory")
    p.add_argument("--unit-dir", default=str(UNIT_DIR),
                   help=f"where the unit goes (default {UNIT_DIR}; another directory only "
                   "writes the file)")
    p.add_argument("--exe", help="the teachfile command the unit runs (default: this one)")
    p.add_argument("--dry-run", action="store_true", help="print the unit, change nothing")
    p.set_defaults(func=_install)
    p = s.add_parser("uninstall", help="stop, disable and remove the unit")
    p.add_argument("--unit-dir", default=str(UNIT_DIR),
                   help=f"where the unit is (default {UNIT_DIR})")
    p.set_defaults(func=_uninstall)

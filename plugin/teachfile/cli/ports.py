"""Is a port free, and if not, who holds it: so ``make run`` can say so before it starts.

Without this, Orthanc printed the banner, then died with an internal error when a port was
taken. The owner is read from ``/proc/net/tcp{,6}`` (the listening socket's inode) and
``/proc/<pid>/fd`` (which process holds that inode); other users' processes cannot be read
without privileges, in which case the port is only reported as taken.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

_LISTEN = "0A"


def port_free(port: int) -> bool:
    """Whether Orthanc could listen on ``port`` on every interface (as it does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[int]:
    out: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != _LISTEN:
                continue
            try:
                if int(parts[1].rsplit(":", 1)[1], 16) == port:
                    out.add(int(parts[9]))
            except ValueError:
                continue
    return out


def port_owner(port: int, proc: Path = Path("/proc")) -> str | None:
    """"<command> (pid N)" of a process listening on ``port``, when this user can tell."""
    inodes = listening_inodes(port, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = os.listdir(pid_dir / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(pid_dir / "fd" / fd) in wanted:
                    return f"{_command(pid_dir)} (pid {pid_dir.name})"
            except OSError:
                continue
    return None


def _command(pid_dir: Path) -> str:
    try:
        argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
        words = [a.decode(errors="replace") for a in argv if a][:3]
        if words:
            return " ".join(words)
    except OSError:
        pass
    try:
        return (pid_dir / "comm").read_text().strip()
    except OSError:
        return "a process"


def taken_ports(ports: dict[str, int]) -> list[str]:
    """One sentence per taken port of ``{"HTTP": 8042, "DICOM": 4242}``."""
    out = []
    for what, port in ports.items():
        if port_free(port):
            continue
        owner = port_owner(port)
        out.append(f"the {what} port {port} is already in use"
                   + (f" by {owner}" if owner else " (by a process this user cannot see)"))
    return out

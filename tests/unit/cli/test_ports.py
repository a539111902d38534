"""``make run`` names a taken port and its holder before it starts (no Orthanc needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from teachfile.cli.ports import port_owner, taken_ports

REPO = Path(__file__).resolve().parents[3]


def test_a_taken_port_is_reported_with_its_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        owner = port_owner(port)
        assert owner is not None and f"pid {os.getpid()}" in owner
        [msg] = taken_ports({"HTTP": port})
        assert f"HTTP port {port} is already in use by" in msg


def test_teachfile_run_stops_before_the_banner_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen(1)
        port = s.getsockname()[1]
        env = {**os.environ, "TEACHFILE_HTTP_PORT": str(port), "TEACHFILE_DICOM_PORT": "0",
               "TEACHFILE_DATA": str(tmp_path / "var")}
        env["TEACHFILE_DICOM_PORT"] = str(port + 1 if port < 65535 else port - 1)
        proc = subprocess.run([sys.executable, "-m", "teachfile.cli.main", "run"], env=env,
                              capture_output=True, text=True, timeout=60,
                              cwd=REPO)
    assert proc.returncode == 1
    assert "Teaching-file node" not in proc.stdout  # no banner
    assert f"HTTP port {port} is already in use by" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr

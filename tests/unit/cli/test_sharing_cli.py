"""Sharing settings in the launcher, the systemd unit, and the CLI's network commands."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from teachfile.cli import launcher
from teachfile.cli.main import main
from teachfile.cli.service import render_unit
from teachfile.errors import ConfigError
from teachfile.node import network


def test_local_node_binds_loopback_and_refuses_remote(tmp_path: Path) -> None:
    s = launcher.NodeSettings(data_dir=tmp_path)
    c = launcher.build_config(s, "pw")
    assert c["RemoteAccessAllowed"] is False
    assert c["HttpBindAddresses"] == ["127.0.0.1"]
    assert "SslEnabled" not in c and "DicomTlsEnabled" not in c


def test_public_node_serves_https_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = launcher.NodeSettings(data_dir=tmp_path, http_port=8042, public=True, dicom_tls=True)
    p = launcher.prepare(s, {"TEACHFILE_ADMIN_PASSWORD": "pw-123456"})
    c = p.config
    front = c["Teachfile"]["Sharing"]["Front"]
    assert front["Port"] == 8042 and c["HttpPort"] != 8042  # Orthanc behind the TLS front
    assert c["RemoteAccessAllowed"] is False and c["HttpBindAddresses"] == ["127.0.0.1"]
    assert c["DicomTlsEnabled"] is True and Path(c["DicomTlsTrustedCertificates"]).exists()
    assert c["Teachfile"]["Sharing"]["TlsFingerprint"] == p.tls.fingerprint
    for key in ("ca.key", "node.key", "https.pem"):
        assert (tmp_path / "tls" / key).stat().st_mode & 0o777 == 0o600
    again = launcher.prepare(s, {"TEACHFILE_ADMIN_PASSWORD": "pw-123456"})
    assert again.tls.fingerprint == p.tls.fingerprint  # generated once


def test_env_flags() -> None:
    got = launcher.sharing_from_env({"TEACHFILE_PUBLIC": "1", "TEACHFILE_TLS_HOSTS": "a, b"})
    assert got["public"] and not got["dicom_tls"] and got["tls_hosts"] == ("a", "b")
    with pytest.raises(ConfigError):
        launcher.sharing_from_env({"TEACHFILE_PUBLIC": "maybe"})


def test_cli_modalities_and_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data", str(tmp_path)]
    assert main(["modalities", "add", "horos", "--host", "10.0.0.5", "--port", "11112", *d]) == 0
    assert main(["modalities", "list", *d]) == 0
    assert "HOROS" in capsys.readouterr().out
    assert main(["users", "add", "bob", "--role", "viewer", "--generate", *d]) == 0
    out = capsys.readouterr().out
    password = network.load(tmp_path / "network.json").users["bob"].password
    assert password in out  # a generated password is shown once, to whoever ran the command
    assert main(["users", "list", *d]) == 0
    assert password not in capsys.readouterr().out  # never listed
    assert main(["users", "add", "bob", "--generate", *d]) == 1
    assert main(["modalities", "remove", "horos", *d]) == 0
    assert network.load(tmp_path / "network.json").modalities == {}


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt package systemd; scripts/setup)")
    from teachfile.cli.service import teachfile_executable

    unit = render_unit(user="teachfile", data=tmp_path / "data", exe=teachfile_executable(),
                       environment={"TEACHFILE_PUBLIC": "1"})
    for needed in ("Restart=always", "After=network-online.target", "NoNewPrivileges=yes",
                   "ProtectSystem=strict", "PrivateTmp=yes", f"ReadWritePaths={tmp_path}"):
        assert needed in unit
    path = tmp_path / "teachfile.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "teachfile.service" not in r.stderr, r.stderr  # no warning about our unit
    # systemd's own confinement score (0 = fully confined, 10 = not at all): 1.6 when written.
    sec = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)],
                         capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for teachfile.service: ([0-9.]+)", sec.stdout)
    if score is not None:  # systemd >= 250 analyses unit files offline
        assert float(score.group(1)) <= 2.0, sec.stdout


def test_service_install_and_uninstall_in_a_directory(tmp_path: Path) -> None:
    units = tmp_path / "units"
    assert main(["service", "install", "--unit-dir", str(units), "--data", str(tmp_path / "d"),
                 "--exe", "/bin/true"]) == 0
    assert "Restart=always" in (units / "teachfile.service").read_text()
    assert main(["service", "uninstall", "--unit-dir", str(units)]) == 0
    assert not (units / "teachfile.service").exists()

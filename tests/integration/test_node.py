"""The foundation: a real node starts, answers, and takes instances over DICOM and REST."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from harness import (
    LOOPBACK,
    Node,
    echo_pynetdicom,
    echoscu,
    free_port,
    send_pynetdicom,
    storescu,
    to_bytes,
    upload_rest,
)

REPO = Path(__file__).resolve().parents[2]


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def test_status_reports_versions_profile_and_counters(node: Node) -> None:
    st = node.status()
    assert st["version"]
    assert st["orthanc_version"].startswith("1.")
    assert st["python_plugin_version"]
    assert st["profile"]["name"] == "teaching"
    for counter in ("received", "stored", "refused"):
        assert st["counters"][counter] == 0
    assert len(st["key_fingerprint"]) == 16
    # scripts/setup installs the system OpenJPEG: lossless goes through it, with BYPASS.
    assert st["lossless_encoder"].startswith("OpenJPEG 2.")
    assert "BYPASS" in st["lossless_encoder"]


def test_orthanc_runs_with_nagle_disabled_for_dicom(node: Node) -> None:
    """DCMTK reads TCP_NODELAY when Orthanc accepts an association; without it every C-STORE
    response is held ~40 ms by Nagle + delayed ACK (see teachfile.cli.launcher.orthanc_env)."""
    assert node.process is not None
    environ = Path(f"/proc/{node.process.pid}/environ").read_bytes().split(b"\0")
    assert b"TCP_NODELAY=1" in environ


def test_http_requires_authentication(node: Node) -> None:
    assert requests.get(node.url + "/teachfile/status", timeout=10).status_code == 401
    bad = requests.get(node.url + "/system", auth=("admin", "wrong"), timeout=10)
    assert bad.status_code == 401


def test_c_echo_with_pynetdicom_and_echoscu(node: Node) -> None:
    assert echo_pynetdicom(node) == 0
    proc = echoscu(node)
    assert proc.returncode == 0, proc.stderr


def test_c_store_with_storescu_reaches_the_plugin(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    _ct().save_as(path, enforce_file_format=True)
    proc, statuses = storescu(node, [path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert statuses == [0]
    assert len(node.instances()) == 1
    counters = node.status()["counters"]
    assert counters["received"] == 1 and counters["stored"] == 1


def test_c_store_with_pynetdicom_reaches_the_plugin(node: Node) -> None:
    assert send_pynetdicom(node, [_ct()]) == [0]
    assert len(node.instances()) == 1
    assert node.status()["counters"]["stored"] == 1


def test_rest_upload_reaches_the_plugin(node: Node) -> None:
    r = upload_rest(node, to_bytes(_ct()))
    assert r.status_code == 200, r.text
    assert r.json()["Status"] == "Success"
    assert node.status()["counters"]["stored"] == 1
    # What is stored is the plugin's output, not the original.
    stored = node.stored_datasets()[0]
    assert stored.PatientIdentityRemoved == "YES"


def test_two_nodes_run_side_by_side(node_factory) -> None:
    a = node_factory(aet="NODE_A")
    b = node_factory(aet="NODE_B")
    assert a.http_port != b.http_port and a.dicom_port != b.dicom_port
    assert send_pynetdicom(a, [_ct()]) == [0]
    assert len(a.instances()) == 1 and b.instances() == []
    assert echo_pynetdicom(b) == 0


def test_make_run_serves_status_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`make run` exactly as a user types it, with the documented overrides."""
    http, dicom = free_port(), free_port()
    env = {**os.environ, "TEACHFILE_DATA": str(tmp_path / "var"), "TEACHFILE_HTTP_PORT": str(http),
           "TEACHFILE_DICOM_PORT": str(dicom), "TEACHFILE_AET": "MAKERUN"}
    env.pop("TEACHFILE_ADMIN_PASSWORD", None)
    proc = subprocess.Popen(["make", "-s", "run"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pw_file = tmp_path / "var" / "admin-password"
        deadline = time.monotonic() + 120
        answered = None
        while time.monotonic() < deadline and answered is None:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            if pw_file.exists():
                try:
                    r = requests.get(f"http://{LOOPBACK}:{http}/teachfile/status",
                                     auth=("admin", pw_file.read_text().strip()), timeout=2)
                    if r.status_code == 200:
                        answered = r.json()
                except requests.RequestException:
                    pass
            time.sleep(0.3)
        assert answered is not None, "make run never served /teachfile/status"
        assert oct(pw_file.stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / "var" / "pseudonym.key").stat().st_mode & 0o777) == "0o600"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
        out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert f"http://localhost:{http}/" in text
    assert f"AET MAKERUN, port {dicom}" in text
    assert "user admin, password" in text and "shown only this once" in text
    # Orthanc shuts down cleanly; make itself reports the interrupt as a terminal would.
    assert "Orthanc has stopped" in text, text[-3000:]
    assert proc.returncode in (0, -signal.SIGINT, 2, 130), text[-3000:]
    # The password file holds what was shown, and the key never reached the output.
    assert pw_file.read_text().strip() in text
    key = (tmp_path / "var" / "pseudonym.key").read_text().strip()
    assert key not in text


@pytest.mark.parametrize("bad", ["lower", "WAY_TOO_LONG_AE_TITLE", "BAD AET"])
def test_bad_aet_is_refused_before_start(bad: str) -> None:
    from teachfile.cli.launcher import NodeSettings
    from teachfile.errors import ConfigError

    with pytest.raises(ConfigError):
        NodeSettings.from_env({"TEACHFILE_AET": bad})

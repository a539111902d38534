"""The Orthanc lane this run is on ($TEACHFILE_ORTHANC: ``system`` or ``latest``), and what the
Docker image's own checks can prove without a Docker engine.

``make test`` runs the integration suite once per lane (README, "Two Orthanc lanes"); the latest
lane is Orthanc 1.13 + Python plugin 7.1 + Python 3.14 from the Debian unstable root that
``scripts/setup-lane`` builds, the versions the official image ships. The Dockerfile's checks
(wheels and imports for the image's Python, the secrets step of the entry point, the
healthcheck) run here with the lane's own interpreters, inside the root on the latest lane.
"""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from harness import (
    LOOPBACK,
    Node,
    free_port,
    lane_expectations,
    orthanc_version,
    start_node,
    to_bytes,
)
from teachfile.cli import launcher

pytestmark = pytest.mark.integration

DOCKER = launcher.REPO_DIR / "docker"


def _lane_pythons() -> tuple[str, str]:
    """(the lane's system python3, the lane's python with the project's dependencies)."""
    if launcher.current_lane() == "latest":
        # The root has no python3 link (python3.14-venv does not pull it in).
        return (f"/usr/bin/python{lane_expectations()['python_version']}",
                f"{launcher.LANE_VENV}/bin/python")
    return sys.executable, sys.executable


def _run_on_lane(argv: list[str], env: dict[str, str] | None = None,
                 paths: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(launcher.lane_command(argv, paths or []), capture_output=True,
                          text=True, timeout=120, env={**base, **(env or {})})


def test_the_lane_runs_the_versions_it_names(node: Node) -> None:
    """Every node start checks this (harness.check_lane); here it is stated once, with the
    versions the latest lane exists for."""
    want = lane_expectations()
    st = node.status()
    assert st["orthanc_version"] == want["orthanc_version"]
    assert st["python_plugin_version"] == want["python_plugin_version"]
    assert st["python_version"].startswith(want["python_version"] + ".")
    if want["lane"] == "latest":
        assert orthanc_version() >= (1, 13)
        assert tuple(map(int, st["python_plugin_version"].split("."))) >= (7, 1)
        assert tuple(map(int, st["python_version"].split(".")[:2])) >= (3, 14)


def test_dockerfile_import_check_runs_on_the_lanes_python() -> None:
    """The Dockerfile's build-time check, with the lane's interpreter and the wheels installed
    for it from pyproject.toml (on the latest lane: Python 3.14, as in the image)."""
    _, python = _lane_pythons()
    code = ("import pydicom, numpy, imagecodecs, yaml, jinja2, requests; "
            "import teachfile.reception.pipeline, teachfile.node.service, "
            "teachfile.node.keycheck, teachfile.reception.openjpeg as oj; "
            "import sys; print(sys.version.split()[0], imagecodecs.__version__, oj.version())")
    proc = _run_on_lane([python, "-c", code], env={"PYTHONPATH": str(launcher.PLUGIN_DIR)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(lane_expectations()["python_version"] + ".")


def test_entrypoint_secrets_step_and_healthcheck_on_the_lanes_python(
        node_factory: Callable[..., Node], tmp_path: Path) -> None:
    """docker/entrypoint.sh's secrets step and docker/healthcheck.py, standard library only, run
    by the lane's system python3 against a node of that lane (what the image's Python runs)."""
    python, _ = _lane_pythons()
    admin = secrets.token_urlsafe(12)
    (tmp_path / "admin").write_text(admin + "\n")
    proc = _run_on_lane([python, str(DOCKER / "secrets_to_config.py")],
                        env={"TEACHFILE_ADMIN_PASSWORD_FILE": str(tmp_path / "admin"),
                             "TEACHFILE_KEY": "x" * 32}, paths=[tmp_path])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["RegisteredUsers"] == {"admin": admin}
    assert _run_on_lane(["/bin/bash", "-n", str(DOCKER / "entrypoint.sh")]).returncode == 0

    node = node_factory(password=admin)
    config = node.data_dir / "orthanc.json"
    ok = _run_on_lane([python, str(DOCKER / "healthcheck.py"), "--config", str(config)])
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok"), ok.stderr
    node.stop()
    down = _run_on_lane([python, str(DOCKER / "healthcheck.py"), "--config", str(config)])
    assert down.returncode == 1 and "did not answer" in down.stdout


def test_gdcm_transcodings_on_http_threads_keep_orthanc_alive(tmp_path: Path) -> None:
    """Measured without the teachfile plugin, with the GDCM and DICOMweb plugins every node loads.

    Debian's civetweb gives Orthanc's HTTP threads 100 KiB stacks, and GDCM's image writer takes
    132 KiB in one frame, so every transcoding GDCM does for a WADO-RS retrieval ran past the
    stack's guard page: Orthanc 1.10 died (SIGSEGV) within 40 retrievals of a JPEG 2000 instance
    as Explicit VR Little Endian in 10 of 10 processes, and 1.13 on the first one. The launcher's
    environment preloads native/threadstack.c (8 MiB stacks); this test starts Orthanc with it
    and retrieves 60 times, alternating a J2K -> Explicit and an Explicit -> Implicit transcoding.
    """
    http_port = free_port()
    config = {"HttpPort": http_port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "StorageDirectory": str(tmp_path / "db"),
              "IndexDirectory": str(tmp_path / "db"),
              "Plugins": [p for p in launcher.plugin_paths() if "Python" not in p]}
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    url = f"http://{LOOPBACK}:{http_port}"
    with (tmp_path / "orthanc.log").open("ab") as log:
        proc = subprocess.Popen(launcher.lane_command(
            [launcher.orthanc_executable(), str(tmp_path / "orthanc.json")], [tmp_path]),
            stdout=log, stderr=subprocess.STDOUT, env=launcher.orthanc_env())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        # lane_command execs, so proc is Orthanc itself: the shim is mapped in it.
        assert "teachfile-threadstack.so" in Path(f"/proc/{proc.pid}/maps").read_text()
        retrievals = []
        for name, syntax in (("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.1"),
                             ("CT_small.dcm", "1.2.840.10008.1.2")):
            ds = pydicom.dcmread(get_testdata_file(name))
            assert requests.post(url + "/instances", data=to_bytes(ds), timeout=30).ok
            retrievals.append((f"/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                               f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                               'multipart/related; type="application/dicom"; '
                               f"transfer-syntax={syntax}", syntax))
        for i in range(60):
            path, accept, syntax = retrievals[i % 2]
            try:
                r = requests.get(url + path, headers={"Accept": accept}, timeout=30)
            except requests.ConnectionError:
                pytest.fail(f"Orthanc dropped retrieval {i + 1} (exit {proc.poll()})")
            assert r.status_code == 200, (i, r.status_code)
            part = io.BytesIO(r.content[r.content.index(b"DICM") - 128:])
            got = pydicom.dcmread(part, stop_before_pixels=True).file_meta.TransferSyntaxUID
            assert got == syntax, (i, got)
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_node_without_the_thread_stack_preload_says_so(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Started by hand (not `teachfile run`), a node reports it in its status and its log."""
    with_shim = launcher.orthanc_env
    shim = str(launcher.thread_stack_shim())

    def without_shim(base: Any = None) -> dict[str, str]:
        env = with_shim(base)
        env["LD_PRELOAD"] = ":".join(p for p in env["LD_PRELOAD"].split(":") if p != shim)
        return env

    monkeypatch.setattr(launcher, "orthanc_env", without_shim)
    node = start_node(tmp_path / "node", wait=False)
    try:
        node.wait_until_ready()
        assert node.status()["thread_stack_preload"] is False
        assert "runs without teachfile-threadstack.so" in node.log_text()
    finally:
        node.stop()

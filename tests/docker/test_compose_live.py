"""The Docker deployment, live: ``docker compose --profile scale up``, then real DICOM traffic.

Runs only where a Docker engine and the Compose plugin answer; skips with the reason otherwise.
Everything here is also covered natively (tests/integration/test_scale_out.py runs the mounted
configuration and the two-node cluster on Debian's packages); this adds what only the image can
show: the official image's configuration merge, its embedded Python and Orthanc version.

Host ports are free loopback ports and the secrets a fresh temporary set, so a running
deployment on the same machine is not touched; ``down -v`` removes the test's volumes.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from harness import Node, free_port, send_pynetdicom

REPO = Path(__file__).resolve().parents[2]
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
N_INSTANCES = 8


def _why_no_docker() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    try:
        if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
            return "no Docker engine answers (`docker info` fails): the Docker path is " \
                   "covered by tests/docker/test_compose_static.py and, natively, by " \
                   "tests/integration/test_scale_out.py"
        if subprocess.run([docker, "compose", "version"], capture_output=True,
                          timeout=30).returncode != 0:
            return "the Docker Compose plugin is missing (`docker compose version` fails)"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker does not answer ({type(exc).__name__})"
    return None


_REASON = _why_no_docker()
pytest.importorskip("pytest_docker", reason="pytest-docker is not installed")
pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.fixture(scope="session")
def live_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Free host ports and fresh secrets for this run, in the environment Compose reads."""
    secrets_dir = tmp_path_factory.mktemp("docker-secrets")
    env = {
        "TEACHFILE_HTTP_PORT": str(free_port()),
        "TEACHFILE_DICOM_PORT": str(free_port()),
        "TEACHFILE_HTTP_PORT_2": str(free_port()),
        "TEACHFILE_DICOM_PORT_2": str(free_port()),
        "TEACHFILE_SECRETS_DIR": str(secrets_dir),
    }
    subprocess.run(["bash", str(REPO / "docker" / "init-secrets.sh")], check=True,
                   env={**os.environ, **env}, capture_output=True, timeout=60)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(REPO / "compose.yaml")


@pytest.fixture(scope="session")
def docker_setup(live_env: dict[str, str]) -> list[str]:
    # --wait: until every healthcheck passes (the plugin answers /teachfile/status).
    return ["--profile scale up --build --wait"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["--profile scale down -v"]


@pytest.fixture(scope="session")
def nodes(docker_services: Any, live_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Node, Node]:
    password = (Path(live_env["TEACHFILE_SECRETS_DIR"]) / "teachfile_admin_password"
                ).read_text().strip()
    out = []
    for suffix in ("", "_2"):
        n = Node(f"orthanc{suffix}", "TEACHFILE", int(live_env[f"TEACHFILE_DICOM_PORT{suffix}"]),
                 int(live_env[f"TEACHFILE_HTTP_PORT{suffix}"]),
                 tmp_path_factory.mktemp("live"), password, {})
        docker_services.wait_until_responsive(
            timeout=180, pause=1, check=lambda n=n: _answers(n))
        out.append(n)
    return out[0], out[1]


def _answers(node: Node) -> bool:
    try:
        return node.get("/teachfile/status", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _study() -> list[pydicom.Dataset]:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study = pydicom.uid.generate_uid()
    out = []
    for _ in range(N_INSTANCES):
        ds = copy.deepcopy(base)
        ds.PatientName, ds.PatientID = "PHIQLIVEAA^PHIQLIVEAB", "PHIQLIVEAC"
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def test_both_replicas_run_the_plugin_with_one_key(nodes: tuple[Node, Node]) -> None:
    a, b = (n.status() for n in nodes)
    assert a["key_fingerprint"] == b["key_fingerprint"]
    for st in (a, b):
        assert st["orthanc_version"].startswith("1.")
        assert st["profile"]["name"] == "teaching"
        if st.get("key_check"):
            assert st["key_check"]["may_receive"] is True
    for n in nodes:
        assert n.get("/system").json()["DatabaseBackendPlugin"], "the index is not PostgreSQL"


def test_http_needs_the_secret_password(nodes: tuple[Node, Node]) -> None:
    r = requests.get(nodes[0].url + "/teachfile/status", timeout=10)
    assert r.status_code == 401


def test_study_sent_to_both_replicas_is_one_deidentified_j2k_study(
        nodes: tuple[Node, Node]) -> None:
    originals = _study()
    halves = {0: originals[0::2], 1: originals[1::2]}
    results: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, send_pynetdicom(nodes[i], halves[i], calling_aet="MODALITY"))) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert results == {0: [0] * len(halves[0]), 1: [0] * len(halves[1])}
    for n in nodes:
        assert len(n.get("/studies").json()) == 1
        assert len(n.instances()) == N_INSTANCES
    stored = [pydicom.dcmread(io.BytesIO(nodes[1].instance_bytes(i)))
              for i in nodes[0].instances()]
    assert len({str(ds.PatientID) for ds in stored}) == 1
    for ds in stored:
        assert ds.PatientIdentityRemoved == "YES"
        assert "PHIQLIVE" not in str(ds.PatientName) + str(ds.PatientID)
        assert str(ds.file_meta.TransferSyntaxUID) in J2K

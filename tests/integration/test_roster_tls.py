"""A ``tls: true`` workshop: the rendered server speaks DICOM TLS and HTTPS only, with the
workshop CA and the certificates ``roster render`` issued, and every command of a participant's
handout works as printed, from the participant's own address, with the files handed out.

Two participants on 127.0.0.11/12; the server runs its rendered configuration with the real
plugin, adapted only for paths (the container's /etc/orthanc/tls becomes the render directory's
tls/server) and ports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydicom.data import get_testdata_file
from test_roster_workshop import (
    EXAMPLE,
    SERVER_HOST,
    WorkshopServer,
    build_shim,
    free_port,
    handout_commands,
    shared_port,
    store_as,
)

from teachfile.cli.main import main
from teachfile.node import tls as tls_mod
from teachfile.roster import load_roster

pytestmark = pytest.mark.skipif(shutil.which("echoscu") is None, reason="DCMTK is not installed")


def _adapt(value: object, tls_dir: str) -> object:
    if isinstance(value, str):
        return value.replace("/etc/orthanc/tls", tls_dir)
    if isinstance(value, dict):
        return {k: _adapt(v, tls_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_adapt(v, tls_dir) for v in value]
    return value


@pytest.fixture(scope="module")
def tls_workshop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("tlsworkshop")
    hosts = ["127.0.0.11", "127.0.0.12"]
    port = shared_port(hosts)
    dicom_port, https_port, internal = free_port(), free_port(), free_port()
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tls"] = True
    data["server"].update(host=SERVER_HOST, dicom_port=dicom_port, http_port=https_port)
    data["participants"]["defaults"]["port"] = port
    data["participants"]["generate"].update(count=2, host="127.0.0.{n+10}")
    data["network"] = {"subnet": "127.0.0.0/24"}
    roster_path = root / "roster.yaml"
    roster_path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = root / "out"
    assert main(["roster", "render", str(roster_path), "-o", str(out)]) == 0
    config = json.loads((out / "server" / "orthanc.json").read_text())
    assert config["DicomTlsEnabled"] is True
    config = _adapt(config, str(out / "tls" / "server"))
    config["Teachfile"]["Sharing"]["Front"]["Port"] = https_port
    adapted = root / "server.json"
    adapted.write_text(json.dumps(config))
    server = WorkshopServer(adapted, root / "server", ports=(dicom_port, internal))
    server.start()
    try:
        yield {"roster": load_roster(roster_path), "out": out, "server": server,
               "https_port": https_port, "root": root}
    finally:
        server.stop()


def test_private_keys_stay_private_and_out_of_handouts(tls_workshop: dict) -> None:
    out = tls_workshop["out"]
    keys = list((out / "tls").rglob("*.key")) + list((out / "tls").rglob("https.pem"))
    assert len(keys) == 1 + 1 + 1 + 2  # CA, server key, server https.pem, one per node
    for k in keys:
        assert k.stat().st_mode & 0o777 == 0o600, k
    for page in (out / "handouts").glob("*.html"):
        assert "PRIVATE KEY" not in page.read_text()
    # Re-rendering keeps every certificate (deterministic paths, nothing re-issued).
    before = {p: p.read_bytes() for p in (out / "tls").rglob("*") if p.is_file()}
    roster_path = tls_workshop["root"] / "roster.yaml"
    assert main(["roster", "render", str(roster_path), "-o", str(out)]) == 0
    assert before == {p: p.read_bytes() for p in (out / "tls").rglob("*") if p.is_file()}


def test_dicom_tls_trusts_the_workshop_ca_only(tls_workshop: dict, tmp_path: Path) -> None:
    server, out = tls_workshop["server"], tls_workshop["out"]
    node = out / "tls" / "nodes" / "workshop01"
    target = [SERVER_HOST, str(server.dicom_port)]
    ok = subprocess.run(["echoscu", "+tls", str(node / "node.key"), str(node / "node.crt"),
                         "+cf", str(node / "ca.crt"), "-aet", "WORKSHOP01", "-aec", server.aet,
                         *target], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    plain = subprocess.run(["echoscu", "-aet", "WORKSHOP01", "-aec", server.aet, *target],
                           capture_output=True, text=True, timeout=30)
    assert plain.returncode != 0
    tls_mod.make_ca(tmp_path / "ca.key", tmp_path / "ca.crt", "stranger")
    tls_mod.issue(tmp_path / "ca.key", tmp_path / "ca.crt", tmp_path / "x.key",
                  tmp_path / "x.crt", "x")
    foreign = subprocess.run(["echoscu", "+tls", str(tmp_path / "x.key"),
                              str(tmp_path / "x.crt"), "+cf", str(node / "ca.crt"), "-aet",
                              "WORKSHOP01", "-aec", server.aet, *target],
                             capture_output=True, text=True, timeout=30)
    assert foreign.returncode != 0
    # Plain C-STORE is refused too (pynetdicom without TLS).
    first = tls_workshop["roster"].participants[0]
    from pydicom import dcmread

    statuses = store_as(server, first.aet, first.host,
                        [dcmread(get_testdata_file("CT_small.dcm"))])
    assert statuses is None or statuses[0] != 0


def test_every_tls_handout_command_works(tls_workshop: dict, tmp_path: Path) -> None:
    shim = build_shim(tmp_path)
    if shim is None:
        pytest.skip("no C compiler for the source-address shim")
    server, out = tls_workshop["server"], tls_workshop["out"]
    p = tls_workshop["roster"].participants[0]
    for name in ("node.key", "node.crt", "ca.crt"):
        shutil.copy(out / "tls" / "nodes" / p.name / name, tmp_path / name)
    image = tmp_path / "image.dcm"
    image.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (tmp_path / "folder").mkdir()
    shutil.copy(image, tmp_path / "folder" / "a.dcm")
    page = (out / "handouts" / f"{p.name}.html").read_text()
    assert f"https://{SERVER_HOST}:{tls_workshop['https_port']}" in page
    blocks = handout_commands(page)
    env = {**os.environ, "LD_PRELOAD": str(shim), "TEACHFILE_SOURCE_ADDRESS": p.host}
    listener_cmd = next(b for b in blocks if b.startswith("storescp"))
    assert "+tls node.key node.crt +cf ca.crt" in listener_cmd
    received = tmp_path / "received"
    received.mkdir()
    # The participant's own listener, as the handout prints it (C-ECHO and C-MOVE arrive here).
    listener = subprocess.Popen(["bash", "-c", listener_cmd.replace("-od .", f"-od {received}")],
                                cwd=tmp_path, env={**os.environ},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        # The upload blocks come last in the handout; store first so find and move have a study.
        order = sorted((b for b in blocks if b is not listener_cmd),
                       key=lambda b: 0 if ("storescu" in b or "send_c_store" in b) else 1)
        study_uid = None
        ran = 0
        for block in order:
            script = block.replace("python3 - <<", f"{sys.executable} - <<")
            if study_uid:
                script = script.replace("STUDY_UID", study_uid)
            if script.startswith("curl"):
                script += " -w '\\nHTTP_STATUS=%{http_code}\\n'"
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=120)
            text = r.stdout + r.stderr
            assert r.returncode == 0, (script, text, server.log_tail())
            for bad in ("Rejected", "Peer aborted", "association refused", "Error", "Failed",
                        "no answer"):
                assert bad not in text, (script, text)
            if script.startswith("curl"):
                assert "HTTP_STATUS=200" in text, (script, text)
            for status in re.findall(r"status: (0x[0-9a-f]{4})", text):
                assert status in ("0x0000", "0xff00", "0xff01"), (script, text)
            if study_uid is None and ("storescu" in block or "send_c_store" in block):
                studies = server.get("/studies?expand")
                if studies:
                    study_uid = studies[0]["MainDicomTags"]["StudyInstanceUID"]
            ran += 1
        assert ran >= 8
        deadline = time.monotonic() + 20
        while not list(received.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(received.iterdir()), "C-MOVE delivered nothing to the TLS listener"
    finally:
        listener.terminate()
        listener.wait(timeout=10)

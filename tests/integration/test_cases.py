"""The teaching-case workflow across real nodes of a rendered (loopback) roster: label a case on
one node, find it by keyword from another, send it, export it, back it up and restore it into
an empty node with the same key. Everything that comes back must be identical: UIDs and bytes.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from harness import (
    Node,
    check_documented,
    render_peer_roster,
    start_rendered,
    to_bytes,
    upload_rest,
)
from teachfile.api.routes import openapi_document
from teachfile.cli.main import main

pytestmark = pytest.mark.integration

KEY = "5a" * 32  # the department's shared pseudonym key
SECRET = "cases-integration-secret-0123456789"
J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
USERS = {"carol": "carol-pw", "vic": "vic-pw"}
TITLE = "Aortic dissection, Stanford type A"
RECORD = {"title": TITLE, "keywords": ["aortic", "dissection", "CTA"],
          "diagnosis": "Acute type A aortic dissection", "notes": "Intimal flap in the arch."}


def _render_roster(tmp: Path) -> dict[str, dict[str, Any]]:
    """A hub and two participants on 127.0.0.1, rendered by ``teachfile roster render``."""
    return render_peer_roster(tmp, SECRET, {"node-a": "NODE_A", "node-b": "NODE_B"},
                              role="contributor")


def _start(node_factory: Callable[..., Node], config: dict[str, Any],
           **extra: Any) -> Node:
    return start_rendered(node_factory, config, env={"TEACHFILE_KEY": KEY}, extra_config=extra)


def _case_instances(n: int = 3) -> list[pydicom.Dataset]:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid(entropy_srcs=["cases-series"])
    out = []
    for i in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["cases-instance", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        out.append(ds)
    return out


def _by_sop(node: Node, study: str | None = None) -> dict[str, bytes]:
    """Stored bytes by SOP Instance UID, of one study or of everything."""
    ids = ([i["ID"] for i in node.get(f"/studies/{study}/instances").json()] if study
           else node.instances())
    out = {}
    for iid in ids:
        raw = node.instance_bytes(iid)
        ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = raw
    return out


def _wait_job(node: Node, job: str) -> dict[str, Any]:
    for _ in range(600):  # a hang guard, not a timing check
        state = node.get(f"/jobs/{job}").json()
        if state["State"] in ("Success", "Failure"):
            return state
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def _validate(path: str, method: str, resp: requests.Response) -> None:
    check_documented(openapi_document(), path, method, resp)


def test_case_workflow_across_the_network(node_factory: Callable[..., Node], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    configs = _render_roster(tmp_path)
    hub = _start(node_factory, configs["server"])
    node_a = _start(node_factory, configs["node-a"], RegisteredUsers=USERS,
                    Teachfile={"Roles": {"carol": "contributor"}})
    # node-b stays down until the restore: the search must report it, not fail.

    for ds in _case_instances():
        assert upload_rest(node_a, to_bytes(ds)).status_code == 200
    other = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert upload_rest(node_a, to_bytes(other)).status_code == 200
    study = next(s for s in node_a.get("/studies").json()
                 if len(node_a.get(f"/studies/{s}/instances").json()) == 3)
    before = _by_sop(node_a, study)

    # -- label the case on node-a (a viewer may not; a contributor may) ----------------------
    path = f"/teachfile/cases/{study}"
    assert node_a.put(path, json=RECORD, auth=("vic", USERS["vic"])).status_code == 403
    r = node_a.put(path, json=RECORD, auth=("carol", USERS["carol"]))
    assert r.status_code == 200, r.text
    _validate("/teachfile/cases/{study}", "put", r)
    case = node_a.get(path, auth=("vic", USERS["vic"])).json()
    assert {k: case[k] for k in RECORD} == RECORD
    assert case["labelled"] and case["instances"] == 3
    after = _by_sop(node_a, study)
    assert len(node_a.get("/studies").json()) == 2 and after.keys() == before.keys()
    for sop, raw in after.items():
        old, new = (pydicom.dcmread(io.BytesIO(b)) for b in (before[sop], raw))
        assert new.StudyDescription == TITLE
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
                   "StudyDate"):
            assert new.get(kw) == old.get(kw), kw
        assert new.PixelData == old.PixelData
        assert str(new.file_meta.TransferSyntaxUID) in J2K_SYNTAXES
    # A change of keywords only does not rewrite the instances.
    r = node_a.put(path, json={"keywords": "aortic, dissection, CTA"})
    assert r.status_code == 200 and r.json()["keywords"] == RECORD["keywords"]
    assert _by_sop(node_a, study) == after

    # -- find it by keyword from the hub: C-FIND to every node of the roster ------------------
    for q in ("aortic", "AORTIC", "stanford type"):
        r = hub.get("/teachfile/search", params={"q": q, "timeout": 5})
        assert r.status_code == 200, r.text
        _validate("/teachfile/search", "get", r)
        found = r.json()
        nodes = {n["node"]: n["status"] for n in found["nodes"]}
        assert nodes == {"local": "ok", "node-a": "ok", "node-b": "unreachable"}, found["nodes"]
        assert [x["title"] for x in found["results"]] == [TITLE], (q, found)
        hit = found["results"][0]
        assert hit["sources"] == [{"node": "node-a", "aet": "NODE_A"}]
        assert hit["instances"] == 3 and hit["modalities"] == ["CT"]
        assert hit["study_instance_uid"] == case["study_instance_uid"]
    # A space as a browser types it (%20), not only as a form's '+': on every node.
    found = hub.get("/teachfile/search?q=Stanford%20type&timeout=5").json()
    assert found["query"] == "Stanford type"
    assert [x["title"] for x in found["results"]] == [TITLE], found
    # node-a's own index also matches its case records (diagnosis, keywords).
    local = node_a.get("/teachfile/search", params={"q": "intimal"}).json()
    assert [r["local_study"] for r in local["results"]] == [study]  # notes are searched
    local = node_a.get("/teachfile/search", params={"q": "acute type"}).json()
    assert local["results"][0]["local_study"] == study
    assert local["results"][0]["case"]["diagnosis"] == RECORD["diagnosis"]

    # -- send it to the hub: an Orthanc job, in the stored syntax ----------------------------
    r = node_a.post(f"{path}/send", json={"target": "teachfile"}, auth=("carol", "carol-pw"))
    assert r.status_code == 200, r.text
    _validate("/teachfile/cases/{study}/send", "post", r)
    assert _wait_job(node_a, r.json()["job"])["State"] == "Success"
    on_hub = _by_sop(hub)
    assert on_hub == after  # the same UIDs, byte for byte
    assert node_a.post(f"{path}/send", json={"target": "nowhere"}).status_code == 400
    # The hub now finds it locally too; its keywords stay on node-a.
    found = hub.get("/teachfile/search", params={"q": "aortic", "timeout": 5}).json()
    assert [s["node"] for s in found["results"][0]["sources"]] == ["local", "node-a"]
    assert found["results"][0]["local_study"] == study  # same UIDs, same Orthanc id

    # -- export from the hub (by Study Instance UID), as a ZIP and as DICOMDIR media ------------
    auth = ["--user", "admin", "--password", hub.password]
    out = tmp_path / "case.zip"
    assert main(["export", "--url", hub.url, *auth, "--study", case["study_instance_uid"],
                 "-o", str(out)]) == 0
    with zipfile.ZipFile(out) as z:
        exported = {str(pydicom.dcmread(io.BytesIO(z.read(n))).SOPInstanceUID): z.read(n)
                    for n in z.namelist() if not n.endswith("/")}
    assert exported == on_hub
    media = tmp_path / "media.zip"
    assert main(["export", "--url", hub.url, *auth, "--study", study, "-o", str(media),
                 "--dicomdir"]) == 0
    with zipfile.ZipFile(media) as z:
        names = z.namelist()
    assert "DICOMDIR" in names and len([n for n in names if n != "DICOMDIR"]) >= 3
    assert "3 instances" in capsys.readouterr().out

    # -- back up node-a: incremental ---------------------------------------------------------
    backup = tmp_path / "backup"
    auth_a = ["--url", node_a.url, "--password", node_a.password]  # user: admin by default
    assert main(["backup", *auth_a, "-o", str(backup)]) == 0
    assert "4 new, 0 already" in capsys.readouterr().out
    assert main(["backup", *auth_a, "-o", str(backup)]) == 0
    assert "0 new, 4 already" in capsys.readouterr().out
    extra = _case_instances(4)[3]
    assert upload_rest(node_a, to_bytes(extra)).status_code == 200
    assert main(["backup", *auth_a, "-o", str(backup)]) == 0
    assert "1 new, 4 already" in capsys.readouterr().out
    manifest = json.loads((backup / "manifest.json").read_text())
    assert set(manifest["files"]) == {f"instances/{i}.dcm" for i in node_a.instances()}
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())
    assert manifest["cases"][study]["diagnosis"] == RECORD["diagnosis"]

    # -- restore into an empty node with the same key ----------------------------------------
    node_b = _start(node_factory, configs["node-b"])
    auth_b = ["--url", node_b.url, "--password", node_b.password]
    tampered = tmp_path / "tampered"
    shutil.copytree(backup, tampered)
    victim = sorted((tampered / "instances").iterdir())[0]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte
    victim.write_bytes(bytes(raw))
    assert main(["restore", str(tampered), *auth_b]) == 1
    assert "SHA-256 differs" in capsys.readouterr().err
    assert node_b.instances() == []  # nothing uploaded

    assert main(["restore", str(backup), *auth_b]) == 0
    assert "restored 5 of 5 instances and 1 case records" in capsys.readouterr().out
    assert sorted(node_b.instances()) == sorted(node_a.instances())  # same UIDs -> same ids
    assert _by_sop(node_b) == _by_sop(node_a)  # byte for byte
    restored = node_b.get(path).json()
    original = node_a.get(path).json()
    for key in ("study_instance_uid", "title", "keywords", "diagnosis", "notes", "instances"):
        assert restored[key] == original[key], key

"""A teaching case outlives whatever happens to Orthanc's study resource: a re-send of the source
study (storescu), an admin's /modify, the study's deletion and a restore from a backup. The
record (title, keywords, diagnosis, notes) lives in the node's case store, keyed by the
pseudonymous Study Instance UID, and reception writes the case title into every instance of a
case it stores.

One node for the whole module (the steps build on each other); the scale-out half, two
replicas over one PostgreSQL index, is in ``test_scale_out.py``.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from harness import Node, storescu
from teachfile.cli.main import main

pytestmark = pytest.mark.integration

TITLE = "Aortic dissection, Stanford type A"
RECORD = {"title": TITLE, "keywords": ["aortic", "dissection", "CTA"],
          "diagnosis": "Acute type A aortic dissection", "notes": "Intimal flap in the arch."}
SOURCE_DESCRIPTION = "CT ANGIO THORAX"


def source_study(directory: Path, name: str, count: int) -> list[Path]:
    """``count`` CT instances of one source study, as files for storescu."""
    directory.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study = generate_uid(entropy_srcs=[name, "study"])
    series = generate_uid(entropy_srcs=[name, "series"])
    files = []
    for i in range(count):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, "instance", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.StudyDescription = SOURCE_DESCRIPTION
        path = directory / f"{name}-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def send(node: Node, files: list[Path]) -> None:
    proc, statuses = storescu(node, files)
    assert statuses == [0] * len(files), proc.stdout[-2000:] + proc.stderr[-2000:]


def study_of(node: Node, uid: str) -> str | None:
    found = [f["ID"] for f in node.post("/tools/lookup", data=uid).json()
             if f.get("Type") == "Study"]
    return found[0] if found else None


def stored_descriptions(node: Node, study: str) -> set[str]:
    out = set()
    for i in node.get(f"/studies/{study}/instances").json():
        ds = pydicom.dcmread(io.BytesIO(node.instance_bytes(i["ID"])), stop_before_pixels=True)
        out.add(str(ds.get("StudyDescription", "")))
    return out


def assert_case(node: Node, study: str, instances: int) -> dict[str, Any]:
    """The case as every reader sees it: the case API, Orthanc's index, the stored files."""
    case = node.get(f"/teachfile/cases/{study}").json()
    assert {k: case[k] for k in RECORD} == RECORD, case
    assert case["labelled"] is True and case["instances"] == instances
    assert node.get(f"/studies/{study}").json()["MainDicomTags"]["StudyDescription"] == TITLE
    assert stored_descriptions(node, study) == {TITLE}
    found = node.get("/teachfile/search", params={"q": "aortic", "timeout": 2}).json()
    assert study in [r["local_study"] for r in found["results"]], found
    return case


def wait_job(node: Node, job: str) -> None:
    for _ in range(600):  # a hang guard, not a timing check
        state = node.get(f"/jobs/{job}").json()["State"]
        if state in ("Success", "Failure"):
            assert state == "Success"
            return
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_a_case_survives_resend_modify_delete_and_restore(
        node_factory: Callable[..., Node], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    node = node_factory()
    big = source_study(tmp_path / "src", "big", 3)
    single = source_study(tmp_path / "src", "single", 1)
    send(node, big + single)
    studies = {}
    for name, files in (("big", big), ("single", single)):
        ids = [s for s in node.get("/studies").json()
               if len(node.get(f"/studies/{s}/instances").json()) == len(files)]
        assert len(ids) == 1
        studies[name] = ids[0]
        r = node.put(f"/teachfile/cases/{ids[0]}", json=RECORD)
        assert r.status_code == 200, r.text
    uids = {n: assert_case(node, s, len(f))["study_instance_uid"]
            for (n, s), f in zip(studies.items(), (big, single), strict=True)}

    # -- the same source study sent again: the 1-instance study is deleted and re-created by
    #    Orthanc (its last instance is replaced), the 3-instance one is overwritten in place.
    send(node, big + single)
    for (name, study), files in zip(studies.items(), (big, single), strict=True):
        assert study_of(node, uids[name]) == study  # same pseudonyms, same Orthanc id
        assert_case(node, study, len(files))

    # -- an admin's /modify of the description: the case title is re-applied.
    r = node.post(f"/studies/{studies['big']}/modify", json={
        "Replace": {"StudyDescription": "something else"}, "Force": True,
        "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        "Asynchronous": True})
    assert r.status_code == 200, r.text
    wait_job(node, r.json()["ID"])
    assert_case(node, studies["big"], 3)

    # -- the study is deleted: its record is still served (by UID and by id), then a restore
    #    from a backup brings the images back under the same case.
    backup = tmp_path / "backup"
    auth = ["--url", node.url, "--password", node.password]
    assert main(["backup", *auth, "-o", str(backup)]) == 0
    assert node.delete(f"/studies/{studies['single']}").status_code == 200
    for ref in (uids["single"], studies["single"]):
        case = node.get(f"/teachfile/cases/{ref}").json()
        assert case["labelled"] and case["instances"] == 0 and case["title"] == TITLE, case
        assert case["diagnosis"] == RECORD["diagnosis"]
    assert main(["restore", str(backup), *auth]) == 0
    capsys.readouterr()
    assert_case(node, studies["single"], 1)
    assert_case(node, studies["big"], 3)

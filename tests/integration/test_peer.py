"""The workshop's peer exercise, on loopback: with ``peer_mode: true`` a participant's node
sends a study straight to a neighbour's (C-STORE through its own Orthanc), and the neighbour
finds it, both in its own store and when queried over C-FIND."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from harness import Node, render_peer_roster, start_rendered, to_bytes, upload_rest

pytestmark = pytest.mark.integration

SECRET = "peer-exercise-secret-0123456789abcdef"


def _render(tmp: Path) -> dict[str, dict[str, Any]]:
    return render_peer_roster(tmp, SECRET, {"ana": "ANA", "ben": "BEN"})


def _start(node_factory: Callable[..., Node], config: dict[str, Any]) -> Node:
    return start_rendered(node_factory, config)


def test_a_participant_sends_to_a_neighbour_who_finds_it(node_factory: Callable[..., Node],
                                                         tmp_path: Path) -> None:
    configs = _render(tmp_path)
    assert set(configs["ana"]["DicomModalities"]) >= {"ben"}
    assert set(configs["ben"]["DicomModalities"]) >= {"ana"}
    ana, ben = _start(node_factory, configs["ana"]), _start(node_factory, configs["ben"])

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDescription = "PEER EXERCISE"
    assert upload_rest(ana, to_bytes(ds)).status_code == 200
    (study,) = ana.get("/studies").json()
    stored_uid = ana.get(f"/studies/{study}").json()["MainDicomTags"]["StudyInstanceUID"]

    r = ana.post("/modalities/ben/store", json={"Resources": [study], "Synchronous": True})
    assert r.status_code == 200, r.text
    # Each node has its own pseudonym key: the neighbour de-identifies what it receives
    # again, under its own pseudonyms, and finds it by what the exercise sent.
    found = ben.post("/tools/find", json={"Level": "Study", "Expand": True, "Query": {
        "StudyDescription": "PEER EXERCISE"}}).json()
    assert len(found) == 1, "the neighbour did not receive the study"
    ben_uid = found[0]["MainDicomTags"]["StudyInstanceUID"]
    assert ben_uid != stored_uid

    # The neighbour also answers a C-FIND for it (ana queries ben over DICOM).
    q = ana.post("/modalities/ben/query", json={"Level": "Study", "Query": {
        "StudyDescription": "PEER EXERCISE", "StudyInstanceUID": ""}})
    assert q.status_code == 200, q.text
    answers = ana.get(f"/queries/{q.json()['ID']}/answers?expand").json()
    assert [a["0020,000d"]["Value"] for a in answers] == [ben_uid]

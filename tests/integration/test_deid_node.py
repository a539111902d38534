"""De-identification on a real node: every path, fail-closed, the sender told, the second line."""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from captures import captures
from harness import (
    Node,
    orthanc_version,
    refused_as_burned_in,
    send_pynetdicom,
    start_node,
    storescu,
    stow_rs,
    to_bytes,
    upload_rest,
)
from phi_corpus import PhiInstance, make_phi_corpus, tokens_in
from teachfile.node.service import STATUS_CANNOT_UNDERSTAND, STATUS_PROCESSING_FAILURE


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[PhiInstance]:
    return make_phi_corpus(tmp_path_factory.mktemp("phi"))


def _known(corpus: list[PhiInstance]) -> set[str]:
    out: set[str] = set()
    for inst in corpus:
        out |= inst.known
    return out


def _assert_clean(node: Node, corpus: list[PhiInstance]) -> list[pydicom.Dataset]:
    known = _known(corpus)
    stored = []
    for iid in node.instances():
        data = node.instance_bytes(iid)
        ds = pydicom.dcmread(io.BytesIO(data))
        leaked = tokens_in(ds, known)
        assert not leaked, f"identifying values survived in a stored instance: {sorted(leaked)}"
        assert ds.PatientIdentityRemoved == "YES"
        stored.append(ds)
    return stored


def _burned_in(inst: PhiInstance) -> bool:
    return refused_as_burned_in(inst.dataset)


def test_every_path_stores_only_deidentified_instances(node: Node, corpus: list[PhiInstance],
                                                       tmp_path: Path) -> None:
    """C-STORE (storescu and pynetdicom), REST upload and STOW-RS: no planted value survives;
    what the pixel policy refuses (likely burned-in text, no rule) is refused, sender told."""
    burned = [i.path for i in corpus if i.path is not None and _burned_in(i)]
    paths = [i for i in corpus if i.path is not None and not _burned_in(i)]
    # A capture with a name in its pixels: refused whether or not the OCR gate can read it.
    banner = tmp_path / "banner.dcm"
    captures()["banner"].save_as(banner, enforce_file_format=True)
    burned.append(banner)
    assert len(paths) >= 6
    quarter = max(1, len(paths) // 4)
    by_storescu = paths[:quarter]
    by_pynetdicom = paths[quarter:2 * quarter]
    by_rest = paths[2 * quarter:3 * quarter]
    by_stow = paths[3 * quarter:]

    proc, statuses = storescu(node, [i.path for i in by_storescu])
    assert statuses == [0] * len(by_storescu), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert send_pynetdicom(node, [i.dataset for i in by_pynetdicom]) == [0] * len(by_pynetdicom)
    for inst in by_rest:
        r = upload_rest(node, inst.raw())
        assert r.status_code == 200, r.text
    r = stow_rs(node, [i.raw() for i in by_stow])
    assert r.status_code == 200, r.text

    stored = _assert_clean(node, corpus)
    assert len(stored) == len(paths)
    counters = node.status()["counters"]
    assert counters["received"] == len(paths) and counters["stored"] == len(paths)
    assert counters["refused"] == 0

    proc, statuses = storescu(node, burned)
    assert statuses == [STATUS_PROCESSING_FAILURE] * len(burned), proc.stdout[-2000:]
    r = upload_rest(node, banner.read_bytes())
    assert r.status_code == 422 and r.json()["Refusals"][0]["reason"] == "burned-in"
    assert len(node.instances()) == len(paths)
    assert node.status()["counters"]["refused_by_reason"] == {"burned-in": len(burned) + 1}


def _refusing_node(node_factory, mode: str) -> Node:
    return node_factory(extra_config={"Teachfile": {"Testing": {"ForceFailure": mode}}})


@pytest.mark.parametrize("mode,reason", [("refusal", "forced-failure"),
                                         ("exception", "internal-error")])
def test_a_failure_stores_nothing_and_the_sender_is_told(node_factory, corpus, tmp_path,
                                                         mode: str, reason: str) -> None:
    node = _refusing_node(node_factory, mode)
    ct = next(i for i in corpus if i.path is not None)

    proc, statuses = storescu(node, [ct.path], calling_aet="MODALITY_A")
    assert statuses == [STATUS_PROCESSING_FAILURE], proc.stdout[-2000:]
    assert send_pynetdicom(node, [ct.dataset], calling_aet="MODALITY_B") == [
        STATUS_PROCESSING_FAILURE]
    r = upload_rest(node, ct.raw())
    assert r.status_code == 422, r.text
    assert r.json()["Refusals"][0]["reason"] == reason
    stow = stow_rs(node, [ct.raw()])
    assert "00081199" not in stow.json() or not stow.json()["00081199"].get("Value")
    # DICOMweb 1.7 (Orthanc 1.10) answers 200 and leaves the instance out; 1.24 (Orthanc 1.13)
    # answers 400 with the instance in the Failed SOP Sequence (README, "Two Orthanc lanes").
    if orthanc_version() >= (1, 13):
        assert stow.status_code == 400 and stow.json()["00081198"]["Value"], stow.text
    else:
        assert stow.status_code == 200, stow.text
        assert not stow.json().get("00081198", {}).get("Value"), stow.text

    assert node.instances() == []
    status = node.status()["counters"]
    assert status["refused"] == 4
    assert status["refused_by_reason"] == {reason: 4}

    refusals = node.get("/teachfile/refusals").json()["refusals"]
    assert len(refusals) == 4
    by_origin = {r["origin"]: r for r in refusals}
    assert by_origin["dicom"]["calling_aet"] in ("MODALITY_A", "MODALITY_B")
    assert {r["calling_aet"] for r in refusals if r["origin"] == "dicom"} == {
        "MODALITY_A", "MODALITY_B"}
    assert by_origin["rest"]["reason"] == reason
    assert all(r["uid_hash"] and r["uid_hash"] != str(ct.dataset.SOPInstanceUID)
               for r in refusals)
    # Nothing identifying in what the node says or logs.
    text = json.dumps(refusals) + json.dumps(node.status()) + node.log_text()
    assert not tokens_in(text.encode(), ct.known)


def test_unreadable_input_is_refused_as_cannot_understand(node: Node, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    good = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = to_bytes(good)
    bad.write_bytes(raw[:1200])  # truncated inside the header
    r = upload_rest(node, raw[:1200])
    assert r.status_code in (400, 422), r.text
    assert node.instances() == []
    assert node.status()["counters"]["refused"] >= 1
    proc, statuses = storescu(node, [bad], extra_args=["-nh"])
    # storescu may refuse to send a file it cannot parse itself; when it does send, the node
    # must answer a failure.
    assert all(s in (STATUS_CANNOT_UNDERSTAND, STATUS_PROCESSING_FAILURE) for s in statuses)
    assert node.instances() == []


def test_second_line_deletes_anything_unsealed(node_factory) -> None:
    """With reception bypassed (test switch), the on-stored guard deletes and raises an alarm."""
    node = node_factory(extra_config={"Teachfile": {"Testing": {"BypassReception": True}}})
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    send_pynetdicom(node, [ct])
    deadline = time.monotonic() + 30
    while node.instances() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.instances() == []
    counters = node.status()["counters"]
    assert counters["alarms"] == 1
    assert counters["alarms_by_reason"] == {"unsealed": 1}


def test_series_sent_days_apart_land_in_one_study(tmp_path: Path, corpus) -> None:
    """Pseudonyms are a keyed function: a restart (same key) maps the same study the same way."""
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    series2 = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    series2.SeriesInstanceUID = pydicom.uid.generate_uid()
    series2.SOPInstanceUID = pydicom.uid.generate_uid()
    series2.file_meta.MediaStorageSOPInstanceUID = series2.SOPInstanceUID
    data = tmp_path / "node"
    first = start_node(data)
    try:
        assert send_pynetdicom(first, [mr]) == [0]
    finally:
        first.stop()
    second = start_node(data)
    try:
        assert send_pynetdicom(second, [series2]) == [0]
        studies = second.get("/studies").json()
        assert len(studies) == 1
        series = second.get(f"/studies/{studies[0]}/series").json()
        assert len(series) == 2
        patients = second.get("/patients").json()
        assert len(patients) == 1
    finally:
        second.stop()


def test_orthanc_modify_keeps_the_pseudonyms(node: Node) -> None:
    """An instance Orthanc re-creates (/modify) is the node's own output: pseudonyms stay."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert send_pynetdicom(node, [ct]) == [0]
    before = node.stored_datasets()[0]
    study = node.get("/studies").json()[0]
    r = node.post(f"/studies/{study}/modify", json={
        "Replace": {"StudyDescription": "Aortic dissection, teaching case"},
        "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        "Force": True,
    })
    assert r.status_code == 200, r.text
    after = node.stored_datasets()
    assert len(after) == 1
    a = after[0]
    assert a.StudyDescription == "Aortic dissection, teaching case"
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID",
               "PatientName", "StudyDate"):
        assert a.get(kw) == before.get(kw), kw


def test_modify_cannot_smuggle_identifiers_in(node: Node) -> None:
    """A /modify that writes a name into a removed attribute still goes through the profile."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert send_pynetdicom(node, [ct]) == [0]
    study = node.get("/studies").json()[0]
    r = node.post(f"/studies/{study}/modify", json={
        "Replace": {"OtherPatientNames": "SMUGGLED^NAME", "InstitutionName": "SMUGGLED HOSPITAL"},
        "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        "Force": True,
    })
    assert r.status_code == 200, r.text
    for ds in node.stored_datasets():
        text = str(ds)
        assert "SMUGGLED" not in text


_HUGE_LENGTHS = [b"\xff\xff\xff\x7f", b"\xfe\xff\xff\xff", b"\x00\x00\x00\x80"]


def _mutations(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    sources = [to_bytes(pydicom.dcmread(get_testdata_file(n)))
               for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
    out = []
    for n in range(count):
        raw = bytearray(rng.choice(sources))
        kind = n % 4
        if kind == 0:  # truncation
            raw = raw[: rng.randrange(0, len(raw))]
        elif kind == 1:  # random byte flips in the header area
            for _ in range(rng.randrange(1, 20)):
                i = rng.randrange(128, min(len(raw), 2000))
                raw[i] = rng.randrange(256)
        elif kind == 2:  # absurd lengths: overwrite a 4-byte length field with a huge value
            i = rng.randrange(132, min(len(raw) - 4, 1500))
            raw[i:i + 4] = rng.choice(_HUGE_LENGTHS)
        else:  # bad VR codes
            i = rng.randrange(136, min(len(raw) - 2, 1500))
            raw[i:i + 2] = rng.choice([b"ZZ", b"\x00\x00", b"SQ", b"UN", b"OB"])
        out.append(bytes(raw))
    return out


def test_malformed_inputs_leave_the_node_up_and_store_nothing_unsafe(node: Node) -> None:
    """1,000 random mutations of valid files: the node answers, and all it stores is sealed."""
    mutated = _mutations(seed=20261125, count=1000)
    codes: dict[int, int] = {}
    for raw in mutated:
        r = upload_rest(node, raw)
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 422), r.text[:500]
    assert node.get("/system").status_code == 200
    counters = node.status()["counters"]
    assert counters["received"] + codes.get(400, 0) >= 1000 - codes.get(200, 0)
    assert counters["alarms"] == 0
    for ds in node.stored_datasets():
        assert ds.PatientIdentityRemoved == "YES"
        assert "CompressedSamples^CT1" not in str(ds.get("PatientName", ""))


def test_instances_orthanc_creates_itself_are_deidentified(node: Node) -> None:
    """/tools/create-dicom and /anonymize produce instances that go through the profile too."""
    r = node.post("/tools/create-dicom", json={"Tags": {
        "PatientName": "CREATED^PATIENT", "PatientID": "CREATED-ID-123",
        "InstitutionName": "CREATED HOSPITAL", "Modality": "CT",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}})
    assert r.status_code == 200, r.text
    assert send_pynetdicom(node, [pydicom.dcmread(get_testdata_file("CT_small.dcm"))]) == [0]
    study = next(s for s in node.get("/studies").json()
                 if node.get(f"/studies/{s}").json()["PatientMainDicomTags"].get("PatientID")
                 != "")
    r = node.post(f"/studies/{study}/anonymize", json={"Replace": {
        "PatientName": "ANONYMIZED^BY^ORTHANC", "InstitutionName": "ANON HOSPITAL"}})
    # Told what was stored, on both lanes: Orthanc 1.13's job answered 404 after storing (it
    # looked the copy up under the UIDs it generated, which the node's pseudonyms replaced).
    assert r.status_code == 200, r.text
    copy = r.json()
    assert copy["ID"] != study and copy["IsAnonymization"] is True
    assert node.get(copy["Path"]).status_code == 200
    assert len(node.get(f"{copy['Path']}/instances").json()) == copy["InstancesCount"] == 1
    r = node.post(f"/studies/{copy['ID']}/modify", json={"Replace": {"StudyDescription": "X"}})
    assert r.status_code == 200, r.text
    assert node.get(r.json()["Path"]).json()["MainDicomTags"].get("StudyDescription") == "X"
    assert node.post("/studies/no-such-study/anonymize", json={}).status_code == 404
    for ds in node.stored_datasets():
        text = str(ds)
        assert "CREATED" not in text and "HOSPITAL" not in text
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientName).startswith("TF^")


def test_a_node_that_cannot_load_its_profile_stores_nothing(node_factory) -> None:
    """Misconfiguration fails closed: Orthanc runs, the plugin refuses every instance."""
    node = node_factory(aet="BROKEN", wait=False,
                        extra_config={"Teachfile": {"Profile": "no-such-profile"}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if node.get("/system", timeout=2).status_code == 200:
                break
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.2)
    assert node.get("/teachfile/status").status_code in (404, 503)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    statuses = send_pynetdicom(node, [ct])
    assert statuses and statuses[0] != 0
    assert upload_rest(node, to_bytes(ct)).status_code >= 400
    assert node.instances() == []
    assert "cannot start" in node.log_text()

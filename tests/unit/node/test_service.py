"""The plugin's behaviour without Orthanc: decisions, tombstones, counters, refusals."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from teachfile.api import routes as rest
from teachfile.node.service import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_PROCESSING_FAILURE,
    UNSTORABLE,
    Service,
    Settings,
    make_tombstone,
    refusal_body,
    stored_answer,
)
from teachfile.reception import seal

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
KEY = "ab" * 32


def _service(tmp_path: Path, **section: object) -> Service:
    config = {"StorageDirectory": str(tmp_path / "storage"),
              "RegisteredUsers": {"admin": "pw"},
              "Teachfile": {"ConfigDirectory": str(CONFIG), "DataDirectory": str(tmp_path),
                            **section}}
    env = {"TEACHFILE_KEY": KEY, "TEACHFILE_TESTING": "1"}
    return Service(Settings.from_orthanc_config(config, env), env)


def _ct_bytes() -> bytes:
    buf = io.BytesIO()
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_accepted_instance_is_deidentified_sealed_and_transcoded(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    action, data = svc.receive(_ct_bytes(), "dicom")
    assert action == "modify" and data
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.PatientIdentityRemoved == "YES"
    assert seal.verify(ds, svc.pseudonymizer)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert svc.verify_stored(data)
    counters = svc.status()["counters"]
    assert counters["received"] == 1 and counters["stored"] == 1
    assert counters["transcoded"] == 1 and counters["refused"] == 0
    # The C-STORE filter lets it through at the cost of one lookup.
    assert svc.cstore_filter(len(data), lambda: pytest.fail("bytes read"), "AET") == 0


def test_dicom_refusal_is_a_tombstone_that_the_filter_refuses(tmp_path: Path) -> None:
    svc = _service(tmp_path, Testing={"ForceFailure": "refusal"})
    action, tomb = svc.receive(_ct_bytes(), "dicom")
    assert action == "modify" and tomb and tomb != UNSTORABLE
    ds = pydicom.dcmread(io.BytesIO(tomb))
    assert ds.PatientID == "TEACHFILE-REFUSED" and "PatientName" not in ds
    assert not svc.verify_stored(tomb)  # were it ever stored, the guard deletes it
    assert svc.cstore_filter(len(tomb), lambda: tomb, "MODALITY") == STATUS_PROCESSING_FAILURE
    refusal = svc.state.refusals()[0]
    assert refusal["calling_aet"] == "MODALITY" and refusal["reason"] == "forced-failure"
    assert refusal["origin"] == "dicom" and refusal["uid_hash"]


def test_unreadable_dicom_input_answers_cannot_understand(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    _, tomb = svc.receive(b"DICM but not really", "dicom")
    assert svc.cstore_filter(len(tomb), lambda: tomb, "X") == STATUS_CANNOT_UNDERSTAND
    assert svc.status()["counters"]["refused_by_reason"] == {"parse-error": 1}


def test_stale_tombstone_never_refuses_another_instance(tmp_path: Path) -> None:
    svc = _service(tmp_path, Testing={"ForceFailure": "refusal"})
    svc.receive(_ct_bytes(), "dicom")
    other = b"x" * 100
    assert svc.cstore_filter(len(other), lambda: other, "X") == 0


def test_pending_tombstones_are_per_thread(tmp_path: Path) -> None:
    svc = _service(tmp_path, Testing={"ForceFailure": "refusal"})
    _, tomb = svc.receive(_ct_bytes(), "dicom")
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(svc.cstore_filter(len(tomb), lambda: tomb,
                                                                      "X")))
    t.start()
    t.join()
    assert seen == [0]  # another thread has no pending tombstone
    assert svc.cstore_filter(len(tomb), lambda: tomb, "X") == STATUS_PROCESSING_FAILURE


@pytest.mark.parametrize("origin", ["rest", "plugin", "lua", "webdav"])
def test_other_origins_get_bytes_orthanc_cannot_store(tmp_path: Path, origin: str) -> None:
    svc = _service(tmp_path, Testing={"ForceFailure": "exception"})
    assert svc.receive(_ct_bytes(), origin) == ("modify", UNSTORABLE)
    refusal = svc.state.refusals()[0]
    assert refusal["reason"] == "internal-error" and refusal["detail"] == "RuntimeError"


def test_uploads_collect_their_refusals_for_the_http_answer(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.begin_upload("rest")
    svc.receive(b"garbage", "plugin")
    refusals = svc.end_upload()
    assert [r.origin for r in refusals] == ["rest"]
    status, body = refusal_body(refusals)
    assert status == 400 and json.loads(body)["Refusals"][0]["reason"] == "parse-error"


def test_key_mismatch_refuses_everything(tmp_path: Path) -> None:
    _service(tmp_path / "a").key_fingerprint  # noqa: B018 - records the cluster key
    shared = tmp_path / "a" / "storage"
    config = {"StorageDirectory": str(shared),
              "Teachfile": {"ConfigDirectory": str(CONFIG), "DataDirectory": str(tmp_path / "b")}}
    other = Service(Settings.from_orthanc_config(config), {"TEACHFILE_KEY": "cd" * 32})
    assert other.status()["key_check"]["state"] == "mismatch"
    assert other.status()["counters"]["alarms_by_reason"] == {"key-mismatch": 1}
    _, tomb = other.receive(_ct_bytes(), "dicom")
    assert other.cstore_filter(len(tomb), lambda: tomb, "X") == STATUS_PROCESSING_FAILURE


def test_status_and_profile_through_dispatch(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    st = rest.dispatch(svc, rest.Request("GET", "/teachfile/status", {}))
    assert st.status == 200 and st.body["profile"]["name"] == "teaching"
    prof = rest.dispatch(svc, rest.Request("GET", "/teachfile/profile", {})).body
    assert prof["actions"]["(0010,0010)"] and "retain_patient_characteristics" in prof["options"]
    assert rest.dispatch(svc, rest.Request("GET", "/teachfile/refusals",
                                           {"limit": "-1"})).status == 400


def test_no_key_value_in_status(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    assert KEY not in json.dumps(svc.status())


def test_test_switches_need_the_test_environment(tmp_path: Path) -> None:
    from teachfile.errors import ConfigError

    config = {"Teachfile": {"Testing": {"BypassReception": True}}}
    with pytest.raises(ConfigError, match="test suite only"):
        Settings.from_orthanc_config(config, {})


def test_upload_outcomes(tmp_path: Path) -> None:
    status, body = refusal_body([])
    assert status == 500 and json.loads(body)["Status"] == "Failure"
    assert refusal_body([], orthanc_error=15)[0] == 400
    svc = _service(tmp_path)
    svc.begin_upload("rest")
    svc.receive(b"garbage", "plugin")
    status, body = refusal_body(svc.end_upload(), stored=[{"Status": "Success"}])
    assert status == 400 and json.loads(body)["Status"] == "PartlyRefused"


def test_tombstones_are_unique() -> None:
    assert make_tombstone() != make_tombstone()


def test_a_plugin_upload_learns_what_was_stored_on_its_thread(tmp_path: Path) -> None:
    """Orthanc answers POST /instances from the received file; the plugin answers from what the
    on-stored callback (same thread) saw, so an upload Orthanc fails after storing is told."""
    svc = _service(tmp_path)
    _, data = svc.receive(_ct_bytes(), "dicom")
    assert svc.verify_stored(data, "outside-an-upload")  # not remembered: no upload open
    svc.begin_upload("rest")
    assert svc.verify_stored(data, "iid-1")
    svc.end_upload()
    assert svc.take_upload_stored() == ["iid-1"]
    assert svc.take_upload_stored() == []


def test_structural_refusals_are_cannot_understand(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    raw = _ct_bytes()
    _, tomb = svc.receive(raw[:-3000], "dicom")  # truncated pixel data
    assert svc.cstore_filter(len(tomb), lambda: tomb, "AET") == STATUS_CANNOT_UNDERSTAND
    assert svc.state.refusals()[0]["reason"] == "length-overrun"
    svc.begin_upload("rest")
    svc.receive(raw[:-3000], "plugin")
    assert refusal_body(svc.end_upload())[0] == 400


def _fake_orthanc(parents: dict[str, tuple[str, str, str]]) -> Any:
    """Internal GET over instance -> (series, study, patient)."""

    def get(uri: str) -> bytes:
        kind, rid = uri.strip("/").split("/")
        if kind == "instances":
            return json.dumps({"ParentSeries": parents[rid][0]}).encode()
        if kind == "series":
            study = next(p[1] for p in parents.values() if p[0] == rid)
            return json.dumps({"ParentStudy": study}).encode()
        patient = next(p[2] for p in parents.values() if p[1] == rid)
        return json.dumps({"ParentPatient": patient}).encode()

    return get


def test_a_modification_is_answered_with_the_resource_it_stored() -> None:
    from teachfile.node.service import modification_answer

    get = _fake_orthanc({"i1": ("se1", "st1", "p1"), "i2": ("se2", "st1", "p1")})
    answer = modification_answer(get, "studies", ["i1", "i2"], anonymization=True)
    assert answer is not None
    assert (answer["ID"], answer["Path"], answer["PatientID"], answer["Type"],
            answer["InstancesCount"], answer["IsAnonymization"]) == (
        "st1", "/studies/st1", "p1", "Study", 2, True)
    # Two series under one study: no single series to name; nothing stored: no answer.
    assert modification_answer(get, "series", ["i1", "i2"], anonymization=False) is None
    assert modification_answer(get, "studies", [], anonymization=False) is None
    assert modification_answer(get, "patients", ["i1"], False)["ID"] == "p1"  # type: ignore[index]


def test_status_says_whether_the_thread_stack_preload_is_loaded(tmp_path: Path) -> None:
    """Unknown (None) until the entry script has looked at its own process."""
    svc = _service(tmp_path)
    assert svc.status()["thread_stack_preload"] is None
    svc.thread_stack_preload = True
    assert svc.status()["thread_stack_preload"] is True


def test_the_stored_answer_never_lists_a_series() -> None:
    """``/series/{id}`` lists every instance of the series: asked once per upload, a long
    series made each upload cost more than the one before."""
    docs = {"/instances/i1": {"ID": "i1", "ParentSeries": "se1"},
            "/instances/i1/study": {"ID": "st1", "ParentPatient": "p1", "Series": ["se1"]}}
    asked: list[str] = []

    def get(uri: str) -> bytes:
        asked.append(uri)
        return json.dumps(docs[uri]).encode()

    assert stored_answer(get, ["i1"]) == {
        "ID": "i1", "Path": "/instances/i1", "Status": "Success", "ParentSeries": "se1",
        "ParentStudy": "st1", "ParentPatient": "p1"}
    assert not any(u.startswith("/series/") for u in asked)

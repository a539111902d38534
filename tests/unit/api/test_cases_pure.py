"""The pure parts of the case workflow: records, search patterns and merging, the bounded
fan-out, C-FIND against in-process peers, routing with a fake Orthanc, and the backup manifest."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import socket
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teachfile.api import cases, casesearch
from teachfile.api.casesearch import Hit, NodeFailure, Peer
from teachfile.api.routes import Request, dispatch
from teachfile.cli import cases as casecli
from teachfile.node.records import CaseStore

STUDY = "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"

# -- records -----------------------------------------------------------------------------------


def test_a_put_replaces_given_fields_and_keeps_the_others() -> None:
    cur = cases.CaseRecord("Old", ("a",), "dx", "n", "t0")
    new = cases.update_record(cur, {"keywords": " CTA , aorta,cta,, Aorta "}, now="t1")
    assert new == cases.CaseRecord("Old", ("CTA", "aorta"), "dx", "n", "t1")
    new = cases.update_record(cur, {"title": "  Aortic  dissection ", "notes": "line1\nline2"})
    assert new.title == "Aortic  dissection" and new.notes == "line1\nline2"
    assert new.keywords == ("a",) and new.updated


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({"colour": "red"}, "unknown fields: colour"),
    ({"title": ""}, "must not be empty"),
    ({"title": "x" * 65}, "longer than 64"),
    ({"title": "a\\b"}, "backslash"),
    ({"title": "a\nb"}, "control"),
    ({"title": 3}, "must be a string"),
    ({"keywords": [1]}, "list of strings"),
    ({"keywords": ["k"] * 1 + [f"k{i}" for i in range(40)]}, "at most 32"),
    ({"keywords": ["x" * 65]}, "longer than 64"),
    ({"diagnosis": "d" * 1025}, "longer than 1024"),
    ({"notes": "a\x00b"}, "control"),
])
def test_bad_bodies_are_refused_without_quoting_values(body: Any, message: str) -> None:
    with pytest.raises(cases.CaseError) as exc:
        cases.update_record(cases.CaseRecord(), body)
    assert message in str(exc.value)
    assert "red" not in str(exc.value) and "xxxx" not in str(exc.value)


def test_record_round_trip_and_tolerant_reading() -> None:
    rec = cases.CaseRecord("T", ("k1", "k2"), "dx", "notes", "2026-01-01T00:00:00+00:00")
    assert cases.CaseRecord.from_json(json.dumps(rec.as_json())) == rec
    assert cases.CaseRecord.from_json(b"[1, 2]") == cases.CaseRecord()
    assert cases.CaseRecord.from_json({"title": "T"}).keywords == ()
    assert cases.record_matches("K2", rec) and cases.record_matches("D?", rec)
    # Notes are searched too (they were not: a case found by its notes only was missed).
    assert cases.record_matches("notes", rec) and not cases.record_matches("nothing", rec)


# -- search: patterns, matching, answers, merging ------------------------------------------------


def test_queries_are_checked() -> None:
    assert casesearch.parse_query("  aortic   dissection ") == "aortic dissection"
    for bad in ("", "**", "?", "a\\b", "x" * 65, "a\x01b"):
        with pytest.raises(ValueError):
            casesearch.parse_query(bad)


@pytest.mark.parametrize("raw, typed", [
    ("stanford%20type", "stanford type"), ("stanford+type", "stanford type"),
    ("stanford type", "stanford type"), ("a%2Ab", "a*b"), (None, ""),
])
def test_the_query_string_is_decoded_as_a_browser_encodes_it(raw: str | None,
                                                              typed: str) -> None:
    assert cases.query_text(raw) == typed


def test_patterns_cover_the_usual_spellings_once_each() -> None:
    assert casesearch.cfind_patterns("aortic") == ["*aortic*", "*Aortic*", "*AORTIC*"]
    assert casesearch.cfind_patterns("CTA") == ["*CTA*", "*cta*", "*Cta*"]
    assert len(casesearch.cfind_patterns("stanford type")) == 4


@pytest.mark.parametrize("q, text, expected", [
    ("aortic", "Aortic dissection", True),
    ("AORTIC", "aortic", True),
    ("stanford?type", "Stanford type A", True),
    ("a*tic", "Aortic", True),
    ("aortic", "Aorta", False),
    ("a.c", "abc", False),  # regex characters are literal
    ("x", "", False),
])
def test_text_matching_ignores_case_and_honours_dicom_wildcards(q: str, text: str,
                                                                expected: bool) -> None:
    assert casesearch.text_matches(q, text) is expected


def test_answers_keep_only_study_level_attributes() -> None:
    hit = casesearch.hit_from_answer("n", "N", {
        "StudyInstanceUID": "1.2.3", "StudyDescription": "Aortic ", "StudyDate": "20200101",
        "ModalitiesInStudy": "CT\\MR", "NumberOfStudyRelatedInstances": "12",
        "PatientName": "DOE^JOHN"})
    assert hit == Hit("n", "N", "1.2.3", "Aortic", "20200101", ("CT", "MR"), 12)
    assert "DOE" not in repr(hit)
    assert casesearch.hit_from_answer("n", "N", {"StudyDescription": "x"}) is None
    assert casesearch.hit_from_answer("n", "N", {"StudyInstanceUID": "1",
                                                 "ModalitiesInStudy": ["CT", "SR"],
                                                 "NumberOfStudyRelatedInstances": ""}
                                      ).modalities == ("CT", "SR")


def test_merging_puts_the_local_copy_first_and_lists_every_source() -> None:
    hits = [
        Hit("node-b", "B", "1.2", "Aortic", "2020", ("CT",), 3),
        Hit("local", "L", "1.2", "Aortic", "2020", ("CT", "SR"), 4, "sid", {"keywords": ["k"]}),
        Hit("node-a", "A", "1.2", "Aortic", "2020", ("CT",), 3),
        Hit("node-a", "A", "9.9", "aneurysm", "2019", ("MR",), None),
    ]
    merged = casesearch.merge_hits(hits)
    assert [r["study_instance_uid"] for r in merged] == ["9.9", "1.2"]  # by title, no case
    first = merged[1]
    assert [s["node"] for s in first["sources"]] == ["local", "node-a", "node-b"]
    assert first["local_study"] == "sid" and first["case"] == {"keywords": ["k"]}
    assert first["modalities"] == ["CT", "SR"] and first["instances"] == 4
    assert merged[0]["instances"] is None and merged[0]["case"] is None
    assert len(casesearch.merge_hits(hits, limit=1)) == 1


def test_peers_come_from_orthancs_modality_table() -> None:
    peers = casesearch.peers_from_modalities({
        "b": {"AET": "B", "Host": "127.0.0.1", "Port": 104}, "a": {"AET": "A", "Host": "h"},
        "odd": ["not", "an", "object"]})
    assert peers == [Peer("a", "A", "h", 104), Peer("b", "B", "127.0.0.1", 104)]


# -- the fan-out ---------------------------------------------------------------------------------


def test_fan_out_reports_every_node_and_never_waits_past_the_deadline() -> None:
    release = threading.Event()

    def stuck() -> list[Hit]:
        release.wait(30)
        return [Hit("late", "L", "1")]

    def broken() -> list[Hit]:
        raise RuntimeError("Error in the network protocol")

    def refused() -> list[Hit]:
        raise NodeFailure("refused", "the node rejected the association")

    try:
        out = casesearch.fan_out({"ok": lambda: [Hit("ok", "O", "1")], "stuck": stuck,
                                  "broken": broken, "refused": refused,
                                  "odd": lambda: 1 / 0}, deadline=0.5)
    finally:
        release.set()
    assert out["ok"].status == "ok" and out["ok"].hits[0].node == "ok"
    assert out["stuck"].status == "timeout" and not out["stuck"].hits
    assert out["broken"].status == "unreachable"
    assert out["refused"] == casesearch.NodeOutcome("refused", (),
                                                    "the node rejected the association")
    assert out["odd"].status == "error" and out["odd"].detail == "division by zero"


# -- C-FIND against in-process peers -------------------------------------------------------------


@pytest.fixture
def scp() -> Iterator[Peer]:
    """A pynetdicom C-FIND SCP on loopback that matches Study Description case-sensitively,
    as Orthanc does, and answers a patient name it was not asked for."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    studies = [("1.1", "Aortic dissection"), ("1.2", "AORTIC ANEURYSM"), ("1.3", "Knee")]

    def on_find(event: Any) -> Iterator[tuple[int, Any]]:
        pattern = str(event.identifier.StudyDescription)
        for uid, desc in studies:
            if fnmatch.fnmatchcase(desc, pattern):
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                ds.StudyInstanceUID = uid
                ds.StudyDescription = desc
                ds.PatientName = "DOE^JOHN"
                ds.ModalitiesInStudy = ["CT", "SR"]
                yield 0xFF00, ds

    ae = AE(ae_title="PEER")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        yield Peer("peer", "PEER", "127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()


def test_cfind_asks_every_spelling_on_one_association_and_drops_phi(scp: Peer) -> None:
    hits = casesearch.cfind_study_descriptions(scp, "CALLER", "aortic", 5)
    assert sorted((h.study_instance_uid, h.title) for h in hits) == [
        ("1.1", "Aortic dissection"), ("1.2", "AORTIC ANEURYSM")]
    assert hits[0].modalities == ("CT", "SR") and "DOE" not in repr(hits)
    assert casesearch.cfind_study_descriptions(scp, "CALLER", "knee", 5)[0].title == "Knee"
    assert casesearch.cfind_study_descriptions(scp, "CALLER", "liver", 5) == []


def test_a_closed_port_is_unreachable_and_a_silent_one_times_out() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(NodeFailure) as exc:
        casesearch.cfind_study_descriptions(Peer("x", "X", "127.0.0.1", port), "C", "a", 2)
    assert exc.value.status == "unreachable"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        peer = Peer("s", "S", "127.0.0.1", silent.getsockname()[1])
        with pytest.raises(NodeFailure) as exc:
            casesearch.cfind_study_descriptions(peer, "C", "a", 1)
    assert exc.value.status == "timeout"


# -- routing and handlers against a fake Orthanc --------------------------------------------------


class FakeOrthanc:
    """Just enough of Orthanc's internal REST API for the case handlers."""

    def __init__(self) -> None:
        self.description: str | None = "e+1"
        self.metadata: dict[str, str] = {}
        self.modified = 0
        self.calls: list[str] = []

    def get(self, uri: str) -> bytes:
        self.calls.append("GET " + uri)
        if uri == f"/studies/{STUDY}" and self.description is not None:
            return json.dumps({"MainDicomTags": {"StudyDescription": self.description,
                                                 "StudyInstanceUID": "1.2.3"}}).encode()
        if uri == f"/studies/{STUDY}/instances":
            return json.dumps([{"ID": "i1"}, {"ID": "i2"}]).encode()
        if uri == f"/studies/{STUDY}/metadata/{cases.CASE_METADATA}":
            if "rec" not in self.metadata:
                raise RuntimeError("Unknown resource")
            return self.metadata["rec"].encode()
        if uri == "/jobs/job-1":
            return json.dumps({"State": "Success", "Content": {"ID": STUDY}}).encode()
        if uri == "/modalities":
            return b'["hub"]'
        raise RuntimeError("Unknown resource")

    def post(self, uri: str, body: bytes) -> bytes:
        self.calls.append("POST " + uri)
        if uri == "/tools/lookup":
            return b'[{"Type": "Study", "ID": "%s"}]' % STUDY.encode() if body == b"1.2.3" \
                else b"[]"
        if uri == f"/studies/{STUDY}/modify":
            request = json.loads(body)
            assert request["Keep"] == ["StudyInstanceUID", "SeriesInstanceUID",
                                       "SOPInstanceUID"]
            assert request["Force"] and request["Asynchronous"]
            self.description = request["Replace"]["StudyDescription"]
            self.modified += 1
            return b'{"ID": "job-1"}'
        if uri == f"/studies/{STUDY}/reconstruct":
            return b""
        if uri == "/modalities/hub/store":
            assert json.loads(body) == {"Resources": [STUDY], "Asynchronous": True}
            return b'{"ID": "job-2"}'
        raise RuntimeError("Unknown resource")

    def put(self, uri: str, body: bytes) -> bytes:
        raise RuntimeError("records are not Orthanc metadata any more")

    def delete(self, uri: str) -> None:
        raise RuntimeError("not used")


def _service(directory: Path | None = None) -> Any:
    """What the handlers need of the node's Service: its case store."""
    return types.SimpleNamespace(cases=CaseStore(directory or Path(tempfile.mkdtemp())))


def _req(api: FakeOrthanc, method: str, path: str, body: Any = None,
         query: dict[str, str] | None = None, service: Any = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    return dispatch(service or _service(), Request(method, path, query or {}, data, "carol",
                                                   api))


def test_cases_are_labelled_read_and_sent_through_dispatch(tmp_path: Path) -> None:
    api = FakeOrthanc()
    svc = _service(tmp_path)
    r = _req(api, "GET", f"/teachfile/cases/{STUDY}", service=svc)
    assert r.status == 200 and r.body["title"] == "e+1" and not r.body["labelled"]
    r = _req(api, "PUT", f"/teachfile/cases/{STUDY}",
             {"title": "Aortic dissection", "keywords": ["aorta"]}, service=svc)
    assert r.status == 200, r.body
    assert r.body["title"] == "Aortic dissection" and r.body["labelled"]
    assert r.body["instances"] == 2 and api.modified == 1
    assert f"POST /studies/{STUDY}/reconstruct" in api.calls
    # Same title: the record changes, the instances are not rewritten.
    r = _req(api, "PUT", f"/teachfile/cases/{STUDY}/", {"diagnosis": "type A"}, service=svc)
    assert r.status == 200 and api.modified == 1
    assert r.body["keywords"] == ["aorta"] and r.body["diagnosis"] == "type A"
    # The record is in the case store, keyed by the Study Instance UID, not in Orthanc.
    stored = svc.cases.get("1.2.3")
    assert stored.study == STUDY and stored.record.diagnosis == "type A"
    assert svc.cases.title_for("1.2.3") == "Aortic dissection"
    # The Study Instance UID names the study as well as the Orthanc id does.
    r = _req(api, "GET", "/teachfile/cases/1.2.3", service=svc)
    assert r.status == 200 and r.body["study"] == STUDY and r.body["diagnosis"] == "type A"
    r = _req(api, "POST", "/teachfile/cases/1.2.3/send", {"target": "hub"}, service=svc)
    assert r.body == {"study": STUDY, "target": "hub", "job": "job-2",
                      "job_path": "/jobs/job-2"}
    assert _req(api, "GET", "/teachfile/cases/1.2.4", service=svc).status == 404
    # A deleted study's record is still served, by UID and by its last Orthanc id.
    api.description = None
    for ref in ("1.2.3", STUDY):
        r = _req(api, "GET", f"/teachfile/cases/{ref}", service=svc)
        assert r.status == 200 and r.body["labelled"] and not r.body["stored"], r.body
        assert r.body["instances"] == 0 and r.body["title"] == "Aortic dissection"


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/teachfile/cases/not-an-id", None, 400),
    ("GET", "/teachfile/cases/1.2.999", None, 404),
    ("GET", "/teachfile/cases/" + STUDY.replace("0", "f"), None, 404),
    ("PUT", f"/teachfile/cases/{STUDY}", {"title": ""}, 400),
    ("PUT", f"/teachfile/cases/{STUDY}", None, 200),
    ("POST", f"/teachfile/cases/{STUDY}/send", {}, 400),
    ("POST", f"/teachfile/cases/{STUDY}/send", {"target": "elsewhere"}, 400),
    ("DELETE", f"/teachfile/cases/{STUDY}", None, 405),
    ("GET", f"/teachfile/cases/{STUDY}/send", None, 405),
    ("GET", "/teachfile/search", None, 400),
    ("GET", "/teachfile/cases", None, 404),
    ("GET", "/teachfile/status/extra", None, 404),
])
def test_routing_and_client_errors(method: str, path: str, body: Any, status: int) -> None:
    r = _req(FakeOrthanc(), method, path, body)
    assert r.status == status, r.body
    if status == 405:
        assert r.body["allow"] in ("GET,PUT", "POST")


def test_search_timeout_argument_is_checked() -> None:
    for value in ("x", "0", str(cases.MAX_TIMEOUT + 1)):
        r = _req(FakeOrthanc(), "GET", "/teachfile/search", query={"q": "a", "timeout": value})
        assert r.status == 400


def test_the_readme_and_the_api_document_state_the_timeout_the_code_enforces() -> None:
    """The README once promised 120 s while the node refused anything above 30."""
    import re

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    stated = re.findall(r"`timeout` \(default (\d+) s, at most (\d+)\)", readme)
    assert stated == [(str(cases.DEFAULT_TIMEOUT), str(cases.MAX_TIMEOUT))]
    from teachfile.api.routes import openapi_document

    params = openapi_document()["paths"]["/teachfile/search"]["get"]["parameters"]
    schema = next(p["schema"] for p in params if p["name"] == "timeout")
    assert (schema["default"], schema["maximum"]) == (cases.DEFAULT_TIMEOUT, cases.MAX_TIMEOUT)


# -- backup manifest and progress -----------------------------------------------------------------


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    (tmp_path / "instances").mkdir()
    data = b"DICM-ish bytes"
    (tmp_path / "instances/abc.dcm").write_bytes(data)
    m = casecli.Manifest()
    m.files["instances/abc.dcm"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                    "size": len(data), "instance": "abc", "study": "s"}
    m.files["instances/gone.dcm"] = {"sha256": "0" * 64, "size": 1, "instance": "gone"}
    m.cases["s"] = {"title": "T"}
    m.save(tmp_path)
    loaded = casecli.Manifest.load(tmp_path)
    assert loaded == m and loaded.instance_ids() == {"abc", "gone"}
    assert casecli.verify(tmp_path, loaded) == ["instances/gone.dcm: missing"]
    (tmp_path / "instances/abc.dcm").write_bytes(b"DICM-ish bytez")
    assert casecli.verify(tmp_path, loaded)[0] == ("instances/abc.dcm: SHA-256 differs from "
                                                   "the manifest")
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(casecli.TeachfileError):
        casecli.Manifest.load(tmp_path)
    assert casecli.Manifest.load(tmp_path / "nowhere") == casecli.Manifest()


def test_progress_prints_one_final_line_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    bar = casecli.Progress("backup", 4, "instances", stream=out, width=8)
    for _ in range(4):
        bar.update()
    bar.close()
    assert out.getvalue() == "backup [########] 4/4 instances 100%\n"
    out = io.StringIO()
    bar = casecli.Progress("export case.zip", None, "B", stream=out)
    bar.update(3 * 1024 * 1024)
    bar.close()
    assert out.getvalue() == "export case.zip 3.0 MiB\n"

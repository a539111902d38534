"""The portal's endpoints on a real node: each answers as the OpenAPI document says, roles are
enforced by the server (not only hidden by the page), unknown mode hides the answer fields from
search and record alike, and concurrent edits of the conference lists conflict instead of losing
one."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from portal_data import ct_stack

from harness import Node, check_documented, start_node, to_bytes, upload_rest
from teachfile.api.routes import openapi_document

pytestmark = pytest.mark.integration

USERS = {"admin": "admin-pw", "vera": "vera-pw", "carl": "carl-pw"}
ROLES = {"vera": "viewer", "carl": "contributor"}


@pytest.fixture(scope="module")
def pnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = start_node(tmp_path_factory.mktemp("portal-api"), password=USERS["admin"],
                      extra_config={"RegisteredUsers": USERS, "Teachfile": {"Roles": ROLES}})
    try:
        for ds in ct_stack(3, seed="api", description="Pneumothorax"):
            assert upload_rest(node, to_bytes(ds)).status_code == 200
        yield node
    finally:
        node.stop()


def _as(node: Node, user: str, method: str, path: str, **kw: Any) -> requests.Response:
    return node.request(method, path, auth=(user, USERS[user]), **kw)


def test_every_portal_endpoint_answers_as_documented(pnode: Node) -> None:
    doc = openapi_document()
    study = pnode.get("/studies").json()[0]
    series = pnode.get(f"/studies/{study}/series").json()[0]["ID"]
    frames = pnode.get(f"/teachfile/portal/series/{series}").json()["frames"]
    instance = frames[0]["instance"]
    conf = pnode.get("/teachfile/portal/conferences").json()
    P = "/teachfile/portal"
    calls = [
        ("/teachfile/ui/", "/teachfile/ui/", "get", {}),
        ("/teachfile/ui/{file}", "/teachfile/ui/app.js", "get", {}),
        ("/teachfile/ui/{file}", "/teachfile/ui/nope.js", "get", {}),
        (f"{P}/me", f"{P}/me", "get", {}),
        (f"{P}/library", f"{P}/library", "get", {"params": {"q": "pneumo", "sort": "-date"}}),
        (f"{P}/library", f"{P}/library", "get", {"params": {"sort": "sideways"}}),
        (f"{P}/cases/{{study}}", f"{P}/cases/{study}", "get", {"params": {"unknown": "1"}}),
        (f"{P}/cases/{{study}}", f"{P}/cases/nope", "get", {}),
        (f"{P}/cases/{{study}}", f"{P}/cases/{study}", "put",
         {"json": {"diagnosis": "Tension pneumothorax", "keywords": ["chest"],
                   "history": "Seen by Dr Smith on 12/03/2021", "key_images": [instance]}}),
        (f"{P}/cases/{{study}}", f"{P}/cases/{study}", "put", {"json": {"colour": "red"}}),
        (f"{P}/cases/{{study}}/archive", f"{P}/cases/{study}/archive", "get", {}),
        (f"{P}/cases/{{study}}/archive", f"{P}/cases/{study}/archive", "get",
         {"params": {"media": "1"}}),
        (f"{P}/cases/{{study}}/nifti", f"{P}/cases/{study}/nifti", "get", {}),
        (f"{P}/series/{{series}}", f"{P}/series/{series}", "get", {}),
        (f"{P}/instances/{{instance}}/frames/{{frame}}", f"{P}/instances/{instance}/frames/0",
         "get", {}),
        (f"{P}/instances/{{instance}}/thumbnail", f"{P}/instances/{instance}/thumbnail",
         "get", {}),
        (f"{P}/conferences", f"{P}/conferences", "get", {}),
        (f"{P}/conferences", f"{P}/conferences", "put",
         {"json": {"version": conf["version"], "lists": [{"name": "Chest", "cases": [study]}]}}),
        (f"{P}/conferences", f"{P}/conferences", "put",
         {"json": {"version": conf["version"], "lists": []}}),  # stale version: 409
        (f"{P}/quiz", f"{P}/quiz", "get", {"params": {"keyword": "chest"}}),
        (f"{P}/quiz", f"{P}/quiz", "get", {"params": {"keyword": "nothing-has-this"}}),
        (f"{P}/nodes", f"{P}/nodes", "get", {}),
        (f"{P}/nodes/{{name}}/echo", f"{P}/nodes/nowhere/echo", "post", {}),
        (f"{P}/retrieve", f"{P}/retrieve", "post", {"json": {"node": "nowhere"}}),
        (f"{P}/jobs/{{job}}", f"{P}/jobs/0000", "get", {}),
        (f"{P}/network", f"{P}/network", "get",
         {"params": {"q": "pneumo", "timeout": "2", "unknown": "1"}}),
        (f"{P}/network", f"{P}/network", "get", {}),
    ]
    seen = set()
    answers: dict[str, requests.Response] = {}
    for template, path, method, kw in calls:
        resp = pnode.request(method.upper(), path, **kw)
        check_documented(doc, template, method, resp)
        seen.add((template, method))
        answers.setdefault(f"{method} {path}", resp)
        assert requests.request(method.upper(), pnode.url + path, timeout=10).status_code == 401
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops
                  if p.startswith(("/teachfile/portal", "/teachfile/ui"))}
    assert documented <= seen, documented - seen
    saved = answers[f"put {P}/cases/{study}"].json()
    assert {"field": "history", "kind": "date"} in saved["warnings"]
    assert {"field": "history", "kind": "honorific"} in saved["warnings"]
    assert saved["record"]["key_images"] == [instance]
    arr = np.load(io.BytesIO(answers[f"get {P}/instances/{instance}/frames/0"].content))
    assert arr.shape == (128, 128) and arr.dtype == np.int16


def test_roles_are_enforced_by_the_server(pnode: Node) -> None:
    study = pnode.get("/studies").json()[0]
    assert _as(pnode, "vera", "GET", f"/teachfile/portal/cases/{study}").status_code == 200
    assert _as(pnode, "vera", "PUT", f"/teachfile/portal/cases/{study}",
               json={"diagnosis": "x"}).status_code == 403
    assert _as(pnode, "vera", "PUT", "/teachfile/portal/conferences",
               json={"lists": []}).status_code == 403
    assert _as(pnode, "vera", "POST", "/teachfile/portal/retrieve", json={}).status_code == 403
    assert _as(pnode, "carl", "POST", "/teachfile/portal/nodes/x/echo").status_code == 403
    assert _as(pnode, "carl", "PUT", f"/teachfile/portal/cases/{study}",
               json={"findings": "Collapsed right lung."}).status_code == 200
    me = _as(pnode, "vera", "GET", "/teachfile/portal/me").json()
    assert {k: v for k, v in me.items() if k != "nifti"} == {
        "user": "vera", "role": "viewer", "may_author": False, "may_admin": False}


def test_unknown_mode_hides_the_answer_from_search_and_record(pnode: Node) -> None:
    study = pnode.get("/studies").json()[0]
    assert pnode.put(f"/teachfile/portal/cases/{study}",
                     json={"diagnosis": "Tension pneumothorax",
                           "discussion": "Mediastinal shift"}).status_code == 200
    lib = "/teachfile/portal/library"
    assert pnode.get(lib, params={"q": "tension"}).json()["total"] == 1
    assert pnode.get(lib, params={"q": "tension", "unknown": "1"}).json()["total"] == 0
    assert pnode.get(lib, params={"q": "mediastinal shift", "unknown": "1"}).json()["total"] == 0
    page = pnode.get(lib, params={"unknown": "1"}).json()
    assert "Tension" not in str(page)
    net = pnode.get("/teachfile/portal/network",
                    params={"q": "pneumothorax", "unknown": "1", "timeout": "2"}).json()
    assert net["count"] == 1 and "Tension" not in str(net)
    known = pnode.get("/teachfile/portal/network", params={"q": "pneumothorax"}).json()
    assert "Tension" in str(known)
    case = pnode.get(f"/teachfile/portal/cases/{study}", params={"unknown": "1"}).json()
    assert "Tension" not in str(case) and case["hidden"] == ["diagnosis", "differential",
                                                              "discussion"]


def test_static_files_stay_inside_the_portal(pnode: Node, tmp_path: Path) -> None:
    for bad in ("/teachfile/ui/..%2Fportal.py", "/teachfile/ui/portal.py",
                "/teachfile/ui/.hidden.js"):
        assert pnode.get(bad).status_code in (400, 404)
    page = pnode.get("/teachfile/ui/")
    assert page.headers["Content-Type"].startswith("text/html") and b"app.js" in page.content


def test_the_record_travels_as_dicom_and_is_searchable_on_the_receiving_node(
        node_factory: Any) -> None:
    from harness import free_port

    key = {"TEACHFILE_KEY": "6b" * 32}  # a department's nodes share the key
    ports = {"A": (free_port(), free_port()), "B": (free_port(), free_port())}
    mods = {"nodea": ["NODE_A", "127.0.0.1", ports["A"][0]],
            "nodeb": ["NODE_B", "127.0.0.1", ports["B"][0]]}
    extra = {"DicomModalities": mods, "RegisteredUsers": USERS,
             "Teachfile": {"Roles": ROLES}}
    a = node_factory(aet="NODE_A", dicom_port=ports["A"][0], http_port=ports["A"][1], env=key,
                     password=USERS["admin"], extra_config=extra)
    b = node_factory(aet="NODE_B", dicom_port=ports["B"][0], http_port=ports["B"][1], env=key,
                     password=USERS["admin"], extra_config=extra)
    for ds in ct_stack(3, seed="travel", description="Pneumoperitoneum"):
        assert upload_rest(a, to_bytes(ds)).status_code == 200
    study = a.get("/studies").json()[0]
    first = a.get(f"/studies/{study}/instances").json()[0]["ID"]
    saved = _as(a, "carl", "PUT", f"/teachfile/portal/cases/{study}", json={
        "keywords": ["abdomen", "free air"], "diagnosis": "Perforated duodenal ulcer",
        "findings": "Rigler sign", "key_images": [first]})
    assert saved.status_code == 200 and saved.json()["dicom_record"] == "written"
    series = a.get(f"/studies/{study}/series").json()
    assert sorted(s["MainDicomTags"]["Modality"] for s in series) == ["CT", "KO", "SR"]
    sr_series = next(s for s in series if s["MainDicomTags"]["Modality"] == "SR")
    sr = pydicom_read(a, sr_series["Instances"][0])
    texts = [str(item.TextValue) for item in sr.ContentSequence]
    assert "Perforated duodenal ulcer" in texts  # kept, not de-identified
    # A second save replaces the record objects instead of piling them up.
    assert a.put(f"/teachfile/portal/cases/{study}",
                 json={"discussion": "Free air under the diaphragm"}).status_code == 200
    series = a.get(f"/studies/{study}/series").json()
    assert sum(len(s["Instances"]) for s in series
               if s["MainDicomTags"]["Modality"] in ("KO", "SR")) == 2
    # Send the case to B: B indexes the record.
    job = a.post(f"/teachfile/cases/{study}/send", json={"target": "nodeb"}).json()["job"]
    _wait(lambda: a.get(f"/jobs/{job}").json()["State"] == "Success")
    _wait(lambda: b.get("/teachfile/search",
                        params={"q": "duodenal", "timeout": "2"}).json()["count"] >= 1)
    hit = b.get("/teachfile/search", params={"q": "duodenal", "timeout": "2"}).json()
    assert any(r["local_study"] for r in hit["results"])
    lib = b.get("/teachfile/portal/library", params={"q": "rigler"}).json()
    assert lib["total"] == 1
    record = lib["cases"][0]["record"]
    assert record["keywords"] == ["abdomen", "free air"]
    assert record["discussion"] == "Free air under the diaphragm"
    b_study = lib["cases"][0]["study"]
    _wait(lambda: b.get(f"/teachfile/portal/cases/{b_study}").json()["record"]["key_images"]
          == [first])
    # A contributor on B retrieves (C-MOVE) a case found on A only, as the portal's network
    # search offers it.
    for ds in ct_stack(2, seed="retrieve", description="Retrieval case"):
        assert upload_rest(a, to_bytes(ds)).status_code == 200
    found = b.get("/teachfile/search", params={"q": "retrieval", "timeout": "5"}).json()
    remote = next(r for r in found["results"] if r["title"] == "Retrieval case")
    assert remote["local_study"] is None and remote["sources"][0]["node"] == "nodea"
    assert _as(b, "vera", "POST", "/teachfile/portal/retrieve", json={
        "node": "nodea", "study_instance_uid": remote["study_instance_uid"]}).status_code == 403
    r = _as(b, "carl", "POST", "/teachfile/portal/retrieve", json={
        "node": "nodea", "study_instance_uid": remote["study_instance_uid"]})
    assert r.status_code == 200, r.text
    job_id = r.json()["job"]
    _wait(lambda: b.get(f"/teachfile/portal/jobs/{job_id}").json()["state"] == "Success")
    assert b.get("/teachfile/portal/library", params={"q": "retrieval"}).json()["total"] == 1


def pydicom_read(node: Node, instance: str) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(node.instance_bytes(instance)))


def _wait(cond: Any, timeout: float = 30.0) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError("condition not met in time")

"""The REST surface on a real node: endpoints against the OpenAPI document, roles on every
request (Orthanc's own endpoints included), the Postman collection and the README examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from harness import Node, check_documented, refused_as_burned_in, to_bytes, upload_rest
from teachfile.api.routes import openapi_document

REPO = Path(__file__).resolve().parents[2]
USERS = {"admin": "admin-pw", "alice": "alice-pw", "carol": "carol-pw", "dave": "dave-pw"}
ROLES = {"alice": "viewer", "carol": "contributor"}  # dave: no role -> viewer


@pytest.fixture
def rnode(node_factory) -> Node:
    return node_factory(password=USERS["admin"], extra_config={
        "RegisteredUsers": USERS, "Teachfile": {"Roles": ROLES}})


def _ct_bytes() -> bytes:
    return to_bytes(pydicom.dcmread(get_testdata_file("CT_small.dcm")))


def _as(node: Node, user: str, method: str, path: str, **kw: Any) -> requests.Response:
    return node.request(method, path, auth=(user, USERS[user]), **kw)


# -- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_document_is_valid_and_served(rnode: Node) -> None:
    from openapi_spec_validator import validate

    served = rnode.get("/teachfile/openapi.json")
    assert served.status_code == 200
    assert served.json() == openapi_document()
    validate(served.json())


def test_every_endpoint_answers_as_documented(rnode: Node) -> None:
    doc = openapi_document()
    assert upload_rest(rnode, _ct_bytes()).status_code == 200
    upload_rest(rnode, b"not a dicom file")  # one refusal to list
    calls = [
        ("/teachfile/status", "get", {}),
        ("/teachfile/profile", "get", {}),
        ("/teachfile/refusals", "get", {}),
        ("/teachfile/refusals", "get", {"params": {"limit": "x"}}),
        ("/teachfile/audit", "post", {"json": {}}),
        ("/teachfile/audit", "post", {"json": {"studies": "nope"}}),
        ("/teachfile/audit", "post", {"json": {"studies": ["0000"]}}),
        ("/teachfile/openapi.json", "get", {}),
        ("/teachfile/explain", "post", {"data": _ct_bytes(),
                                        "headers": {"Content-Type": "application/dicom"}}),
        ("/teachfile/explain", "post", {"data": b""}),
        # Templated paths are requested literally: "{study}" is not a study id (400).
        ("/teachfile/cases/{study}", "get", {}),
        ("/teachfile/cases/{study}", "put", {"json": {"title": "x"}}),
        ("/teachfile/cases/{study}/send", "post", {"json": {"target": "nowhere"}}),
        ("/teachfile/search", "get", {"params": {"q": "aortic", "timeout": "2"}}),
        ("/teachfile/search", "get", {}),
        ("/teachfile/dicom-web/studies", "post", {"data": b"not multipart",
                                                 "headers": {"Content-Type": "text/plain"}}),
    ]
    seen = set()
    for path, method, kw in calls:
        resp = rnode.request(method.upper(), path, **kw)
        check_documented(doc, path, method, resp)
        seen.add((path, method))
        unauth = requests.request(method.upper(), rnode.url + path, timeout=10)
        assert unauth.status_code == 401
    # The portal's endpoints are called and validated in test_portal_api.py.
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops
                  if not p.startswith(("/teachfile/portal", "/teachfile/ui"))}
    assert documented <= seen, documented - seen
    st = rnode.status()
    assert st["counters"]["refused_by_reason"] == {"parse-error": 1}
    refusal = rnode.get("/teachfile/refusals").json()["refusals"][0]
    assert refusal["origin"] == "rest" and refusal["reason"] == "parse-error"


def test_errors_are_json_with_the_right_status(rnode: Node) -> None:
    r = rnode.get("/teachfile/nope")
    assert r.status_code == 404
    r = rnode.post("/teachfile/status")
    assert r.status_code == 405
    r = rnode.post("/teachfile/audit", data=b"{not json")
    assert r.status_code == 400


# -- roles -------------------------------------------------------------------------------------


def test_roles_are_enforced_on_every_request(rnode: Node) -> None:
    ct = _ct_bytes()
    # A contributor uploads; a viewer (explicit or by default) cannot.
    assert _as(rnode, "alice", "POST", "/instances", data=ct).status_code == 403
    assert _as(rnode, "dave", "POST", "/instances", data=ct).status_code == 403
    assert _as(rnode, "carol", "POST", "/instances", data=ct).status_code == 200
    study = rnode.get("/studies").json()[0]
    for user in ("alice", "carol", "dave"):
        # Read, query and download are for everyone.
        assert _as(rnode, user, "GET", f"/studies/{study}").status_code == 200
        assert _as(rnode, user, "POST", "/tools/find",
                   json={"Level": "Study", "Query": {}}).status_code == 200
        assert _as(rnode, user, "GET", f"/studies/{study}/archive").status_code == 200
        assert _as(rnode, user, "GET", "/teachfile/status").status_code == 200
        # Delete, modify, configuration and STOW for a viewer: not for non-admins.
        assert _as(rnode, user, "DELETE", f"/studies/{study}").status_code == 403
        assert _as(rnode, user, "POST", f"/studies/{study}/modify",
                   json={"Replace": {"StudyDescription": "x"}}).status_code == 403
        assert _as(rnode, user, "PUT", "/modalities/x",
                   json={"AET": "X", "Host": "127.0.0.1", "Port": 1}).status_code == 403
    assert _as(rnode, "alice", "POST", "/dicom-web/studies", data=b"").status_code == 403
    # Admin may do everything.
    assert _as(rnode, "admin", "DELETE", f"/studies/{study}").status_code == 200
    assert requests.get(rnode.url + "/studies", timeout=10).status_code == 401
    assert requests.get(rnode.url + "/studies", auth=("alice", "wrong"),
                        timeout=10).status_code == 401


# -- audit -------------------------------------------------------------------------------------


def test_audit_pages_through_the_store_and_finds_nothing_after_reception(rnode: Node) -> None:
    from phi_corpus import make_phi_corpus

    corpus = [i for i in make_phi_corpus() if not refused_as_burned_in(i.dataset)]
    for inst in corpus:
        assert upload_rest(rnode, inst.raw()).status_code == 200
    identifiers = sorted({t for inst in corpus for t in inst.tokens})
    offset, pages, results = 0, 0, []
    while offset is not None:
        r = rnode.post("/teachfile/audit",
                       json={"identifiers": identifiers, "offset": offset, "limit": 3})
        assert r.status_code == 200, r.text
        page = r.json()
        results += page["instances"]
        offset = page["next_offset"]
        pages += 1
    assert len(results) == len(corpus) and pages == -(-len(corpus) // 3)
    dirty = [r for r in results if not r["clean"]]
    assert not dirty, dirty


# -- Postman -----------------------------------------------------------------------------------


_SET_VAR = re.compile(r'pm\.collectionVariables\.set\("(\w+)", pm\.response\.json\(\)\[(\d+)\]\)')
_STATUS = re.compile(r"pm\.response\.to\.have\.status\((\d+)\)")


def _subst(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: variables[m.group(1)], text)


def test_postman_collection_runs_against_a_real_node(rnode: Node, tmp_path: Path) -> None:
    coll = json.loads((REPO / "docs/postman/teachfile.postman_collection.json").read_text())
    assert coll["info"]["schema"].endswith("/v2.1.0/collection.json")
    sample = tmp_path / "sample.dcm"
    sample.write_bytes(_ct_bytes())
    variables = {v["key"]: v["value"] for v in coll["variable"]}
    variables.update(baseUrl=rnode.url, username="admin", password=USERS["admin"],
                     sampleFile=str(sample))
    auth = {a["key"]: a["value"] for a in coll["auth"]["basic"]}
    ran = 0
    for item in coll["item"]:
        req = item["request"]
        url = _subst(req["url"]["raw"], variables)
        headers = {h["key"]: _subst(h["value"], variables) for h in req.get("header", [])}
        body = req.get("body")
        data = None
        if body and body["mode"] == "raw":
            data = _subst(body["raw"], variables).encode()
        elif body and body["mode"] == "file":
            data = Path(_subst(body["file"]["src"], variables)).read_bytes()
        resp = requests.request(req["method"], url, headers=headers, data=data, timeout=60,
                                auth=(_subst(auth["username"], variables),
                                      _subst(auth["password"], variables)))
        script = "\n".join(item["event"][0]["script"]["exec"])
        expected = int(_STATUS.search(script).group(1))
        assert resp.status_code == expected, (item["name"], resp.status_code, resp.text[:300])
        for name, index in _SET_VAR.findall(script):
            variables[name] = resp.json()[int(index)]
        ran += 1
    assert ran == len(coll["item"]) >= 6
    names = " ".join(i["name"].lower() for i in coll["item"])
    for needed in ("status", "upload", "find", "archive", "audit", "refusals"):
        assert needed in names


# -- README examples ---------------------------------------------------------------------------


def _readme_rest_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## REST API for curl and Postman", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_readme_curl_examples_run_as_written(rnode: Node, tmp_path: Path) -> None:
    block = _readme_rest_block()
    assert "curl" in block
    (tmp_path / "sample.dcm").write_bytes(_ct_bytes())
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "admin-password").write_text(USERS["admin"] + "\n")
    env = {**os.environ, "TF": rnode.url}
    env.pop("AUTH", None)  # the README's default reads var/admin-password
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "case.zip").stat().st_size > 0
    assert '"refusals"' in proc.stdout and '"instances"' in proc.stdout

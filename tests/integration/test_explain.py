"""``POST /teachfile/explain`` and ``teachfile explain`` on a real node: the answer agrees,
attribute by attribute, with what the node then stores for the same file; explaining stores
nothing and writes no value to the node's log; viewers may not ask."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from harness import Node, start_node, upload_rest
from phi_corpus import make_phi_corpus, tokens_in
from teachfile.cli.main import main
from teachfile.reception.explain import _elements, _show

pytestmark = pytest.mark.integration

USERS = {"admin": "admin-pw", "carol": "carol-pw", "vic": "vic-pw"}
ROLES = {"carol": "contributor", "vic": "viewer"}


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    return {i.name: i for i in make_phi_corpus()}


@pytest.fixture(scope="module")
def enode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = start_node(tmp_path_factory.mktemp("explain"), password=USERS["admin"],
                      extra_config={"RegisteredUsers": USERS, "Teachfile": {"Roles": ROLES}})
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(autouse=True)
def _empty(enode: Node) -> Iterator[None]:
    """Each test starts on an empty node (the module shares one)."""
    for study in enode.get("/studies").json():
        enode.delete(f"/studies/{study}")
    yield


def _explain(node: Node, raw: bytes, user: str = "carol") -> Any:
    r = node.request("POST", "/teachfile/explain", data=raw, auth=(user, USERS[user]),
                     headers={"Content-Type": "application/dicom"})
    return r


@pytest.mark.parametrize("name", ["ct", "mr", "sr", "rtstruct"])
def test_explain_agrees_with_what_is_stored(enode: Node, corpus: dict[str, Any],
                                            name: str) -> None:
    inst = corpus[name]
    raw = inst.raw()
    r = _explain(enode, raw)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["decision"] == "store"
    assert enode.instances() == [], "explain must store nothing"
    log = enode.log_text()
    assert not tokens_in(log.encode()) & set(inst.tokens), "a value reached the node's log"

    # The caller gets its own values back: the planted tokens are in the "before" column.
    before = " ".join(str(row["before"]) for row in answer["attributes"])
    assert tokens_in(before.encode()) & set(inst.tokens)

    assert upload_rest(enode, raw).status_code == 200
    (stored_id,) = enode.instances()
    stored = pydicom.dcmread(io.BytesIO(enode.instance_bytes(stored_id)))
    stored_rows = {path: _show(elem) for path, _tag, elem in _elements(stored)}
    explained = {row["path"]: row for row in answer["attributes"]}
    for path, row in explained.items():
        if row["after"] is None:
            assert path not in stored_rows, f"{path}: explained as removed, but stored"
        else:
            assert stored_rows.get(path) == row["after"], path
    assert set(stored_rows) == {p for p, row in explained.items() if row["after"] is not None}
    assert answer["transfer_syntax"]["after"] == str(stored.file_meta.TransferSyntaxUID)
    # Every action names the rule that chose it.
    assert {row["rule"] for row in answer["attributes"]} <= {
        "table", "extra", "text", "issuer", "vr", "private", "node"}
    name_row = explained.get("PatientName")
    assert name_row is not None and name_row["rule"] == "table" and name_row["changed"]


def test_a_refused_file_is_explained_as_refused(enode: Node, corpus: dict[str, Any]) -> None:
    ds = copy.deepcopy(corpus["ct"].dataset)
    del ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    answer = _explain(enode, buf.getvalue()).json()
    assert answer["decision"] == "refuse" and answer["reason"] == "missing-uid"
    assert enode.instances() == []


def test_viewers_may_not_explain_and_an_empty_body_is_an_error(enode: Node,
                                                               corpus: dict[str, Any]) -> None:
    assert _explain(enode, corpus["ct"].raw(), user="vic").status_code == 403
    assert _explain(enode, b"").status_code == 400


def test_cli_prints_the_table(enode: Node, corpus: dict[str, Any], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(corpus["ct"].raw())
    assert main(["explain", str(path), "--url", enode.url, "--user", "carol",
                 "--password", USERS["carol"], "--changed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: store")
    assert "PatientName" in out and "table" in out
    assert enode.instances() == []

"""Hostile text on a real node (issue 14): every class of the generated corpus over C-STORE
(DCMTK storescu and pynetdicom) and POST /instances, every stored byte grepped for every
planted token in every encoding; one study whose instances name the Issuer of Patient ID
inconsistently stays one study under one patient."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file

from harness import Node, refused_as_burned_in, send_pynetdicom, storescu, upload_rest
from phi_corpus import PhiInstance, leaked, make_class_corpus
from teachfile.node.service import STATUS_PROCESSING_FAILURE


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[PhiInstance]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_class_corpus(tmp_path_factory.mktemp("classes"))


def test_every_class_every_route_no_token_stored(node: Node,
                                                 classes: dict[str, list[PhiInstance]]) -> None:
    insts = [i for c in classes.values() for i in c]
    refused = [i for i in insts if refused_as_burned_in(i.dataset)]
    sent = [i for i in insts if i not in refused]
    assert len(sent) >= 15
    # Three routes, round robin, so each class goes through each of them.
    by_storescu = [i for n, i in enumerate(sent) if n % 3 == 0]
    by_pynetdicom = [i for n, i in enumerate(sent) if n % 3 == 1]
    by_rest = [i for n, i in enumerate(sent) if n % 3 == 2]
    proc, statuses = storescu(node, [i.path for i in by_storescu])
    assert statuses == [0] * len(by_storescu), proc.stdout[-3000:] + proc.stderr[-2000:]
    assert send_pynetdicom(node, [i.dataset for i in by_pynetdicom]) == [0] * len(by_pynetdicom)
    for inst in by_rest:
        r = upload_rest(node, inst.raw())
        assert r.status_code == 200, (inst.name, r.text)
    if refused:
        assert send_pynetdicom(node, [i.dataset for i in refused]) == [
            STATUS_PROCESSING_FAILURE] * len(refused)

    known: set[str] = set()
    for inst in insts:
        known |= inst.known
    stored = node.instances()
    assert len(stored) == len(sent)
    leaks: dict[str, set[str]] = {}
    for iid in stored:
        data = node.instance_bytes(iid)
        found = leaked(data, known)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found |= leaked(pydicom.dcmread(io.BytesIO(data)), known)
        if found:
            leaks[iid] = found
    assert leaks == {}, "identifying tokens stored"
    # The audit finds nothing either, with every planted token given as an identifier.
    r = node.post("/teachfile/audit", json={"identifiers": sorted(
        k for k in known if len(k) >= 2), "limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    matches = [(e["instance"], f) for e in body["instances"] for f in e["findings"]
               if f["code"] in ("identifier-match", "undecodable")]
    assert matches == [], _explain(node, matches, known)


def _explain(node: Node, matches: list, known: set[str]) -> str:
    """Which token matched which stored value (test diagnostics only: corpus tokens)."""
    from teachfile.reception.identifiers import Identifiers, has_identifier

    out = []
    for iid, f in matches:
        ds = pydicom.dcmread(io.BytesIO(node.instance_bytes(iid)))
        tag = int(f["tag"][1:5] + f["tag"][6:10], 16)
        value = str(ds[tag].value) if tag in ds else "?"
        hits = [k for k in known if has_identifier(value, Identifiers.from_strings([k]))]
        out.append(f"{f['keyword']}={value!r}: {hits[:3]}")
    return "\n".join(out)


def test_inconsistent_issuer_of_patient_id_stays_one_study(node: Node) -> None:
    """Some instances of one study with an Issuer of Patient ID, some without, one with the
    qualifiers sequence: one Orthanc patient, one study, one Study Date."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    datasets = []
    for n, issuer in enumerate(("HOSP-A", None, "QUALIFIER")):
        ds = base.copy()
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{n + 1}"
        ds.file_meta = base.file_meta.copy()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if issuer == "QUALIFIER":
            q = pydicom.Dataset()
            q.UniversalEntityID = "1.2.826.0.1.3680043.2.1"
            q.UniversalEntityIDType = "ISO"
            ds.IssuerOfPatientIDQualifiersSequence = [q]
        elif issuer:
            ds.IssuerOfPatientID = issuer
        datasets.append(ds)
    assert send_pynetdicom(node, datasets) == [0, 0, 0]
    assert len(node.get("/patients").json()) == 1
    studies = node.get("/studies").json()
    assert len(studies) == 1
    dates = {ds.StudyDate for ds in node.stored_datasets()}
    assert len(dates) == 1 and dates != {base.StudyDate}

"""The case store and the reception hook that keeps a case's title: a re-sent source study
comes out with the case title, cleaned by the profile like any description."""

from __future__ import annotations

import copy
import io
import os
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from teachfile.errors import Refusal
from teachfile.node.records import STORE_ERROR, CaseRecord, CaseStore, StoredCase
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pipeline import Reception
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).parents[3] / "orthanc-config"
KEY = b"\x07" * 32
UID = "2.25.1234567890"


def test_store_round_trip_atomic_files_and_lookups(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases")
    assert store.get(UID) is None and store.title_for(UID) is None and store.count() == 0
    case = StoredCase(UID, CaseRecord("T", ("k",), "dx", "n", "t1"), "abc", "t0")
    store.put(case)
    assert store.get(UID) == case and store.title_for(UID) == "T"
    assert [c.study_instance_uid for c in store.all()] == [UID]
    assert store.by_study_id("abc") == case and store.by_study_id("zzz") is None
    # One file per case, named by the pseudonymous UID, private to the node's user; no
    # temporary file left behind.
    assert sorted(os.listdir(store.directory)) == [f"{UID}.json"]
    assert (store.directory / f"{UID}.json").stat().st_mode & 0o077 == 0
    assert store.title_for("not a uid") is None
    with pytest.raises(ValueError):
        store.get("../escape")
    assert store.delete(UID) and not store.delete(UID)


def test_an_unreadable_record_refuses_rather_than_losing_the_title(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    (tmp_path / f"{UID}.json").write_text("{not json")
    with pytest.raises(Refusal) as exc:
        store.title_for(UID)
    assert exc.value.reason == STORE_ERROR
    assert list(store.all()) == []  # a listing skips it; the lookup reports it


def test_locked_serialises_writers(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    store.put(StoredCase(UID, CaseRecord(keywords=()), "s"))

    def add(word: str) -> None:
        for i in range(20):
            with store.locked():
                cur = store.get(UID)
                assert cur is not None
                rec = CaseRecord(keywords=(*cur.record.keywords, f"{word}{i}"))
                store.put(StoredCase(UID, rec, "s"))

    threads = [threading.Thread(target=add, args=(w,)) for w in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = store.get(UID)
    assert stored is not None and len(stored.record.keywords) == 40  # no update lost


def _source() -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyDescription = "CT ANGIO THORAX"
    return ds


def _encode(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("profile", ["teaching", "basic"])
def test_reception_writes_the_case_title_into_a_resent_study(tmp_path: Path,
                                                             profile: str) -> None:
    pseudo = Pseudonymizer(KEY)
    store = CaseStore(tmp_path)
    reception = Reception(Deidentifier(load_profile(profile, CONFIG), pseudo),
                          TranscodePolicy.from_mapping({"mode": "off"}),
                          case_titles=store.title_for)
    source = _source()
    first = reception.process(_encode(copy.deepcopy(source)))
    assert first.store and first.data
    stored = pydicom.dcmread(io.BytesIO(first.data))
    uid = str(stored.StudyInstanceUID)
    before = stored.get("StudyDescription")
    # Labelled as a case, with a date in the title the profile's cleaning removes.
    store.put(StoredCase(uid, CaseRecord("Aortic dissection 2001-01-01"), "s"))
    again = reception.process(_encode(copy.deepcopy(source)))
    assert again.store and again.data
    resent = pydicom.dcmread(io.BytesIO(again.data))
    assert str(resent.StudyInstanceUID) == uid
    if profile == "teaching":  # clean descriptors: the title is kept, cleaned
        assert before == "CT ANGIO THORAX"
        # the date in it is shifted (or removed) like every date in text, never kept
        assert str(resent.StudyDescription).startswith("Aortic dissection")
        assert "2001-01-01" not in str(resent.StudyDescription)
    else:  # the basic profile removes descriptions: a title cannot bring one back
        assert before is None and "StudyDescription" not in resent
    # An instance of another study is untouched by the case.
    other = copy.deepcopy(source)
    other.StudyInstanceUID = "1.2.3.4.5"
    plain = reception.process(_encode(other))
    assert plain.store and plain.data
    assert pydicom.dcmread(io.BytesIO(plain.data)).get("StudyDescription") == before


def test_reception_refuses_when_the_case_store_cannot_be_read(tmp_path: Path) -> None:
    pseudo = Pseudonymizer(KEY)
    store = CaseStore(tmp_path)
    reception = Reception(Deidentifier(load_profile("teaching", CONFIG), pseudo),
                          TranscodePolicy.from_mapping({"mode": "off"}),
                          case_titles=store.title_for)
    first = reception.process(_encode(_source()))
    assert first.data
    uid = str(pydicom.dcmread(io.BytesIO(first.data)).StudyInstanceUID)
    (tmp_path / f"{uid}.json").write_text("garbage")
    decision = reception.process(_encode(_source()))
    assert not decision.store and decision.reason == STORE_ERROR

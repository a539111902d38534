"""The portal's pure rules: what a search finds and shows (unknown mode hides the answer from
both), which text looks like an identifier, the template's limits, and conference lists that
conflict instead of losing an edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from teachfile.api.portalcore import (
    CaseSummary,
    ConferenceStore,
    Conflict,
    Extras,
    LibraryQuery,
    PortalError,
    identifier_warnings,
    search_library,
    update_extras,
    validate_lists,
)

A = "0" * 8 + "-11111111-22222222-33333333-44444444"
B = "a" * 8 + "-11111111-22222222-33333333-44444444"


def _case(study: str, title: str, **record: object) -> CaseSummary:
    return CaseSummary(study, "2.25.1", title, "20200101", ("CT",), (), 1, 10, None,
                       {"keywords": [], **record})


def test_search_reads_every_template_field_and_unknown_mode_hides_the_answer() -> None:
    cases = [_case(A, "Chest pain", keywords=["aorta"], diagnosis="Aortic dissection",
                   findings="Intimal flap"),
             _case(B, "Headache", diagnosis="Glioma", history="Seizures")]
    def found(**kw: object) -> list[str]:
        return [c["study"] for c in search_library(cases, LibraryQuery(**kw))["cases"]]  # type: ignore[arg-type]
    assert found(q="intimal flap") == [A]
    assert found(q="seizures") == [B]
    assert found(q="dissection") == [A]
    assert found(q="dissection", unknown=True) == []
    assert found(q="aorta", unknown=True) == [A]
    page = search_library(cases, LibraryQuery(unknown=True))
    assert all("diagnosis" not in c["record"] for c in page["cases"])
    assert found(sort="-title") == [B, A]
    assert found(keyword="AORTA") == [A]
    assert found(modality="MR") == []
    assert search_library(cases, LibraryQuery(limit=1, offset=1))["total"] == 2


def test_library_query_checks_its_arguments() -> None:
    assert LibraryQuery.from_query({"q": "a+b", "limit": "10"}).q == "a b"
    for bad in ({"sort": "x"}, {"limit": "1000"}, {"offset": "-1"}, {"limit": "many"}):
        with pytest.raises(PortalError):
            LibraryQuery.from_query(bad)


@pytest.mark.parametrize("text,kind", [
    ("seen 12/03/2021", "date"), ("on 2021-03-12", "date"), ("12 March 2021", "date"),
    ("MRN 12345678", "long-number"), ("referred by Dr Smith", "honorific"),
    ("Mrs. Jones complained", "honorific"),
])
def test_identifier_warnings(text: str, kind: str) -> None:
    assert {"field": "history", "kind": kind} in identifier_warnings({"history": text})


def test_no_warning_for_ordinary_teaching_text() -> None:
    assert identifier_warnings({"findings": "A 3 cm mass at T12, follow-up at 6 months; "
                                            "Dr sign absent", "keywords": ["lung"]}) == []


def test_extras_update_and_limits() -> None:
    e = update_extras(Extras(), {"history": " cough ", "key_images": [A, A]}, "t1")
    assert e.history == "cough" and e.key_images == (A,) and e.created == "t1"
    e2 = update_extras(e, {"findings": "mass"}, "t2")
    assert e2.history == "cough" and e2.created == "t1" and e2.updated == "t2"
    assert Extras.from_json(e2.as_json()) == e2
    assert Extras.from_json(b"not json") == Extras()
    for bad in ({"history": 3}, {"author": "x" * 500}, {"key_images": ["../x"]},
                {"findings": "a\x00b"}):
        with pytest.raises(PortalError):
            update_extras(e, bad, "t3")


def test_conference_lists_survive_and_conflict(tmp_path: Path) -> None:
    store = ConferenceStore(tmp_path)
    first = store.read()
    assert first["lists"] == []
    lists = validate_lists([{"name": " Friday  list ", "cases": [B, A, B]}])
    assert lists == [{"name": "Friday list", "cases": [B, A]}]
    saved = store.write(lists, first["version"], "carl")
    assert ConferenceStore(tmp_path).read() == saved
    with pytest.raises(Conflict):
        store.write([], first["version"], "vera")
    assert store.read()["lists"] == lists
    for bad in ([{"name": "", "cases": []}], [{"name": "a", "cases": ["x"]}],
                [{"name": "a", "cases": []}, {"name": "A", "cases": []}], "nope"):
        with pytest.raises(PortalError):
            validate_lists(bad)

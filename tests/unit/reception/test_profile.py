"""The project's Table E.1-1 against the reference transcription, and profile loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teachfile.errors import ConfigError
from teachfile.reception.profile import OPTION_NAMES, load_profile, load_table, profile_from_mapping

REFERENCE = Path(__file__).parents[3].parent / "shared/reference/ps3.15-table-e1-1.json"
CONFIG = Path(__file__).parents[3] / "orthanc-config"
REF_OPTS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}


def _ref_key(tag: str) -> str:
    tag = tag.lower()
    return "private" if tag.startswith("(gggg") else tag[1:5] + "," + tag[6:10]


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    if not REFERENCE.is_file():
        pytest.skip(f"reference table absent at {REFERENCE} (shared/ not laid out beside main)")
    return {_ref_key(r["tag"]): r for r in json.loads(REFERENCE.read_text())}


@pytest.fixture(scope="module")
def ours() -> dict[str, object]:
    return {r.tag: r for r in load_table().rows}


def test_same_attributes(reference: dict, ours: dict) -> None:
    assert set(ours) == set(reference)
    assert len(ours) == 621


def test_edition_named() -> None:
    assert load_table().edition.startswith("DICOM PS3.15 20")


@pytest.mark.parametrize("field", ["basic", "options"])
def test_same_actions(reference: dict, ours: dict, field: str) -> None:
    diffs = []
    for key, ref in reference.items():
        row = ours[key]
        if field == "basic" and row.basic != ref["basicProfile"]:
            diffs.append(key)
        if field == "options":
            want = {REF_OPTS[k]: v for k, v in ref.items() if k in REF_OPTS}
            if dict(row.options) != want:
                diffs.append(key)
    assert not diffs


@pytest.mark.parametrize("name", ["teaching", "basic"])
def test_shipped_profiles_load(name: str) -> None:
    p = load_profile(name, CONFIG)
    assert p.name == name and p.version
    assert p.actions[0x00080018] == "U"  # SOP Instance UID
    assert p.action_for(0x00091001) == "X"  # private
    assert p.action_for(0x60023000) == "X"  # overlay data, repeating group
    assert p.action_for(0x50100010) == "X"  # curve data


def test_teaching_options() -> None:
    p = load_profile("teaching", CONFIG)
    assert p.options == {
        "retain_patient_characteristics", "retain_long_modified_dates", "clean_descriptors"
    }
    assert p.transcoding == {"mode": "lossless"}
    assert p.action_for(0x00101010) == "K"  # Patient's Age kept
    assert p.action_for(0x00100040) == "K"  # Patient's Sex kept
    assert p.action_for(0x00080020) == "C"  # Study Date shifted
    assert p.action_for(0x00081030) == "C"  # Study Description cleaned
    assert [c for c, _ in p.method_codes()] == ["113100", "113105", "113107", "113108"]


def test_temporal_option_beats_device_identity() -> None:
    p = profile_from_mapping(
        {"name": "x", "version": 1,
         "options": {"retain_device_identity": True, "retain_long_modified_dates": True}}
    )
    assert p.action_for(0x0018700C) == "C"  # Date of Last Detector Calibration: shifted
    assert p.action_for(0x00181000) == "K"  # Device Serial Number kept


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "version": 1, "options": {"retain_everything": True}},
        {"name": "x", "version": 1, "options": {"retain_uids": "yes"}},
        {"name": "x", "version": 1, "date_shift_days": [5, 1]},
        {"name": "x", "version": 1, "date_shift_days": [0, 0]},
        {"name": "x", "version": 1, "safe_private": ["0010,X,01"]},
        {"name": "x", "version": 1, "unknown": 1},
        {"name": "", "version": 1},
        {"name": "x", "version": 1, "transcoding": [1]},
        {"name": "x", "version": 1,
         "options": {"retain_long_full_dates": True, "retain_long_modified_dates": True}},
        [1, 2],
    ],
)
def test_invalid_profiles(bad: object) -> None:
    with pytest.raises(ConfigError):
        profile_from_mapping(bad)


def test_missing_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_profile("nope", tmp_path)
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError):
        load_profile(tmp_path / "bad.yaml", tmp_path)


def test_safe_private_parsing() -> None:
    p = profile_from_mapping(
        {"name": "x", "version": 1, "options": {"retain_safe_private": True},
         "safe_private": ["0019,GEMS_ACQU_01,0C", {"group": "0043", "creator": "GEMS_PARM_01",
                                                   "element": "27"}]}
    )
    assert {(s.group, s.creator, s.element) for s in p.safe_private} == {
        (0x19, "GEMS_ACQU_01", 0x0C), (0x43, "GEMS_PARM_01", 0x27)}


def test_all_option_names_known() -> None:
    assert len(OPTION_NAMES) == 10

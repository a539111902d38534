"""The pixel rules' OCR gate: a capture that no rule cleans comes in only when OCR reads every
frame and finds no text; everything else about burned-in text still fails closed."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from captures import captures
from teachfile.errors import ConfigError
from teachfile.reception import ocr, seal
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pipeline import OCR_METHOD_NOTE, Reception
from teachfile.reception.pixels import assess, load_pixel_policy, policy_from_mapping
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).parents[3] / "orthanc-config"
POLICY = load_pixel_policy(CONFIG / "pixel-rules.yaml")
PSEUDO = Pseudonymizer(b"\x05" * 32)


def _reception(reader: object) -> Reception:
    return Reception(Deidentifier(load_profile("teaching", CONFIG), PSEUDO),
                     TranscodePolicy.from_mapping({"mode": "off"}), POLICY,
                     text_reader=reader)  # type: ignore[arg-type]


def _encode(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_the_shipped_rules_send_unruled_captures_to_the_gate() -> None:
    ds = captures()["clean-grey"]
    plan = assess(ds, POLICY)
    assert plan.reason_code == "likely:secondary-capture+capture-modality+conversion-type;no-rule"
    assert POLICY.ocr_gate.applies(plan)
    ds.BurnedInAnnotation = "YES"  # the sender says there is text: no OCR overrules that
    assert not POLICY.ocr_gate.applies(assess(ds, POLICY))


def test_no_text_stores_the_capture_unmodified_and_says_it_was_read() -> None:
    calls = []
    source = captures()["clean-grey"]
    decision = _reception(lambda ds: calls.append(ds.SOPInstanceUID) or [])
    got = decision.process(_encode(source))
    assert got.store and got.data and got.pixel_check == "ocr-no-text"
    assert len(calls) == 1
    stored = pydicom.dcmread(io.BytesIO(got.data))
    assert OCR_METHOD_NOTE in list(stored.DeidentificationMethod)
    assert seal.verify(stored, PSEUDO)  # the note is under the seal
    assert stored.PixelData == source.PixelData  # read, not cleaned
    assert "113101" not in [i.CodeValue for i in stored.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize("reader, detail", [
    (lambda ds: ["DOE"], "ocr-found-text"),
    (None, "ocr-unavailable"),
    (lambda ds: (_ for _ in ()).throw(ocr.OcrUnavailable("gone")), "ocr-failed"),
])
def test_text_or_no_ocr_refuses_and_never_tells_the_words(reader: object, detail: str) -> None:
    got = _reception(reader).process(_encode(captures()["clean-grey"]))
    assert not got.store and got.reason == "burned-in"
    assert got.detail.endswith(";no-rule;" + detail) and "DOE" not in got.detail


def test_the_gate_leaves_other_refusals_alone() -> None:
    calls: list[object] = []
    reception = _reception(lambda ds: calls.append(ds) or [])
    flagged = captures()["clean-grey"]
    flagged.BurnedInAnnotation = "YES"
    assert reception.process(_encode(flagged)).detail.endswith(";no-rule")
    many = captures()["clean-grey"]
    many.NumberOfFrames = POLICY.ocr_gate.max_frames + 1
    many.PixelData = many.PixelData * many.NumberOfFrames
    assert reception.process(_encode(many)).detail.endswith(";ocr-too-many-frames")
    assert calls == []


@pytest.mark.parametrize("gate, message", [
    ({"enabled": True, "resolves": ["nope"]}, "unknown criteria: nope"),
    ({"enabled": True}, "resolves no criterion"),
    ({"enabled": True, "resolves": ["sc"], "max_frames": 0}, "max_frames"),
    ({"enabled": "yes", "resolves": ["sc"]}, "true or false"),
    ({"resolve": ["sc"]}, "unknown key"),
])
def test_gate_settings_are_checked(gate: dict[str, object], message: str) -> None:
    data = {"likely_burned_in": [{"name": "sc", "keyword": "Modality", "match": "OT"}],
            "ocr_gate": gate}
    with pytest.raises(ConfigError, match=message):
        policy_from_mapping(data)
    assert not policy_from_mapping({}).ocr_gate.enabled  # off unless the rules say so


@pytest.mark.skipif(not ocr.ocr_available(), reason="tesseract not installed (Debian package "
                    "tesseract-ocr; scripts/setup --postgres installs it)")
@pytest.mark.parametrize("name, has_text", [
    ("clean-grey", False), ("clean-rgb", False),
    ("banner", True), ("over-anatomy", True), ("yellow-rgb", True),
])
def test_tesseract_reads_the_captures_text_and_nothing_in_clean_ones(name: str,
                                                                     has_text: bool) -> None:
    words = ocr.gate_words(captures()[name])
    assert bool(words) is has_text, words

"""The strict byte checks (reception/check.py): a corpus per class of hostile input, a fuzzer
over mutated instances, and the output check on its own. All in-process (no Orthanc)."""

from __future__ import annotations

import io
import random
import struct
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from hostile_corpus import CLASSES, intact_tokens, make_hostile_corpus, mutate
from phi_corpus import make_phi_corpus, tokens_in
from teachfile.errors import REASONS, UNREADABLE, Refusal, safe_detail
from teachfile.node.service import quiet_pydicom
from teachfile.reception import check
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pipeline import Reception
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
PER_CLASS = 10
#: What each class may be refused for (a file can fail an earlier check than its own).
EXPECTED = {
    "swallow": {"length-overrun"},
    "hidden-sequence": {"vr-mismatch", "output-leak"},
    "truncated": {"length-overrun", "pixel-data-short", "bad-structure"},
    "short-pixels": {"pixel-data-short"},
    "short-fragments": {"pixel-data-short"},
    "undecodable": {"undecodable-text"},
    "wrong-vr": {"vr-mismatch"},
    "kept-text-leak": {"output-leak"},
}


@pytest.fixture(scope="module", autouse=True)
def _quiet() -> None:
    quiet_pydicom()
    warnings.filterwarnings("ignore")


def _reception(check_bytes: bool = True, mode: str = "off", profile: str = "teaching") -> Reception:
    prof = load_profile(profile, CONFIG)
    return Reception(Deidentifier(prof, Pseudonymizer(b"k" * 32)),
                     TranscodePolicy.from_mapping({"mode": mode}), check_bytes=check_bytes)


@pytest.fixture(scope="module")
def corpus() -> list:
    return make_hostile_corpus(PER_CLASS)


def test_every_reason_is_documented() -> None:
    assert set(REASONS) >= UNREADABLE
    for reason in ("output-invalid", "output-not-kept", "output-leak", "bad-structure"):
        assert reason in REASONS


#: Classes whose hole the de-identification engine itself now closes (its language-aware
#: cleaning of kept text): the byte checks stay as the second line, with nothing left to catch.
CLOSED_BY_THE_ENGINE = frozenset({"kept-text-leak"})


@pytest.mark.parametrize("klass", sorted(CLASSES))
def test_each_class_is_refused_or_stored_clean(corpus, klass: str) -> None:
    """Per class: with the checks nothing planted is stored; files that are structurally
    wrong are refused for the class's reason; without the checks the class does harm (this
    is what the corpus is for: it must catch the old behaviour)."""
    files = [h for h in corpus if h.klass == klass]
    assert len(files) == PER_CLASS
    on, off = _reception(True), _reception(False)
    reasons: Counter[str] = Counter()
    harm = 0
    for h in files:
        d = on.process(h.raw)
        if d.store:
            assert not h.must_refuse, f"{h.name} stored"
            assert not tokens_in(d.data, h.known) & h.known, h.name
            check.OutputCheck(on.deidentifier.profile).check(d.data, check.Tokens())
        else:
            reasons[d.reason] += 1
            assert d.reason in EXPECTED[klass], (h.name, d.reason, d.detail)
            assert safe_detail(d.detail) == d.detail  # no value in a detail
        before = off.process(h.raw)
        if before.store and (tokens_in(before.data, h.known) & h.known or h.must_refuse):
            harm += 1
    if klass in CLOSED_BY_THE_ENGINE:  # cleaned by the engine: stored clean, nothing to refuse
        assert harm == 0
        return
    assert harm >= 1, f"the {klass} corpus no longer shows the hole it is meant to show"
    assert sum(reasons.values()) >= max(1, sum(h.must_refuse for h in files))


def test_refusals_through_the_lossless_path_too(corpus) -> None:
    """The same corpus with JPEG 2000 transcoding on: the encapsulated output is checked."""
    rec = _reception(True, "lossless")
    for h in corpus[::7]:
        d = rec.process(h.raw)
        assert not d.store or not tokens_in(d.data, h.known) & h.known, h.name


def test_friendly_files_pass_both_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No false refusal on the PHI corpus (every planted identifier cleaned by the engine)
    nor on pydicom's bundled files that are well formed (pydicom's own and pydicom-data's: its
    online list is emptied, or the glob would try to download from GitHub)."""
    from pydicom.data import data_manager

    monkeypatch.setattr(data_manager, "online_test_file_dummy_paths", dict)
    rec = _reception(True)
    for inst in make_phi_corpus():
        d = rec.process(inst.raw())
        assert d.store, (inst.name, d.reason, d.detail)
        assert not tokens_in(d.data, inst.known)
    refused = {}
    for path in pydicom.data.get_testdata_files("*.dcm"):
        d = rec.process(Path(path).read_bytes())
        if not d.store and d.reason not in ("parse-error", "missing-uid"):
            refused[Path(path).name] = d.reason
    # Each of these is broken on purpose (pydicom's own tests of malformed input).
    assert refused == {
        "badVR.dcm": "bad-value", "rtplan_truncated.dcm": "length-overrun",
        "MR_truncated.dcm": "length-overrun", "nested_priv_SQ.dcm": "pixel-data-short",
        "emri_small_jpeg_2k_lossless_too_short.dcm": "pixel-data-short"}


# -- the output check on its own ---------------------------------------------------------------


def _out(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stored_ct() -> bytes:
    d = _reception(True).process(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert d.store
    return d.data


def _oc() -> check.OutputCheck:
    return check.OutputCheck(load_profile("teaching", CONFIG))


def test_output_check_refuses_removed_elements_and_unknown_private() -> None:
    data = _stored_ct()
    _oc().check(data, check.Tokens())
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientAddress = "somewhere"
    with pytest.raises(Refusal) as exc:
        _oc().check(_out(ds), check.Tokens())
    assert exc.value.reason == "output-not-kept" and exc.value.detail == "PatientAddress"
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.private_block(0x0011, "SOMEONE", create=True).add_new(0x01, "LO", "x")
    with pytest.raises(Refusal, match="output-not-kept"):
        _oc().check(_out(ds), check.Tokens())
    ds = pydicom.dcmread(io.BytesIO(data))
    item = Dataset()
    item.PatientIdentityRemoved = "YES"  # the node's marks belong at the top level only
    ds.AnatomicRegionSequence = Sequence([item])
    with pytest.raises(Refusal, match="output-not-kept"):
        _oc().check(_out(ds), check.Tokens())


def test_output_check_refuses_un_and_binary_text() -> None:
    data = _stored_ct()
    i = data.find(b"\x08\x00\x60\x00CS")  # Modality
    assert i > 0
    length = struct.unpack_from("<H", data, i + 6)[0]
    as_un = data[:i] + b"\x08\x00\x60\x00UN\0\0" + struct.pack("<L", length) + data[i + 8:]
    with pytest.raises(Refusal, match="output-invalid"):
        _oc().check(as_un, check.Tokens())
    value = b"CT\x10\x00\x10\x00"
    swallowed = data[:i + 6] + struct.pack("<H", len(value)) + value + data[i + 8 + length:]
    with pytest.raises(Refusal, match="output-invalid"):
        _oc().check(swallowed, check.Tokens())


def test_output_check_finds_identifiers_in_text() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Müller^Hans=山田^太郎"
    ds.PatientID = "MRN778899"
    ds.PatientBirthDate = "19610423"
    tokens = check.identifier_tokens(ds)
    data = _stored_ct()
    for text in ("Scan of MULLER", "ｍｕｌｌｅｒ", "見る山田さん", "DOB 23.04.1961",
                 "born April 23, 1961", "ref MRN778899/2", "1961-04-23"):
        out = pydicom.dcmread(io.BytesIO(data))
        out.SpecificCharacterSet = "ISO_IR 192"
        out.ConvolutionKernel = "B30"
        out.add_new(0x00204000, "LT", text)  # Image Comments
        with pytest.raises(Refusal) as exc:
            _oc().check(_out(out), tokens)
        assert exc.value.reason == "output-leak", text
    out = pydicom.dcmread(io.BytesIO(data))
    out.BodyPartExamined = "HANS"  # coded values are checked for IDs, not for names
    _oc().check(_out(out), tokens)
    assert {"04/23/1961", "1961-04-23", "23 APRIL 1961"} <= set(check.birth_date_forms("19610423"))


def test_input_check_refuses_an_unknown_character_set() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO-IR 100"  # a usual misspelling: accepted
    check.check_input(_out(ds))
    ds.SpecificCharacterSet = "KLINGON"
    with pytest.raises(Refusal, match="undecodable-text"):
        check.check_input(_out(ds))


# -- the fuzzer ----------------------------------------------------------------------------------

#: Where the patient's identity is planted: the checker looks for these values anywhere.
_IDENTITY = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber")


def _sources() -> list[tuple[bytes, set[str], set[str]]]:
    """(bytes, every planted token, the tokens of the patient's identity)."""
    out = []
    for inst in make_phi_corpus():
        if inst.source in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm",
                           "MR_small_jp2klossless.dcm"):
            identity = {t for t, where in inst.tokens.items() if where.startswith(_IDENTITY)}
            out.append((inst.raw(), set(inst.tokens), identity))
    return out


_SOURCES = _sources()
_FUZZ_RECEPTION = _reception(True)
_FUZZ_CHECK = check.OutputCheck(_FUZZ_RECEPTION.deidentifier.profile)
_FUZZ_STATS: Counter[str] = Counter()


@settings(max_examples=600, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(source=st.integers(0, len(_SOURCES) - 1),
       kind=st.sampled_from(("truncate", "flip", "vr", "length")),
       salt=st.integers(0, 2**32 - 1))
def test_fuzz_nothing_stored_that_the_strict_check_rejects(source: int, kind: str,
                                                            salt: int) -> None:
    """Mutated instances (truncation, bit flips, wrong VRs, length overruns), a fixed budget
    and seed: whatever is stored passes the strict check and holds no planted identifier."""
    raw, every, identity = _SOURCES[source]
    mutated = mutate(raw, kind, random.Random(salt))
    d = _FUZZ_RECEPTION.process(mutated)
    _FUZZ_STATS[(d.reason or "stored")] += 1
    if not d.store:
        assert d.reason in REASONS
        return
    _FUZZ_CHECK.check(d.data, check.Tokens())
    # A flipped tag can turn any planted value into another attribute (a Scheduled Procedure
    # Step ID into a Reporting Priority): only the patient's identity is then recognisable as
    # such. A truncated file keeps its tags, so every planted token counts there.
    # A token the mutation damaged somewhere (say, in PatientID) no longer identifies this
    # instance: its other copies are ordinary text. Only intact tokens are looked for.
    # Likewise a token whose element header the mutation hit (PatientName's tag flipped into
    # an unknown one) is no longer anyone's name as far as the bytes say.
    known = every if kind == "truncate" else identity
    intact = intact_tokens(raw, mutated, known)
    leaked = tokens_in(d.data, intact) & intact
    assert not leaked, (kind, salt, sorted(leaked))

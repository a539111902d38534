"""The identifiers of one instance, in every script and written form, and text cleaned of them.

Why a module of its own: the de-identification engine cleans text with it, the audit looks for
what an operator knows with it, and the output check tests every stored text value with it, so
all three agree on what "contains an identifier" means.

Public API (stable; the output checker depends on it):

- :func:`identifier_tokens` (``ds``) -> :class:`Identifiers`: the normalised names, IDs,
  address/institution words and dates of an instance (read from the *original* header).
- :func:`has_identifier` (``text``, ``ids``) -> bool: whether ``text`` carries one of them.
- :meth:`Identifiers.from_strings`: the same from strings an operator supplies (the audit).
- :func:`clean_text` (``text``, ``ids``, ...) -> str: ``text`` without them (and, for free
  text, without any date or long number; dates are shifted when the profile shifts dates).
- :func:`decode_text` (``raw``, ``encodings``): strict decoding in the declared character set.
- :func:`fold`: the normalisation (NFKC, case folding, full/half width, katakana as hiragana).

Matching rules (see the README's profile section):

- Text is compared after :func:`fold`, character by character, so a removed span maps back onto
  the original characters and the stored text stays in the instance's own character set.
- Latin-script name parts of any length are matched as whole words (hyphenated and run-together
  spellings are split; "Müller" = "Mueller", "Tarō" = "Tarou" = "Taro"), initials ("J.D.", a
  lone "J." next to a removed name) too. Name parts of 4 or more characters and IDs of 4 or
  more characters are also matched inside longer words.
- CJK names have no spaces: in Han, kana and Hangul text every name component is matched as a
  substring, whatever its length (cleaning removes even a one-character family name wherever it
  stands; :func:`has_identifier` reports a one-character component only next to another
  component of the same name, so common characters do not make every text suspect).
- Dates: numeric (2021-03-15, 15.03.2021, 03/15/2021, 20210315, 2021. 3. 15.), with month
  names in English, German, French, Spanish, Italian, Dutch and Portuguese ("March 15, 2021",
  "15 Mar 2021", "15. März 2021", "15 de marzo de 2021"), and CJK (2021年3月15日, 令和3年3月15日,
  2021년 3월 15일). Partial dates (month and year, month and day) count as dates.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "Identifiers",
    "clean_text",
    "dataset_encodings",
    "decode_text",
    "find_dates",
    "fold",
    "has_identifier",
    "identifier_tokens",
]

# ------------------------------------------------------------------ normalisation
_CJK_RANGES = (
    (0x1100, 0x11FF), (0x3040, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF), (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF), (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F), (0x20000, 0x3FFFF),
)


def is_cjk(ch: str) -> bool:
    """Han, kana or Hangul (the scripts whose names are written without spaces)."""
    o = ord(ch)
    if o < 0x1100:
        return False
    if o in (0x3005, 0x3006):  # 々 〆 (name characters)
        return True
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    s = unicodedata.normalize("NFKC", ch).casefold()
    out = []
    for c in s:
        o = ord(c)
        if 0x30A1 <= o <= 0x30F6:  # katakana -> hiragana: one name, two spellings
            c = chr(o - 0x60)
        out.append(c)
    return "".join(out)


def _fold_map(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` folded, with the original start and end index of every folded character."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        f = ch.lower() if ch.isascii() else _fold_char(ch)
        for c in f:
            if chars and unicodedata.combining(c):
                composed = unicodedata.normalize("NFC", chars[-1] + c)
                if len(composed) == 1:  # half-width ﾀﾞ -> だ: one character, two originals
                    chars[-1] = composed
                    ends[-1] = i + 1
                    continue
            chars.append(c)
            starts.append(i)
            ends.append(i + 1)
    return "".join(chars), starts, ends


def fold(text: str) -> str:
    """NFKC, case folded, full-width as ASCII, half-width kana composed, katakana as hiragana."""
    return _fold_map(text)[0]


def _strip_marks(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


_LOOSE_SUBS = (("ß", "ss"), ("ae", "a"), ("oe", "o"), ("ue", "u"), ("ou", "o"), ("oh", "o"),
               ("ph", "f"))
_DOUBLE_RE = re.compile(r"(.)\1+")


@lru_cache(maxsize=8192)
def loose(word: str) -> str:
    """A transliteration-tolerant key: "Müller", "Mueller", "Muller" agree; so do "Tarō",
    "Tarou", "Taroh" and "Taro", "Hoffmann" and "Hofmann"."""
    s = _strip_marks(word)
    for a, b in _LOOSE_SUBS:
        s = s.replace(a, b)
    return _DOUBLE_RE.sub(r"\1", s)


# ------------------------------------------------------------------ decoding
_ESC = b"\x1b"
_FRAGMENT_RE = re.compile(rb"(^[^\x1b]+|[\x1b][^\x1b]*)")


def decode_text(raw: bytes, encodings: Sequence[str], delimiters: frozenset[int] = frozenset(
        {0x0A, 0x0C, 0x0D, 0x09, 0x5C})) -> str:
    """``raw`` decoded strictly in the declared character set(s) (pydicom's Python names);
    raises UnicodeError (or LookupError) where pydicom would substitute characters."""
    from pydicom.charset import CODES_TO_ENCODINGS, default_encoding, handled_encodings

    first = encodings[0] if encodings else default_encoding
    if _ESC not in raw:
        return raw.decode(first)
    parts = []
    for frag in _FRAGMENT_RE.findall(raw):
        if not frag.startswith(_ESC):
            parts.append(frag.decode(first))
            continue
        n = 4 if frag.startswith((b"\x1b$(", b"\x1b$)")) else 3
        enc = CODES_TO_ENCODINGS.get(frag[:n], "")
        if not enc or (enc not in encodings and enc != default_encoding):
            raise UnicodeError("escape sequence for a character set the instance does not declare")
        if enc in handled_encodings:
            parts.append(frag.decode(enc))
            continue
        body = frag[n:]
        cut = next((i for i, b in enumerate(body) if b in delimiters), None)
        if cut is None:
            parts.append(body.decode(enc))
        else:
            parts.append(body[:cut].decode(enc) + body[cut:].decode(first))
    return "".join(parts)


# ------------------------------------------------------------------ dates
_MONTHS: dict[str, int] = {}
for _names in (
    # English (full, abbreviated)
    "january february march april may june july august september october november december",
    "jan feb mar apr may jun jul aug sep oct nov dec",
    # German, French, Spanish, Italian, Dutch, Portuguese
    "januar februar märz april mai juni juli august september oktober november dezember",
    "jänner feber maerz mrz sept okt dez janv févr fevr avr juil déc",
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre",
    "januari februari maart april mei juni juli augustus september oktober november december",
    "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
):
    for _i, _n in enumerate(_names.split()):
        if _n in ("sept",):
            _MONTHS[_n] = 9
        elif _n in ("jänner", "feber", "maerz", "mrz", "okt", "dez", "janv", "févr", "fevr",
                    "avr", "juil", "déc"):
            _MONTHS[_n] = {"jänner": 1, "feber": 2, "maerz": 3, "mrz": 3, "okt": 10, "dez": 12,
                           "janv": 1, "févr": 2, "fevr": 2, "avr": 4, "juil": 7,
                           "déc": 12}[_n]
        else:
            _MONTHS.setdefault(_n, _i + 1)
_MONTHS["setiembre"] = 9
_MON = "(?P<mon>" + "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True)) + r")\.?"
_D = r"(?P<d>[0-3]?\d)(?:st|nd|rd|th|er|\.)?"
_Y = r"(?P<y>(?:1[6-9]|2[01])\d\d)"
_ERA = {"令和": 2018, "平成": 1988, "昭和": 1925, "大正": 1911}
_DATE_PATTERNS: tuple[tuple[str, str], ...] = (
    # (kind, regex) on folded text; kinds: full (y, m|mon, d), partial (removed, never shifted)
    ("era", r"(?P<era>令和|平成|昭和|大正)\s*(?P<y>\d{1,2}|元)\s*年\s*(?P<m>\d{1,2})\s*月\s*"
            r"(?P<d>\d{1,2})\s*日"),
    ("cjk", r"(?<!\d)" + _Y + r"\s*[年년]\s*(?P<m>\d{1,2})\s*[月월]\s*(?P<d>\d{1,2})\s*[日일]?"),
    ("partial", r"(?<!\d)(?:1[6-9]|2[01])\d\d\s*[年년]\s*\d{1,2}\s*[月월]"),
    ("partial", r"(?:令和|平成|昭和|大正)\s*(?:\d{1,2}|元)\s*年"),
    ("ymd", r"(?<![\d.])" + _Y + r"(?P<s1>[-./]|\.\s)\s*(?P<m>[01]?\d)(?P=s1)\s*(?P<d>[0-3]?\d)"
            r"(?![\d])\.?"),
    ("amb", r"(?<![\d.])(?P<a>[0-3]?\d)(?P<s1>[-./])(?P<b>[0-3]?\d)(?P=s1)" + _Y + r"(?!\d)"),
    ("partial", r"(?<![\d.])[0-3]?\d[-./][0-3]?\d[-./]\d\d(?![\d.])"),
    ("md_y", r"(?<![\w])" + _MON + r"[\s,-]*" + _D + r",?\s*(?:de\s+)?" + _Y + r"(?!\d)"),
    ("d_m_y", r"(?<![\w.])" + _D + r"[\s./-]*(?:of\s+|de\s+)?" + _MON + r"[\s,./-]*(?:de\s+)?"
              + _Y + r"(?!\d)"),
    ("y_m_d", r"(?<!\d)" + _Y + r"[\s,./-]*" + _MON + r"[\s,./-]*" + _D + r"(?![\w])"),
    ("partial", r"(?<![\w])" + _MON + r"[\s,./-]*(?:de\s+)?(?:1[6-9]|2[01])\d\d(?!\d)"),
    ("partial", r"(?<![\w])" + _MON + r"[\s-]*[0-3]?\d(?:st|nd|rd|th)?(?![\w])"),
    ("partial", r"(?<![\w.])[0-3]?\d(?:st|nd|rd|th|er|\.)?[\s-]*(?:of\s+|de\s+)?" + _MON
                + r"(?![\w])"),
    ("compact", r"(?<!\d)" + _Y + r"(?P<m>[01]\d)(?P<d>[0-3]\d)(?!\d)"),
)
_DATE_RES = tuple((k, re.compile(p)) for k, p in _DATE_PATTERNS)
#: Cheap pre-test: no digit, no CJK date character -> no date at all.
_MAYBE_DATE_RE = re.compile(r"\d")


@dataclass(frozen=True)
class DateMatch:
    """A date found in folded text: [start, end) and its possible readings (empty: partial)."""

    start: int
    end: int
    readings: tuple[_dt.date, ...]
    kind: str


def _mk(y: int, m: int, d: int) -> _dt.date | None:
    try:
        return _dt.date(y, m, d)
    except ValueError:
        return None


def find_dates(folded: str) -> list[DateMatch]:
    """Dates in folded text, longest first where they overlap (see the module docstring)."""
    if not _MAYBE_DATE_RE.search(folded):
        return []
    found: list[DateMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, rx in _DATE_RES:
        for m in rx.finditer(folded):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue
            g = m.groupdict()
            readings: list[_dt.date] = []
            if kind == "era":
                y = 1 if g["y"] == "元" else int(g["y"])
                r = _mk(_ERA[g["era"]] + y, int(g["m"]), int(g["d"]))
                readings = [r] if r else []
            elif kind in ("cjk", "ymd", "compact"):
                r = _mk(int(g["y"]), int(g["m"]), int(g["d"]))
                if r is None and kind == "compact":
                    continue  # an 8-digit number that is no date: the long-number rule decides
                readings = [r] if r else []
            elif kind == "amb":
                a, b, y = int(g["a"]), int(g["b"]), int(g["y"])
                readings = [x for x in {_mk(y, b, a), _mk(y, a, b)} if x]
            elif kind in ("md_y", "d_m_y", "y_m_d"):
                r = _mk(int(g["y"]), _MONTHS[g["mon"]], int(g["d"]))
                readings = [r] if r else []
            taken.append((s, e))
            found.append(DateMatch(s, e, tuple(sorted(readings)), kind))
    found.sort(key=lambda x: x.start)
    return found


def _format_shifted(dm: DateMatch, folded: str, new: _dt.date) -> str:
    """The shifted date in the style it was written in (numeric order and separators kept;
    month names written as English abbreviations; CJK as 年月日)."""
    text = folded[dm.start:dm.end]
    if dm.kind in ("era", "cjk"):
        if "년" in text:
            return f"{new.year}년 {new.month}월 {new.day}일"
        return f"{new.year}年{new.month}月{new.day}日"
    if dm.kind == "compact":
        return new.strftime("%Y%m%d")
    if dm.kind == "amb":  # one reading only: the order it was written in is known
        m = re.match(r"(\d+)(\D)(\d+)\D", text)
        if m:
            first, sep = int(m.group(1)), m.group(2)
            day_first = first > 12 or (first == dm.readings[0].day
                                       and int(m.group(3)) == dm.readings[0].month)
            a, b = (new.day, new.month) if day_first else (new.month, new.day)
            return f"{a:02d}{sep}{b:02d}{sep}{new.year}"
    if dm.kind == "ymd":
        sep = next(c for c in text[4:] if not c.isdigit())
        out = f"{new.year:04d}{sep}{new.month:02d}{sep}{new.day:02d}"
        return out + "." if sep == "." and text.endswith(".") else out
    mon = new.strftime("%b")
    if dm.kind == "md_y":
        return f"{mon} {new.day}, {new.year}"
    if dm.kind == "y_m_d":
        return f"{new.year} {mon} {new.day}"
    return f"{new.day} {mon} {new.year}"


# ------------------------------------------------------------------ the identifiers
@dataclass(frozen=True)
class Identifiers:
    """Folded identifiers of one instance (see the module docstring for how they match)."""

    names: frozenset[str] = frozenset()      # Latin-script name parts, 2+ characters
    initials: frozenset[str] = frozenset()   # single letters of name parts
    cjk_names: frozenset[str] = frozenset()  # Han/kana/Hangul name components
    cjk_full: frozenset[str] = frozenset()   # whole CJK names (family+given, both orders)
    ids: frozenset[str] = frozenset()        # IDs, accession numbers... (whole values)
    words: frozenset[str] = frozenset()      # 4+ character words of addresses, institutions
    dates: frozenset[_dt.date] = frozenset()
    birth_dates: frozenset[_dt.date] = frozenset()
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.names or self.cjk_names or self.ids or self.words or self.dates)

    @classmethod
    def from_strings(cls, values: Iterable[str]) -> Identifiers:
        """Identifiers an operator knows (any mix of names, IDs, dates, in any script):
        every value is matched as a name, an ID and, if it reads as one, a date."""
        b = _Builder()
        for v in values:
            if not v or not v.strip():
                continue
            found = find_dates(fold(v))
            for dm in found:
                b.dates.update(dm.readings)
            if any(c.isalpha() for c in v) and not found:  # a UID, number or date is no name
                b.name(v, phrase=True)
            b.ident(v)
            if re.fullmatch(r"\s*\d{8}\s*", v):
                b.da(v.strip())
        return b.build()

    # derived look-up structures, computed once per instance
    def _d(self) -> dict[str, Any]:
        d = self._derived
        if not d:
            d["loose"] = frozenset(loose(n) for n in self.names if len(loose(n)) >= 3)
            d["bare"] = frozenset(_strip_marks(n) for n in self.names)
            # what the substring pre-test cannot see: names whose loose or unaccented form
            # differs from the name ("müller" -> "muler", "tarou" -> "taro")
            d["loose_extra"] = tuple(sorted(
                {loose(n) for n in self.names if loose(n) != n and len(loose(n)) >= 3}
                | {b for b in d["bare"] if b not in self.names}))
            d["long_names"] = tuple(n for n in self.names if len(n) >= 4)
            d["long_ids"] = tuple(i for i in self.ids if len(i) >= 4)
            d["parts"] = self.names | self.initials
            d["ascii"] = tuple(sorted(
                {t.encode() for t in (*self.names, *self.ids, *self.words) if t.isascii()}))
            d["non_ascii"] = any(not t.isascii() for t in (*self.names, *self.ids, *self.words))
            d["combos"] = _initial_combos(self.initials)
        return d


def _initial_combos(initials: frozenset[str]) -> frozenset[str]:
    from itertools import permutations

    ini = sorted(initials)[:4]
    out: set[str] = set()
    for n in (2, 3):
        for p in permutations(ini, n):
            out.add("".join(p))
    return frozenset(out)


_PN_SPLIT_RE = re.compile(r"[\s,.\-'’_]+")


class _Builder:
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.initials: set[str] = set()
        self.cjk: set[str] = set()
        self.cjk_full: set[str] = set()
        self.ids: set[str] = set()
        self.words: set[str] = set()
        self.dates: set[_dt.date] = set()
        self.birth: set[_dt.date] = set()

    def name(self, text: str, phrase: bool = False) -> None:
        """One person name: "Family^Given^Middle^Prefix^Suffix" groups separated by "="
        (prefix and suffix are titles such as MR or DR, not identifiers)."""
        for group in str(text).split("="):
            comps = group.split("^")[:3] if "^" in group else [group]
            cjk_parts = []
            for comp in comps:
                f = fold(comp).strip()
                if not f:
                    continue
                if any(is_cjk(c) for c in f):
                    # CJK: the component as written, and its pieces between spaces/dots
                    whole = "".join(c for c in f if is_cjk(c))
                    if whole:
                        self.cjk.add(whole)
                        cjk_parts.append(whole)
                    for piece in re.split(r"[\s・.]+", f):
                        piece = "".join(c for c in piece if is_cjk(c))
                        if piece:
                            self.cjk.add(piece)
                    continue
                if any(c.isdigit() for c in f):  # "CQ500-CT-310": a code, not a name
                    self.ident(f)
                    continue
                for piece in _PN_SPLIT_RE.split(f):
                    piece = piece.strip()
                    if not piece or piece.isdigit():  # numbers are not name parts
                        continue
                    if len(piece) == 1 and piece.isalpha():
                        self.initials.add(piece)
                    elif len(piece) >= 2:
                        self.names.add(piece)
                        self.initials.add(piece[0])
                        if phrase and len(piece) >= 4:
                            self.words.add(piece)
            if len(cjk_parts) >= 2:
                self.cjk_full.add("".join(cjk_parts))
                self.cjk_full.add("".join(reversed(cjk_parts)))
            elif len(cjk_parts) == 1 and len(cjk_parts[0]) >= 2:
                self.cjk_full.add(cjk_parts[0])

    def ident(self, text: str) -> None:
        f = fold(str(text)).strip()
        if len(f) < 2:
            return
        self.ids.add(f)
        if any(is_cjk(c) for c in f):
            self.cjk.add("".join(c for c in f if is_cjk(c)))
        for part in f.split():
            if len(part) >= 4:
                self.words.add(part)

    def phrase(self, text: str) -> None:
        """An institution name or address: the whole value and its longer words."""
        f = fold(str(text)).strip()
        if len(f) < 2:
            return
        self.ids.add(f)
        for part in re.split(r"[\s,;^]+", f):
            part = part.strip(".")
            if len(part) >= 4:
                self.words.add(part)
            if part and any(is_cjk(c) for c in part) and len(part) >= 2:
                self.cjk.add("".join(c for c in part if is_cjk(c)))

    def da(self, text: str, birth: bool = False) -> None:
        s = str(text).strip()
        for piece in s.split("-"):
            piece = piece.strip()[:8]
            if len(piece) == 8 and piece.isdigit():
                d = _mk(int(piece[:4]), int(piece[4:6]), int(piece[6:]))
                if d:
                    (self.birth if birth else self.dates).add(d)
                    if birth:
                        self.dates.add(d)

    def build(self) -> Identifiers:
        # Not identifiers: the words of anonymised sources, and numbers of 1 to 3 digits
        # (a Study ID "10" would otherwise remove every "10 mm" and flag every date).
        ids = {i for i in self.ids if i not in _NOT_IDENTIFYING
               and not (i.isdigit() and len(i) < 4)}
        return Identifiers(
            names=frozenset(self.names - _NOT_IDENTIFYING), initials=frozenset(self.initials),
            cjk_names=frozenset(x for x in self.cjk if x),
            cjk_full=frozenset(self.cjk_full), ids=frozenset(ids),
            words=frozenset(self.words - _NOT_IDENTIFYING), dates=frozenset(self.dates),
            birth_dates=frozenset(self.birth))


_NOT_IDENTIFYING = frozenset({"anon", "anonymous", "anonymized", "anonymised", "unknown",
                              "none", "n/a"})


#: Where an instance's identifiers live (top level, and in the sequences below).
ID_TAGS = frozenset({0x00100020, 0x00101000, 0x00080050, 0x00200010, 0x00401001, 0x00400009,
                     0x00100021, 0x00380010, 0x00101005, 0x00102154, 0x00400253})
PHRASE_TAGS = frozenset({0x00080080, 0x00080081, 0x00101040, 0x00101060, 0x00100050,
                         0x00081040, 0x00081010, 0x00380300})
DATE_TAGS = frozenset({0x00080020, 0x00080021, 0x00080022, 0x00080023, 0x00080012, 0x00380020,
                       0x00321050, 0x00400244, 0x00400250})
BIRTH_TAGS = frozenset({0x00100030, 0x00102203})
DATETIME_TAGS = frozenset({0x0008002A, 0x00181202})
IDENT_SEQS = frozenset({0x00101002, 0x00400275, 0x00081120, 0x00380064})
_WANTED = ID_TAGS | PHRASE_TAGS | DATE_TAGS | BIRTH_TAGS | DATETIME_TAGS | IDENT_SEQS


@lru_cache(maxsize=4096)
def _dict_vr(tag: int) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def identifier_tokens(ds: object, *, dates: bool = True) -> Identifiers:
    """The normalised identifiers of a pydicom Dataset (read it *before* de-identification).

    ``dates=False`` leaves dates out (a profile that keeps full dates does not treat them as
    identifying), except birth dates, which no option keeps. Values that cannot be decoded
    are skipped here; the strict readers refuse them elsewhere."""
    b = _Builder()
    _collect(ds, b, dates, 0)
    return b.build()


def _collect(ds: object, b: _Builder, dates: bool, depth: int) -> None:
    d = getattr(ds, "_dict", {})
    for tag in list(d):
        wanted = tag in _WANTED
        vr = d[tag].VR
        if vr is None or vr == "UN":
            vr = _dict_vr(tag)
        if not wanted and vr != "PN" or (tag >> 16) & 1:
            continue
        try:
            value = ds[tag].value  # type: ignore[index]
            if vr == "PN":
                for v in _values(value):
                    b.name(str(v))
            elif tag in ID_TAGS:
                for v in _values(value):
                    b.ident(str(v))
            elif tag in PHRASE_TAGS:
                for v in _values(value):
                    b.phrase(str(v))
            elif (dates and tag in DATE_TAGS) or tag in BIRTH_TAGS:  # birth dates always
                for v in _values(value):
                    b.da(str(v), birth=tag in BIRTH_TAGS)
            elif dates and tag in DATETIME_TAGS:
                for v in _values(value):
                    b.da(str(v)[:8])
            elif tag in IDENT_SEQS and depth < 2 and vr == "SQ":
                for item in value or ():
                    _collect(item, b, dates, depth + 1)
        except Exception:  # noqa: BLE001 - an undecodable value is refused by the strict path
            continue


def dataset_encodings(ds: object, inherited: list[str]) -> list[str]:
    """Python encodings of ``ds``'s Specific Character Set, else the ``inherited`` ones (a
    sequence item without its own inherits its parent's)."""
    from pydicom.charset import convert_encodings

    if 0x00080005 not in getattr(ds, "_dict", {}):
        return inherited
    value = ds[0x00080005].value  # type: ignore[index]
    if not value:
        return inherited
    return convert_encodings(value if isinstance(value, str) else list(value))


def _values(v: object) -> list[object]:
    if v is None or v == "":
        return []
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        return list(v)  # type: ignore[call-overload, no-any-return]
    return [v]


# ------------------------------------------------------------------ scanning text
_SEP = "\\s,;()\\[\\]{}\"'^=<>|\u3000-\u3004\u3007-\u303f\u30fb\uff65"
_CHUNK_RE = re.compile(f"[^{_SEP}]+")
_WORD_RE = re.compile(r"[^\W_]+")
_ALNUM_SPLIT_RE = re.compile(r"\d+|[^\W\d_]+")
_LONG_NUMBER_RE = re.compile(r"\d{5,}")


def _segments(folded: str) -> Iterable[tuple[int, int, bool]]:
    """Chunks between separators, split again where the script changes to or from CJK."""
    for m in _CHUNK_RE.finditer(folded):
        s, e = m.span()
        start, cur = s, is_cjk(folded[s])
        for i in range(s + 1, e):
            c = is_cjk(folded[i])
            if c != cur:
                yield start, i, cur
                start, cur = i, c
        yield start, e, cur


def _segmentable(word: str, parts: frozenset[str]) -> bool:
    """Whether ``word`` is a run-together sequence of 2+ name parts ("johndoe", "jdoe")."""
    n = len(word)
    if n > 40:
        return False
    ok = [0] * (n + 1)  # ok[i]: max number of parts covering word[:i] (0: not coverable)
    ok[0] = 1
    for i in range(1, n + 1):
        for j in range(max(0, i - 24), i):
            if ok[j] and word[j:i] in parts:
                ok[i] = max(ok[i], ok[j] + 1)
    return ok[n] >= 3


def _latin_word_hit(w: str, ids: Identifiers, d: dict[str, Any]) -> bool:
    if w in ids.names or w in ids.ids or w in ids.words:
        return True
    if len(w) >= 3 and loose(w) in d["loose"] or _strip_marks(w) in d["bare"]:
        return True
    if any(n in w for n in d["long_names"]) or any(i in w for i in d["long_ids"]):
        return True
    if len(w) >= 4 and (_segmentable(w, ids.names)
                        or (w[0] in ids.initials and w[1:] in ids.names)
                        or (w[-1] in ids.initials and w[:-1] in ids.names)):
        return True
    pieces = _ALNUM_SPLIT_RE.findall(w)
    # "DOE1961": letters glued to digits. Hex strings (our own pseudonyms, seals) split into
    # random short letter runs, so a run of hex letters counts only from 4 characters on.
    return len(pieces) > 1 and any((p in ids.names and (len(p) >= 4 or not _HEX_RE.match(p)))
                                   or p in ids.ids for p in pieces)


_HEX_RE = re.compile(r"^[a-f]+$")


def _chunk_hit(chunk: str, ids: Identifiers, d: dict[str, Any]) -> bool:
    """A non-CJK chunk (between separators) that carries a name part or an ID."""
    if chunk in ids.ids or any(i in chunk for i in d["long_ids"]):
        return True
    bare = chunk.strip(".:!?*#+-_/\\")
    if bare in ids.ids:
        return True
    words = _WORD_RE.findall(chunk)
    if len(words) > 1 and ("." in chunk and "".join(words) in d["combos"]
                           or "".join(words) in ids.names):
        return True  # J.D. (initials are matched only with their dots), Doe-Smith
    return any(_latin_word_hit(w, ids, d) for w in words)


def _cjk_spans(run: str, ids: Identifiers, check: bool) -> list[tuple[int, int]]:
    spans = []
    names = ids.cjk_full if check else ids.cjk_names | ids.cjk_full
    for n in names:
        if check and len(n) < 2:
            continue
        start = run.find(n)
        while start >= 0:
            spans.append((start, start + len(n)))
            start = run.find(n, start + 1)
    if check:
        for n in ids.cjk_names:
            if len(n) >= 2 and n in run:
                spans.append((run.find(n), run.find(n) + len(n)))
    return spans


def _scan(text: str, ids: Identifiers, mode: str, offset: int | None,
          stop_at_first: bool) -> tuple[str, bool]:
    """The engine behind :func:`clean_text` and :func:`has_identifier`.

    ``mode``: "free" (identifiers, every date, long numbers), "ids" (identifiers and the
    instance's own dates) or "check" (like "ids", report only). ``offset``: days to shift
    full dates by (None: remove them; 0 with free: keep dates)."""
    folded, starts, ends = _fold_map(text)
    d = ids._d()
    edits: list[tuple[int, int, str]] = []  # folded [s, e) -> replacement
    hit = False
    # 1. dates
    dates_found = find_dates(folded)
    for dm in dates_found:
        own = bool(set(dm.readings) & ids.dates)
        if mode != "free" and not own:
            continue
        hit = hit or own
        if stop_at_first and hit:
            return text, True
        if mode != "free":
            edits.append((dm.start, dm.end, ""))
            continue
        birth = bool(set(dm.readings) & ids.birth_dates)
        if offset == 0 and not birth:
            continue  # full dates retained
        if offset and len(dm.readings) == 1 and not birth:
            new = dm.readings[0] + _dt.timedelta(days=offset)
            edits.append((dm.start, dm.end, _format_shifted(dm, folded, new)))
        else:
            edits.append((dm.start, dm.end, ""))
    # a date is a date: its digits are not IDs, whatever is done with it
    taken = [(dm.start, dm.end) for dm in dates_found]
    # 2. names, IDs, long numbers, chunk by chunk
    removed_name_at: list[int] = []
    latin: list[tuple[int, int]] = []
    for s, e, cjk in _segments(folded):
        if any(s < te and ts < e for ts, te in taken):
            continue
        seg = folded[s:e]
        if cjk:
            for a, b in _cjk_spans(seg, ids, mode == "check"):
                hit = True
                if stop_at_first:
                    return text, True
                edits.append((s + a, s + b, ""))
            continue
        if _chunk_hit(seg, ids, d):
            hit = True
            if stop_at_first:
                return text, True
            edits.append((s, e, ""))
            removed_name_at.append(len(latin))
            latin.append((s, e))
            continue
        if mode == "free" and _LONG_NUMBER_RE.search(seg):
            edits.append((s, e, ""))
        latin.append((s, e))
    # 3. a lone initial next to a removed name ("J. Doe", "Doe J.")
    if removed_name_at and ids.initials:
        for k, (s, e) in enumerate(latin):
            w = folded[s:e].strip(".")
            if len(w) == 1 and w in ids.initials and (k - 1 in removed_name_at
                                                      or k + 1 in removed_name_at):
                edits.append((s, e, ""))
    if stop_at_first or not edits:
        return text, hit
    # apply on the original text, right to left
    merged: list[list[Any]] = []
    for s, e, rep in sorted(set(edits)):
        if merged and s < merged[-1][1]:  # overlapping removals (a CJK name and its parts)
            merged[-1][1] = max(merged[-1][1], e)
            merged[-1][2] = merged[-1][2] or rep
        else:
            merged.append([s, e, rep])
    out = text
    for s, e, rep in reversed(merged):
        os_, oe = starts[s], ends[e - 1]
        out = out[:os_] + rep + out[oe:]
    out = re.sub(r"[ \t]{2,}", " ", out)
    return out.strip(" ,;:-"), hit


def clean_text(text: str, ids: Identifiers, *, free: bool = True,
               offset: int | None = None) -> str:
    """``text`` without the instance's identifiers; ``free`` (free text): without any date
    (shifted by ``offset`` days when it is full and not a birth date; kept when ``offset`` is
    0) and without numbers of 5 or more digits. ``free=False`` (coded or safe-listed text):
    only the instance's identifiers and its own dates are removed."""
    if not text:
        return text
    return _scan(text, ids, "free" if free else "ids", offset, False)[0]


def has_identifier(text: str, ids: Identifiers) -> bool:
    """Whether ``text`` carries one of ``ids`` (names, IDs, words, the instance's dates in any
    written form). One-character CJK name components count only next to another component."""
    if not text or not ids:
        return False
    return _scan(text, ids, "check", None, True)[1]


def quick_clear(raw: bytes, ids: Identifiers, free: bool) -> bool:
    """For the engine's fast path: True when ASCII ``raw`` certainly needs no cleaning (no
    identifier as a substring, and for free text no digit at all). Conservative: False means
    "decode and look", never "dirty"."""
    if not raw.isascii() or b"\x1b" in raw:
        return False
    d = ids._d()
    low = raw.lower()
    if any(t in low for t in d["ascii"]):
        return False
    if d["loose_extra"]:
        text = loose(low.decode("ascii"))
        if any(t in text for t in d["loose_extra"]) or any(
                t in low.decode("ascii") for t in d["loose_extra"]):
            return False
    if (free or ids.dates) and _DIGIT_B.search(raw) and (
            _MAYBE_DATE_B.search(low) or (free and _LONG_B.search(raw))):
        return False
    # initials ("J.D.") are matched only with their dots
    return not (d["combos"] and _DOTTED_B.search(low))


_DIGIT_B = re.compile(rb"\d")
_LONG_B = re.compile(rb"\d{5}")
_ASCII_MONTHS = "|".join(sorted((m for m in _MONTHS if m.isascii()), key=len, reverse=True))
#: A superset of every date form find_dates knows, on lower-case ASCII bytes: a 4-digit
#: year, two numbers joined by - . /, or a month name next to a number.
_MAYBE_DATE_B = re.compile(
    (r"\d{4}|\d[-./]\s?\d|(?:" + _ASCII_MONTHS + r")[a-z]*\.?[\s,-]*\d|\d(?:st|nd|rd|th|er)?"
     r"\.?[\s-]*(?:of\s+|de\s+)?(?:" + _ASCII_MONTHS + ")").encode())
_DOTTED_B = re.compile(rb"(?<![a-z])[a-z]\.\s?[a-z]\b")

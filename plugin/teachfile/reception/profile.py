"""De-identification profiles: PS3.15 Table E.1-1 plus the options a node chooses.

The table is the project's own transcription (``data/ps3.15-e1-1.json``); a profile (YAML under
``orthanc-config/profiles``) only chooses options, the date-shift range, the safe private
attributes and an opaque transcoding section. Per-tag actions are resolved once, here, so the
engine's hot loop is a dictionary look-up from an ``int`` tag to a one-letter action.

Option precedence (the standard lets several options name one attribute): for a date or time
attribute (VR DA, DT, TM) an active temporal option decides (full dates keep, modified dates
clean = shift), because keeping a real date under "modified dates" would defeat that option;
otherwise an active option whose action is K wins over one whose action is C, and either wins
over the Basic Profile action.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydicom.datadict import dictionary_VR

from ..errors import ConfigError

#: The ten options of Table E.1-1, in the order of its columns.
OPTION_NAMES: tuple[str, ...] = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)

#: CID 7050 codes (DCM) for the Basic Profile and each option.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "clean_graphics": ("113103", "Clean Graphics Option"),
        "clean_structured_content": ("113104", "Clean Structured Content Option"),
        "clean_descriptors": ("113105", "Clean Descriptors Option"),
        "retain_long_full_dates": (
            "113106",
            "Retain Longitudinal Temporal Information Full Dates Option",
        ),
        "retain_long_modified_dates": (
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
        ),
        "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
        "retain_device_identity": ("113109", "Retain Device Identity Option"),
        "retain_uids": ("113110", "Retain UIDs Option"),
        "retain_safe_private": ("113111", "Retain Safe Private Option"),
        "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    }
)

TABLE_RESOURCE = "ps3.15-e1-1.json"
_BASIC_ACTIONS = frozenset({"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
_TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
_PROFILE_KEYS = frozenset(
    {"name", "version", "description", "options", "date_shift_days", "safe_private", "transcoding"}
)


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1: ``tag`` is "gggg,eeee" (x for repeating digits) or "private"."""

    tag: str
    name: str
    basic: str
    options: Mapping[str, str]
    in_std_iod: bool = True

    @property
    def tag_int(self) -> int | None:
        """The tag as an int, or None for repeating groups and the private rule."""
        if "x" in self.tag or self.tag == "private":
            return None
        return int(self.tag.replace(",", ""), 16)


@dataclass(frozen=True)
class Table:
    """The transcribed table and which edition of the standard it reflects."""

    edition: str
    rows: tuple[TableRow, ...]


@lru_cache(maxsize=4)
def load_table(path: Path | None = None) -> Table:
    """The project's Table E.1-1 (cached: it never changes while a node runs)."""
    try:
        if path is None:
            text = resources.files("teachfile.data").joinpath(TABLE_RESOURCE).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        raw = json.loads(text)
        rows = tuple(
            TableRow(
                tag=r["tag"].lower(),
                name=r["name"],
                basic=r["basic"],
                options=MappingProxyType(dict(r.get("options", {}))),
                in_std_iod=not r.get("not_in_std_iod", False),
            )
            for r in raw["attributes"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        name = type(exc).__name__
        raise ConfigError(f"the Table E.1-1 data file is unreadable ({name})") from None
    for r in rows:
        bad = r.basic not in _BASIC_ACTIONS or any(
            o not in OPTION_NAMES or a not in ("K", "C") for o, a in r.options.items()
        )
        if bad:
            raise ConfigError(f"the Table E.1-1 data file has an invalid row for {r.tag}")
    return Table(edition=str(raw.get("edition", "")), rows=rows)


@dataclass(frozen=True)
class SafePrivate:
    """A private attribute known to carry no identity: group, creator and low byte of element."""

    group: int
    creator: str
    element: int

    @classmethod
    def parse(cls, spec: Any) -> SafePrivate:
        """Accept ``"0019,GEMS_ACQU_01,0C"`` or ``{group: "0019", creator: ..., element: "0C"}``."""
        try:
            if isinstance(spec, str):
                parts = spec.split(",")
                if len(parts) < 3:
                    raise ValueError
                g, creator, e = parts[0].strip(), ",".join(parts[1:-1]).strip(), parts[-1].strip()
            else:
                g, e = str(spec["group"]), str(spec["element"])
                creator = str(spec["creator"]).strip()
            group, element = int(g, 16), int(e, 16) & 0xFF
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError("a safe_private entry must be 'gggg,CREATOR,ee'") from None
        if not group & 1 or not creator or group > 0xFFFF:
            raise ConfigError("a safe_private entry needs an odd group and a private creator")
        return cls(group=group, creator=creator, element=element)


@dataclass(frozen=True)
class Profile:
    """A named, versioned choice of options; see the module docstring for precedence."""

    name: str
    version: str
    options: frozenset[str]
    date_shift_days: tuple[int, int] = (-1095, -366)
    safe_private: tuple[SafePrivate, ...] = ()
    transcoding: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    table_edition: str = ""
    actions: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    repeating: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def has(self, option: str) -> bool:
        """Whether ``option`` (one of :data:`OPTION_NAMES`) is active."""
        if option not in OPTION_NAMES:
            raise KeyError(option)
        return option in self.options

    @property
    def method_text(self) -> str:
        """The value written to De-identification Method (0012,0063): name and version."""
        return f"{self.name} {self.version}"

    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 codes to record: the Basic Profile, then each active option."""
        return [BASIC_PROFILE_CODE] + sorted(OPTION_CODES[o] for o in self.options)

    def action_for(self, tag: int) -> str | None:
        """The resolved Table E.1-1 action for ``tag`` (None when the table does not list it).

        Covers repeating groups (curves 50xx, overlays 60xx) and the odd-group private rule.
        """
        act = self.actions.get(tag)
        if act is not None:
            return act
        group, elem = tag >> 16, tag & 0xFFFF
        if group & 1:
            return self.repeating.get("private")
        if 0x5000 <= group <= 0x501E:
            return self.repeating.get("50xx,xxxx")
        if 0x6000 <= group <= 0x601E:
            return self.repeating.get(f"60xx,{elem:04x}")
        return None


def resolve_row(row: TableRow, options: frozenset[str]) -> str:
    """The action for one row under ``options`` (precedence rule: see the module docstring)."""
    active = {o: a for o, a in row.options.items() if o in options}
    if not active:
        return row.basic
    t = row.tag_int
    vr = None
    if t is not None:
        try:
            vr = dictionary_VR(t)
        except KeyError:
            vr = None
    if vr in _TEMPORAL_VRS:
        for o in ("retain_long_full_dates", "retain_long_modified_dates"):
            if o in active:
                return active[o]
    if "K" in active.values():
        return "K"
    return "C"


def _parse_options(raw: Any) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if isinstance(raw, Mapping):
        names = [k for k, v in raw.items() if _as_bool(k, v)]
        unknown = [k for k in raw if k not in OPTION_NAMES]
    elif isinstance(raw, list):
        names = [str(k) for k in raw]
        unknown = [k for k in names if k not in OPTION_NAMES]
    else:
        raise ConfigError("profile 'options' must be a mapping of option name to true/false")
    if unknown:
        raise ConfigError(f"unknown profile option(s): {', '.join(sorted(map(str, unknown)))}")
    opts = frozenset(names)
    if {"retain_long_full_dates", "retain_long_modified_dates"} <= opts:
        raise ConfigError("the two retain_long_*_dates options exclude each other")
    return opts


def _as_bool(key: Any, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"profile option {key!s} must be true or false")
    return value


def _parse_shift(raw: Any) -> tuple[int, int]:
    if raw is None:
        return (-1095, -366)
    if isinstance(raw, Mapping):
        raw = [raw.get("min"), raw.get("max")]
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    ):
        raise ConfigError("date_shift_days must be [min, max] whole days")
    lo, hi = int(raw[0]), int(raw[1])
    if lo > hi or max(abs(lo), abs(hi)) > 36500 or lo == hi == 0:
        raise ConfigError("date_shift_days must satisfy min <= max, |days| <= 36500, not [0, 0]")
    return lo, hi


def profile_from_mapping(data: Any, table: Table | None = None) -> Profile:
    """Validate a parsed YAML profile and resolve every tag's action."""
    if not isinstance(data, Mapping):
        raise ConfigError("a profile must be a YAML mapping")
    extra = set(map(str, data)) - _PROFILE_KEYS
    if extra:
        raise ConfigError(f"unknown profile key(s): {', '.join(sorted(extra))}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError("profile 'name' must be a short identifier")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, str | int | float):
        raise ConfigError("profile 'version' must be a string or number")
    version = str(version)
    if not re.match(r"^[A-Za-z0-9_.-]{1,16}$", version):
        raise ConfigError("profile 'version' must be a short identifier")
    options = _parse_options(data.get("options"))
    shift = _parse_shift(data.get("date_shift_days"))
    sp_raw = data.get("safe_private") or []
    if not isinstance(sp_raw, list):
        raise ConfigError("safe_private must be a list")
    safe = tuple(SafePrivate.parse(s) for s in sp_raw)
    trans = data.get("transcoding") or {}
    if not isinstance(trans, Mapping):
        raise ConfigError("profile 'transcoding' must be a mapping")
    desc = data.get("description") or ""
    if not isinstance(desc, str):
        raise ConfigError("profile 'description' must be text")
    table = table or load_table()
    actions: dict[int, str] = {}
    repeating: dict[str, str] = {}
    for row in table.rows:
        act = resolve_row(row, options)
        t = row.tag_int
        if t is None:
            repeating[row.tag] = act
        else:
            actions[t] = act
    return Profile(
        name=name,
        version=version,
        options=options,
        date_shift_days=shift,
        safe_private=safe,
        transcoding=MappingProxyType(dict(trans)),
        description=desc,
        table_edition=table.edition,
        actions=MappingProxyType(actions),
        repeating=MappingProxyType(repeating),
    )


def load_profile(name_or_path: str | Path, config_dir: Path) -> Profile:
    """Load a profile by name (``<config_dir>/profiles/<name>.yaml``) or by path."""
    p = Path(name_or_path)
    if isinstance(name_or_path, Path) or p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        candidates = [p if p.is_absolute() or p.exists() else Path(config_dir) / p]
    else:
        if not _NAME_RE.match(str(name_or_path)):
            raise ConfigError("a profile name must be a short identifier")
        candidates = [
            Path(config_dir) / "profiles" / f"{name_or_path}.yaml",
            Path(config_dir) / f"{name_or_path}.yaml",
        ]
    for c in candidates:
        if c.is_file():
            try:
                data = yaml.safe_load(c.read_text("utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                kind = type(exc).__name__
                raise ConfigError(f"profile {c.name} is not valid YAML ({kind})") from None
            return profile_from_mapping(data)
    raise ConfigError(f"no profile named {name_or_path!s} under {config_dir}")

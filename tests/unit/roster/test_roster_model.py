"""Roster validation: a table of bad rosters, each with every LINE:COL message it must give."""

from __future__ import annotations

import textwrap

import pytest

from teachfile.roster import RosterError, parse_roster
from teachfile.roster.model import derive_password, expand_pattern, host_problem

GOOD = """\
secret: a-secret-of-sufficient-length
server:
  aet: TEACHFILE
  host: 10.9.0.10
  users:
    - {name: admin, role: admin}
participants:
  generate:
    count: 3
    aet: WS{n:02}
    host_start: 10.9.0.101
  nodes:
    - {name: tutor, aet: TUTOR, host: tutor.lan, port: 104, role: admin, password: pw}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(RosterError) as info:
        parse_roster(textwrap.dedent(text), "roster.yaml", environ={})
    return [str(d) for d in info.value.diagnostics]


def test_good_roster_parses() -> None:
    roster = parse_roster(GOOD, environ={})
    assert [p.aet for p in roster.participants] == ["WS01", "WS02", "WS03", "TUTOR"]
    assert [p.host for p in roster.participants][:3] == ["10.9.0.101", "10.9.0.102", "10.9.0.103"]
    assert roster.participants[0].name == "ws01"
    assert roster.participants[0].password == derive_password("a-secret-of-sufficient-length",
                                                               "ws01")
    assert roster.participants[3].password == "pw"
    assert roster.server.dicom_port == 4242 and roster.server.http_port == 8042
    assert roster.subnet is None  # tutor.lan is not an address


def _swap(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


#: The issue's validation rules and the rows that pin their exact messages:
#: AET 1-16 of A-Z 0-9 - _ -> "aet too long/lower case/bad character/empty", "generated aet too
#: long"; AETs and names unique -> "duplicate aet/name", "pattern without placeholder"; host:port
#: unique -> "host:port ..." rows; IPv4 or hostname -> "bad ipv4/hostname", "host_start ...",
#: "host pattern past 255"; ports 1-65535 -> "port zero/too big/not a number"; a range fits its
#: subnet -> "range leaves its subnet", "address outside subnet"; unknown keys -> "unknown ..."
#: rows; server AET distinct -> "aet collides with server", "generated aet collides with server".
BAD = [
    ("aet too long", _swap("aet: TEACHFILE", "aet: TEACHFILE_SERVER_X"),
     ["roster.yaml:3:8: AET 'TEACHFILE_SERVER_X' must be 1 to 16 characters long (it has 18)"]),
    ("aet lower case", _swap("aet: TUTOR", "aet: tutor"),
     ["roster.yaml:13:26: AET 'tutor' must be upper case (did you mean 'TUTOR'?)"]),
    ("aet bad character", _swap("aet: TUTOR", "aet: 'TU TOR'"),
     ["roster.yaml:13:26: AET 'TU TOR' may only contain A-Z, 0-9, '-' and '_'"]),
    ("generated aet too long", _swap("aet: WS{n:02}", "aet: WORKSHOP_NODE_XY{n:02}"),
     [f"roster.yaml:10:10: generated participant {n}: AET 'WORKSHOP_NODE_XY0{n}' must be 1 to 16"
      " characters long (it has 18)" for n in (1, 2, 3)]),
    ("bad ipv4", _swap("host: 10.9.0.10", "host: 10.9.0.300"),
     ["roster.yaml:4:9: '10.9.0.300' is not a valid IPv4 address"]),
    ("bad hostname", _swap("host: tutor.lan", "host: tutor_.lan"),
     ["roster.yaml:13:39: 'tutor_.lan' is neither a valid IPv4 address nor a valid hostname"]),
    ("port zero", _swap("port: 104", "port: 0"),
     ["roster.yaml:13:56: participant port must be between 1 and 65535 (got 0)"]),
    ("port too big", _swap("  users:", "  dicom_port: 65536\n  users:"),
     ["roster.yaml:5:15: server dicom_port must be between 1 and 65535 (got 65536)"]),
    ("port not a number", _swap("port: 104", "port: dicom"),
     ["roster.yaml:13:56: participant port must be an integer"]),
    ("duplicate aet", _swap("aet: TUTOR", "aet: WS02"),
     ["roster.yaml:13:7: AET 'WS02' of participant 'tutor' is already used by participant"
      " 'ws02' (line 9)"]),
    ("aet collides with server", _swap("aet: TUTOR", "aet: TEACHFILE"),
     ["roster.yaml:13:7: AET 'TEACHFILE' of participant 'tutor' is already used by the server"]),
    ("name collides with server", _swap("name: tutor", "name: teachfile"),
     ["roster.yaml:13:7: name 'teachfile' is already used by the server"]),
    ("duplicate name", _swap("name: tutor", "name: ws03"),
     ["roster.yaml:13:7: name 'ws03' is already used by participant 'ws03' (line 9)"]),
    ("host:port collides with server", _swap("host: tutor.lan, port: 104",
                                             "host: 10.9.0.10, port: 4242"),
     ["roster.yaml:13:7: 10.9.0.10:4242 of participant 'tutor' is already used by the server's"
      " DICOM port",
      "roster.yaml:13:7: 10.9.0.10:8042 of participant 'tutor' is already used by the server's"
      " HTTP port"]),
    ("host:port pair repeated", _swap("host: tutor.lan, port: 104",
                                      "host: 10.9.0.102, port: 11112"),
     ["roster.yaml:13:7: 10.9.0.102:11112 of participant 'tutor' is already used by"
      " participant 'ws02' (line 9)",
      "roster.yaml:13:7: 10.9.0.102:8042 of participant 'tutor' is already used by"
      " participant 'ws02' (line 9)"]),
    ("unknown permission", _swap("role: admin, password", "permissions: [echo, stroe], role:"
                                 " admin, password"),
     ["roster.yaml:13:81: unknown permission 'stroe'; did you mean 'store'? (known: echo, find,"
      " move, get, store)"]),
    ("unknown key with suggestion", _swap("  generate:", "  generat:"),
     ["roster.yaml:8:3: unknown key 'generat' in participants; did you mean 'generate'? (known:"
      " defaults, generate, nodes)"]),
    ("unknown top-level key", "sever: {}\n" + GOOD,
     ["roster.yaml:1:1: unknown key 'sever' in the roster; did you mean 'server'? (known:"
      " version, title, secret, secret_env, server, participants, peer_mode, plugin, docker,"
      " network, tls)"]),
    ("unknown role", _swap("role: admin, password", "role: boss, password"),
     ["roster.yaml:13:67: participant role 'boss' is not one of admin, contributor, viewer"]),
    ("no admin user", _swap("role: admin}\n", "role: viewer}\n"),
     ["roster.yaml:6:5: server users need at least one with role 'admin'"]),
    ("missing server keys", _swap("  aet: TEACHFILE\n  host: 10.9.0.10\n", ""),
     ["roster.yaml:3:3: server: missing required key 'aet'",
      "roster.yaml:3:3: server: missing required key 'host'"]),
    ("no secret", _swap("secret: a-secret-of-sufficient-length\n", ""),
     ["roster.yaml:5:7: user 'admin' has no password and the roster has no 'secret' to derive"
      " one from",
      "roster.yaml:8:5: generated participants need the roster's 'secret' (or 'secret_env') to"
      " derive their passwords"]),
    ("bad pattern", _swap("aet: WS{n:02}", "aet: WS{i}"),
     ["roster.yaml:10:10: pattern 'WS{i}' has a placeholder other than {n}, {n:02} or {n+K}"]),
    ("duplicate key", _swap("  host: 10.9.0.10\n", "  host: 10.9.0.10\n  host: 10.9.0.11\n"),
     ["roster.yaml:5:3: server: duplicate key 'host'"]),
    ("address outside subnet", GOOD + "network: {subnet: 10.9.1.0/24}\n",
     [f"roster.yaml:14:19: address {a} is outside the subnet 10.9.1.0/24"
      for a in ("10.9.0.10", "10.9.0.101", "10.9.0.102", "10.9.0.103")]),
    ("yaml syntax", "server: [\n", ["roster.yaml:2:1: YAML syntax: expected the node content,"
                                    " but found '<stream end>'"]),
    # -- the rules, one more row each where the table above left a case open --
    # AET 1-16 characters of A-Z 0-9 - _ (an empty one too)
    ("aet empty", _swap("aet: TUTOR", "aet: ''"),
     ["roster.yaml:13:26: participant aet must be a non-empty string"]),
    # the server's AET distinct from every participant's, generated ones included
    ("generated aet collides with server", _swap("aet: TEACHFILE", "aet: WS02"),
     ["roster.yaml:9:5: AET 'WS02' of participant 'ws02' is already used by the server"]),
    # AETs unique within a range: a pattern without {n} would repeat one value
    ("pattern without placeholder", _swap("aet: WS{n:02}", "aet: WS"),
     ["roster.yaml:10:10: pattern 'WS' has no {n} placeholder, so every generated value is"
      " equal"]),
    # host:port pairs unique between a range and an explicit entry
    ("host:port collides with a generated one", _swap("host: tutor.lan, port: 104",
                                                      "host: 10.9.0.101, port: 11112"),
     ["roster.yaml:13:7: 10.9.0.101:11112 of participant 'tutor' is already used by"
      " participant 'ws01' (line 9)",
      "roster.yaml:13:7: 10.9.0.101:8042 of participant 'tutor' is already used by"
      " participant 'ws01' (line 9)"]),
    ("participant port equals its http_port", _swap("port: 104", "port: 8042"),
     ["roster.yaml:13:7: participant 'tutor': port and http_port are both 8042"]),
    ("server port equals its http_port", _swap("  users:", "  dicom_port: 8042\n  users:"),
     ["roster.yaml:5:15: server http_port must differ from dicom_port"]),
    # valid IPv4: a range's first address, and a range that counts past an octet or the space
    ("host_start not an address", _swap("host_start: 10.9.0.101", "host_start: 10.9.0"),
     ["roster.yaml:11:17: host_start '10.9.0' is not a valid IPv4 address"]),
    ("host pattern past 255", _swap("host_start: 10.9.0.101", "host: '10.9.0.{n+253}'"),
     ["roster.yaml:11:11: generated participant 3: '10.9.0.256' is not a valid IPv4 address"]),
    ("host_start runs out of addresses", _swap("host_start: 10.9.0.101",
                                               "host_start: 255.255.255.253"),
     ["roster.yaml:11:17: host_start + 3 runs past 255.255.255.254"]),
    # a range must fit its subnet
    ("range leaves its subnet", _swap("host_start: 10.9.0.101", "host_start: 10.9.0.254")
     + "network: {subnet: 10.9.0.0/24}\n",
     ["roster.yaml:14:19: address 10.9.0.255 is the network or broadcast address of the subnet"
      " 10.9.0.0/24",
      "roster.yaml:14:19: address 10.9.1.0 is outside the subnet 10.9.0.0/24"]),
    ("range takes the broadcast address", _swap("host_start: 10.9.0.101", "host_start: 10.9.0.253")
     + "network: {subnet: 10.9.0.0/24}\n",
     ["roster.yaml:14:19: address 10.9.0.255 is the network or broadcast address of the subnet"
      " 10.9.0.0/24"]),
    ("range too long", _swap("count: 3", "count: 1001"),
     ["roster.yaml:9:12: count must be between 1 and 1000 (got 1001)"]),
    # unknown keys, inside a participant entry
    ("unknown key in a participant", _swap("role: admin, password", "rol: admin, password"),
     ["roster.yaml:13:61: unknown key 'rol' in participant; did you mean 'role'? (known: name,"
      " aet, host, port, http_port, permissions, role, password)"]),
    ("several errors at once", _swap("aet: TUTOR, host: tutor.lan, port: 104",
                                     "aet: tutor, host: 1.2.3, port: 99999"),
     ["roster.yaml:13:26: AET 'tutor' must be upper case (did you mean 'TUTOR'?)",
      "roster.yaml:13:39: '1.2.3' is not a valid IPv4 address",
      "roster.yaml:13:52: participant port must be between 1 and 65535 (got 99999)"]),
]


@pytest.mark.parametrize(("label", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_roster(label: str, text: str, expected: list[str]) -> None:
    assert errors(text) == expected


def test_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _swap("secret: a-secret-of-sufficient-length", "secret_env: ROSTER_SECRET")
    roster = parse_roster(text, environ={"ROSTER_SECRET": "x" * 20})
    assert roster.server.users[0].password == derive_password("x" * 20, "admin")
    assert errors(text) == ["roster.yaml:1:13: environment variable ROSTER_SECRET must be set to"
                            " a secret of at least 16 characters"]


@pytest.mark.parametrize(("pattern", "n", "out"), [
    ("WS{n}", 7, "WS7"), ("WS{n:02}", 7, "WS07"), ("WS{n:03d}", 7, "WS007"),
    ("10.0.0.{n+100}", 7, "10.0.0.107"), ("a{n}-{n}", 3, "a3-3")])
def test_expand_pattern(pattern: str, n: int, out: str) -> None:
    assert expand_pattern(pattern, n) == out


@pytest.mark.parametrize(("host", "ok"), [
    ("172.31.15.1", True), ("localhost", True), ("pacs-1.example.org", True),
    ("256.1.1.1", False), ("1.2.3", False), ("-bad.lan", False), ("a" * 64, False),
    ("host.123", False)])
def test_host_rules(host: str, ok: bool) -> None:
    assert (host_problem(host) is None) == ok


def test_example_roster_describes_the_workshop() -> None:
    from pathlib import Path

    from teachfile.roster import load_roster

    root = Path(__file__).resolve().parents[3]
    roster = load_roster(root / "orthanc-config" / "roster.example.yaml", environ={})
    assert [p.aet for p in roster.participants] == [f"WORKSHOP{n:02}" for n in range(1, 21)]
    assert all(p.host.startswith("172.31.15.") and p.port == 11112 for p in roster.participants)
    assert len({p.host for p in roster.participants}) == 20

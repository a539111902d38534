"""The node's network model: validation, the file (0600, atomic), the merge into orthanc.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from teachfile.errors import ConfigError
from teachfile.node import network as net


def test_modality_round_trip_and_orthanc_form() -> None:
    m = net.Modality("horos", "HOROS", "10.0.0.5", 11112, tls=True)
    assert net.Modality.from_json("horos", m.to_json()) == m
    o = m.to_orthanc()
    assert o["AET"] == "HOROS" and o["Port"] == 11112 and o["UseDicomTls"] is True
    assert o["AllowMove"] and o["AllowFind"] and not o["AllowStore"]


def test_modality_from_orthanc_rest_body() -> None:
    m = net.Modality.from_orthanc("w", {"AET": "WEASIS", "Host": "h", "Port": "104",
                                        "AllowStore": False})
    assert m.port == 104 and "Store" not in m.permissions and "Move" in m.permissions
    assert net.Modality.from_orthanc("a", ["A", "h", 1]).aet == "A"
    with pytest.raises(ConfigError, match="unsupported"):
        net.Modality.from_orthanc("a", {"AET": "A", "Host": "h", "Port": 1, "Lua": 1})


@pytest.mark.parametrize("kw", [
    {"aet": "lower"}, {"aet": "WAY_TOO_LONG_AE_TITLE"}, {"host": "bad host"},
    {"port": 0}, {"port": 70000}, {"name": "../x"}, {"permissions": frozenset({"Fly"})},
])
def test_modality_validation(kw: dict) -> None:
    args = {"name": "m", "aet": "M", "host": "h", "port": 104, **kw}
    with pytest.raises(ConfigError):
        net.Modality(**args)


def test_users_validation() -> None:
    with pytest.raises(ConfigError, match="administrator"):
        net.User("admin", "long-enough", "viewer")
    with pytest.raises(ConfigError, match="role"):
        net.User("bob", "long-enough", "root")
    with pytest.raises(ConfigError, match="8 characters"):
        net.User("bob", "short", "viewer")


def test_file_is_private_and_update_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "network.json"
    assert net.load(path) == net.Network()
    net.update(path, lambda n: n.with_user(net.User("bob", "password-1", "viewer")))
    net.update(path, lambda n: n.with_modality(net.Modality("m", "M", "h", 104)))
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = net.load(path)
    assert set(loaded.users) == {"bob"} and set(loaded.modalities) == {"m"}
    path.write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        net.load(path)


def test_merge_keeps_admin_and_existing_entries() -> None:
    n = (net.Network()
         .with_user(net.User("bob", "password-1", "contributor"))
         .with_modality(net.Modality("m", "M", "h", 104))
         .with_peer(net.Peer("p", "https://peer:8042/", "u", "pw")))
    config = {"RegisteredUsers": {"admin": "x"}, "DicomModalities": {"m": ["OTHER", "h", 1]},
              "Teachfile": {"Profile": "teaching"}}
    out = net.merge_into(config, n)
    assert out["RegisteredUsers"] == {"admin": "x", "bob": "password-1"}
    assert out["Teachfile"]["Roles"] == {"bob": "contributor"}
    assert out["DicomModalities"]["m"] == ["OTHER", "h", 1]  # the configuration's own wins
    assert out["OrthancPeers"]["p"] == {"Url": "https://peer:8042/", "Username": "u",
                                        "Password": "pw"}

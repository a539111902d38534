"""Rendering the example roster: every output parses, carries the right values, and is
byte-identical from one run to the next."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from teachfile.errors import ConfigError
from teachfile.roster import Roster, load_roster, parse_roster
from teachfile.roster.render import node_config, render, server_config, write

EXAMPLE = Path(__file__).resolve().parents[3] / "orthanc-config" / "roster.example.yaml"


def test_every_output_is_there(outputs: dict[str, str]) -> None:
    names = [f"workshop{n:02}" for n in range(1, 21)]
    expected = {"server/orthanc.json", "compose.yaml", "assignments.csv", "handouts/index.html"}
    expected |= {f"nodes/{n}/orthanc.json" for n in names} | {f"handouts/{n}.html" for n in names}
    assert set(outputs) == expected


def test_rendering_is_deterministic(roster: Roster, outputs: dict[str, str],
                                    tmp_path: Path) -> None:
    again = render(load_roster(EXAMPLE, environ={}))
    assert again == outputs
    write(outputs, tmp_path / "a")
    write(again, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    assert files_a == files_b
    for rel in files_a:
        if (tmp_path / "a" / rel).is_file():
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_server_config(roster: Roster, outputs: dict[str, str]) -> None:
    config = json.loads(outputs["server/orthanc.json"])
    assert config == server_config(roster)
    assert config["DicomAet"] == "TEACHFILE" and config["DicomPort"] == 4242
    assert config["HttpPort"] == 8042
    assert config["AuthenticationEnabled"] is True and config["RemoteAccessAllowed"] is True
    assert config["Plugins"] == ["/opt/teachfile/lib/teachfile-restcall.so",
                                 "/usr/share/orthanc/plugins"]
    assert config["PythonScript"] == "/opt/teachfile/plugin/teachfile_entry.py"
    assert config["Teachfile"]["Profile"] == "teaching"
    assert config["Teachfile"]["Roles"]["admin"] == "admin"
    assert config["Teachfile"]["Roles"]["workshop07"] == "viewer"
    assert config["StorageDirectory"] == config["IndexDirectory"] == "/var/lib/orthanc/db"
    assert config["DicomAlwaysAllowStore"] is False and config["DicomAlwaysAllowEcho"] is True
    assert config["DicomCheckModalityHost"] is True
    modalities = config["DicomModalities"]
    assert len(modalities) == 20
    assert modalities["workshop01"] == {
        "AET": "WORKSHOP01", "Host": "172.31.15.101", "Port": 11112, "Manufacturer": "Generic",
        "AllowEcho": True, "AllowFind": True, "AllowMove": True, "AllowGet": False,
        "AllowStore": True}
    assert set(config["RegisteredUsers"]) == {"admin", "instructor"} | set(modalities)
    # No JSON comments, and the text is exactly what json.dumps would write.
    assert outputs["server/orthanc.json"] == json.dumps(config, indent=2, sort_keys=True) + "\n"


def test_node_config(roster: Roster, outputs: dict[str, str]) -> None:
    p = roster.participants[4]
    config = json.loads(outputs[f"nodes/{p.name}/orthanc.json"])
    assert config == node_config(roster, p)
    assert (config["DicomAet"], config["DicomPort"]) == ("WORKSHOP05", 11112)
    assert config["DicomModalities"] == {"teachfile": {
        "AET": "TEACHFILE", "Host": "172.31.15.10", "Port": 4242, "Manufacturer": "Generic",
        "AllowEcho": True, "AllowFind": True, "AllowMove": True, "AllowGet": True,
        "AllowStore": True}}
    assert config["OrthancPeers"] == {"teachfile": {
        "Url": "http://172.31.15.10:8042/", "Username": p.name, "Password": p.password}}
    assert config["RegisteredUsers"] == {p.name: p.password}


def test_peer_mode_nodes_know_each_other(roster: Roster) -> None:
    text = EXAMPLE.read_text().replace("peer_mode: false", "peer_mode: true")
    peered = parse_roster(text, environ={})
    config = node_config(peered, peered.participants[0])
    assert sorted(config["DicomModalities"]) == ["teachfile"] + [
        f"workshop{n:02}" for n in range(2, 21)]
    assert config["DicomModalities"]["workshop02"]["AET"] == "WORKSHOP02"


def test_compose(roster: Roster, outputs: dict[str, str]) -> None:
    compose = yaml.safe_load(outputs["compose.yaml"])
    services = compose["services"]
    assert len(services) == 21
    assert services["teachfile"]["networks"]["workshop"]["ipv4_address"] == "172.31.15.10"
    assert services["workshop03"]["networks"]["workshop"]["ipv4_address"] == "172.31.15.103"
    assert "./nodes/workshop03/orthanc.json:/etc/orthanc/orthanc.json:ro" in \
        services["workshop03"]["volumes"]
    assert compose["networks"]["workshop"]["ipam"]["config"] == [{"subnet": "172.31.15.0/24"}]
    assert set(compose["volumes"]) == {f"{name}-data" for name in services}


def test_handouts(roster: Roster, outputs: dict[str, str]) -> None:
    for p in roster.participants:
        page = outputs[f"handouts/{p.name}.html"]
        for value in (p.aet, p.host, str(p.port), p.password, "TEACHFILE", "172.31.15.10",
                      "4242"):
            assert value in page
        assert f"echoscu -v -aet {p.aet} -aec TEACHFILE 172.31.15.10 4242" in page
        assert f"findscu -v -S -aet {p.aet} -aec TEACHFILE" in page
        assert f"movescu -v -S -aet {p.aet} -aec TEACHFILE -aem {p.aet}" in page
        assert f"storescu -v -aet {p.aet} -aec TEACHFILE 172.31.15.10 4242 image.dcm" in page
        assert f"curl -u {p.name}:{p.password} -X POST http://172.31.15.10:8042/" in page
        assert f'AE(ae_title="{p.aet}")' in page
    index = outputs["handouts/index.html"]
    assert all(f'href="{p.name}.html"' in index for p in roster.participants)


def test_handout_snippets_are_valid_python_and_shell(outputs: dict[str, str]) -> None:
    page = outputs["handouts/workshop01.html"]
    blocks = [html.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", page, re.S)]
    python = [b for b in blocks if b.startswith("python3 - <<'EOF'\n")]
    assert len(python) == 4  # echo, find, move, upload
    for block in python:
        body = block.split("\n", 1)[1].rsplit("\nEOF", 1)[0]
        compile(body, "handout", "exec")
    for block in blocks:
        shlex.split(block.split("\n", 1)[0])  # the first line of every block is shell


def test_handout_escapes_html() -> None:
    text = EXAMPLE.read_text().replace("title: Teaching-file workshop", "title: A <b>& B")
    out = render(parse_roster(text, environ={}))
    assert "A &lt;b&gt;&amp; B" in out["handouts/index.html"]
    assert "<b>" not in out["handouts/workshop01.html"]


def test_assignments(roster: Roster, outputs: dict[str, str]) -> None:
    rows = list(csv.DictReader(io.StringIO(outputs["assignments.csv"])))
    assert len(rows) == 20
    assert rows[0]["aet"] == "WORKSHOP01" and rows[0]["host"] == "172.31.15.101"
    assert rows[19]["password"] == roster.participants[19].password


def test_template_override(roster: Roster, tmp_path: Path) -> None:
    (tmp_path / "assignments.csv.j2").write_text(
        "{% for p in participants %}{{ p.aet }}\n{% endfor %}")
    out = render(roster, tmp_path)
    assert out["assignments.csv"].splitlines()[0] == "WORKSHOP01"
    assert out["compose.yaml"] == render(roster)["compose.yaml"]  # others from the defaults


def test_broken_override_is_caught(roster: Roster, tmp_path: Path) -> None:
    (tmp_path / "server.json.j2").write_text("{ not json {{ server.aet }}")
    with pytest.raises(ConfigError, match="server/orthanc.json does not parse"):
        render(roster, tmp_path)
    (tmp_path / "server.json.j2").write_text("{{ server.no_such_field }}")
    with pytest.raises(ConfigError, match="no_such_field"):
        render(roster, tmp_path)


def test_write_removes_stale_participants(roster: Roster, tmp_path: Path) -> None:
    write(render(roster), tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    text = EXAMPLE.read_text().replace("count: 20", "count: 2")
    write(render(parse_roster(text, environ={})), tmp_path)
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == ["workshop01", "workshop02"]
    assert not (tmp_path / "handouts" / "workshop03.html").exists()
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_workshop_nodes_offer_the_images_viewers() -> None:
    """Every rendered configuration loads the plugin directory (Debian's Web Viewer natively),
    and every service of the workshop compose file enables the image's Stone and OHIF."""
    roster = load_roster(EXAMPLE, {"TEACHFILE_ROSTER_SECRET": "x" * 32})
    files = render(roster)
    compose = yaml.safe_load(files["compose.yaml"])
    for service in compose["services"].values():
        assert service["environment"]["STONE_WEB_VIEWER_PLUGIN_ENABLED"] == "true"
        assert service["environment"]["OHIF_PLUGIN_ENABLED"] == "true"
    configs = [json.loads(text) for name, text in files.items() if name.endswith("orthanc.json")]
    assert configs
    for config in configs:
        assert config["Plugins"] == [roster.plugin.native_plugin, roster.plugin.plugins]
        assert config["OHIF"] == {"DataSource": "dicom-web"}

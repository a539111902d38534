"""Rendering with ``tls: true`` and the handout fixes (address, roles, tools, printing)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from teachfile.roster import Roster, parse_roster
from teachfile.roster.render import render

EXAMPLE = Path(__file__).resolve().parents[3] / "orthanc-config" / "roster.example.yaml"


def test_tls_roster_renders_tls_everywhere(tmp_path: Path) -> None:
    from teachfile.roster.pki import ensure_workshop_pki

    text = EXAMPLE.read_text() + "\ntls: true\n"
    roster = parse_roster(text, environ={})
    out = render(roster)
    server = json.loads(out["server/orthanc.json"])
    assert server["DicomTlsEnabled"] and server["DicomTlsRemoteCertificateRequired"]
    assert server["DicomTlsCertificate"] == "/etc/orthanc/tls/server.crt"
    assert all(m["UseDicomTls"] for m in server["DicomModalities"].values())
    front = server["Teachfile"]["Sharing"]["Front"]
    assert front["Port"] == 8042 and server["HttpPort"] != 8042
    assert server["Teachfile"]["Roles"]["instructor"] == "contributor"
    node = json.loads(out["nodes/workshop01/orthanc.json"])
    assert node["DicomTlsEnabled"] and node["DicomModalities"]["teachfile"]["UseDicomTls"]
    assert node["OrthancPeers"]["teachfile"]["Url"].startswith("https://")
    page = out["handouts/workshop01.html"]
    assert "echoscu -v +tls node.key node.crt +cf ca.crt -aet WORKSHOP01" in page
    assert "curl --cacert ca.crt" in page and "https://172.31.15.10:8042" in page
    assert "movescu" not in page.split("<h2>Move")[1].split("<h2>")[0].replace(
        "movescu has no TLS", "")
    compose = yaml.safe_load(out["compose.yaml"])
    assert "./tls/nodes/workshop01:/etc/orthanc/tls:ro" in compose["services"]["workshop01"][
        "volumes"]
    files = ensure_workshop_pki(roster, tmp_path)
    assert (tmp_path / "tls" / "nodes" / "workshop20" / "node.key") in files
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600


def test_handout_says_which_address_and_prints_only_what_the_role_may(
        roster: Roster, outputs: dict[str, str]) -> None:
    page = outputs["handouts/workshop01.html"]
    assert "Your computer must have the address <code class=\"host\">172.31.15.101</code>" in page
    assert "/modalities/workshop01/store" not in page  # 403 for a viewer: not printed
    assert "apt install dcmtk" in page
    for viewer in ("Horos", "Weasis", "RadiAnt", "dcm4che"):
        assert viewer in page
    assert "word-break: break-all" not in page
    compose = yaml.safe_load(outputs["compose.yaml"])
    assert "8042:8042" in compose["services"]["teachfile"]["ports"]  # reachable by participants

"""Printed, the colleague's invite sheet is one page and a workshop handout two (it was three,
mostly heredocs broken inside words). Chromium prints them to PDF; without it the test skips."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from teachfile.cli import invite as invite_mod
from teachfile.cli.launcher import NodeSettings, prepare
from teachfile.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _pages(html: Path, tmp_path: Path) -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed: cannot print the sheets to count their pages")
    pdf = tmp_path / (html.stem + ".pdf")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--print-to-pdf={pdf}", html.as_uri()], capture_output=True, timeout=120)
    assert pdf.exists()
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))


def test_invite_sheet_prints_on_one_page(tmp_path: Path) -> None:
    settings = NodeSettings(data_dir=tmp_path / "node", public=True, dicom_tls=True)
    prepare(settings, {"TEACHFILE_ADMIN_PASSWORD": "admin-password-1"})
    inv = invite_mod.invite(settings, "carol", "contributor", aet="CAROLVIEW",
                            host="192.0.2.10", port=11112, node_host="tf.example.org")
    assert _pages(inv.sheet, tmp_path) == 1


def test_workshop_handout_prints_on_two_pages(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    assert main(["roster", "render", str(REPO / "orthanc-config" / "roster.example.yaml"),
                 "-o", str(out)]) == 0
    assert _pages(out / "handouts" / "workshop01.html", tmp_path) <= 2

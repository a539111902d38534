"""The Orthanc Web Viewer on a node, in Debian's Chromium: a series stored as JPEG 2000 opens
and shows pixels (the plugin decodes it on the server), as a workshop participant would see it
from Orthanc Explorer."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from harness import send_pynetdicom

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright comes with the test extras")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (scripts/setup --postgres installs it)",
                allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

#: The largest value of the viewer's canvas, read in the page.
_CANVAS_MAX = """() => {
  let best = 0;
  for (const c of document.querySelectorAll('canvas')) {
    if (!c.width || !c.height) continue;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 30) n++;
    best = Math.max(best, n);
  }
  return best;
}"""


def _ct_series(slices: int) -> list[pydicom.Dataset]:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(slices):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-100.0, -100.0, 5.0 * i]
        out.append(ds)
    return out


def test_a_jpeg2000_series_opens_in_the_web_viewer(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory(env={"TEACHFILE_WEBVIEWER": "1"})  # as on make-run nodes (harness: off)
    assert send_pynetdicom(node, _ct_series(3)) == [0, 0, 0]
    series = node.get("/series").json()
    assert len(series) == 1
    instance = node.get(f"/series/{series[0]}/instances").json()[0]
    syntax = node.get(f"/instances/{instance['ID']}/metadata/TransferSyntax").text
    assert syntax in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
    plugins = node.get("/plugins").json()
    assert "web-viewer" in plugins

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                http_credentials={"username": node.auth[0], "password": node.auth[1]},
                viewport={"width": 1000, "height": 800})
            page = context.new_page()
            page.goto(f"{node.url}/web-viewer/app/viewer.html?series={series[0]}")
            try:
                page.wait_for_function(f"({_CANVAS_MAX})() > 2000", timeout=30_000)
            finally:
                page.screenshot(path=str(tmp_path / "webviewer.png"))
            lit = page.evaluate(_CANVAS_MAX)
        finally:
            browser.close()
    assert lit > 2000, f"the viewer drew {lit} bright pixels (screenshot in {tmp_path})"

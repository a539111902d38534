"""The portal in a real browser (Debian's Chromium driven by Playwright) against one real node:
library and search, a case's viewer (scrolling and windowing change the displayed pixels),
authoring as a contributor, a viewer who cannot edit (page and API), unknown mode, and a
conference list whose order survives a restart of the node.

A failing step leaves a screenshot in ``$TEACHFILE_ARTIFACTS`` (default: the test's tmp dir)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from portal_data import colour_image, ct_stack
from pydicom.data import get_testdata_file

from harness import Node, free_port, start_node, to_bytes, upload_rest

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (scripts/setup installs it)",
                allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
USERS = {"admin": "admin-pw", "vera": "vera-pw", "carl": "carl-pw"}
ROLES = {"vera": "viewer", "carl": "contributor"}


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("portal-node")
    dicom_port = free_port()
    # The node knows itself as a DICOM node: the admin page echoes it, the case page sends to it.
    config = {"RegisteredUsers": USERS, "Teachfile": {"Roles": ROLES},
              "DicomModalities": {"itself": ["TEACHFILE", "127.0.0.1", dicom_port]}}
    node = start_node(data, password=USERS["admin"], extra_config=config,
                      dicom_port=dicom_port)
    try:
        for ds in ct_stack(16, seed="lung", description="Lung nodule"):
            assert upload_rest(node, to_bytes(ds)).status_code == 200
        for ds in ct_stack(4, seed="brain", description="Brain case", size=64):
            assert upload_rest(node, to_bytes(ds)).status_code == 200
        mr = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # 10 frames in one instance
        mr.StudyDescription = "Multiframe MR"
        assert upload_rest(node, to_bytes(mr)).status_code == 200
        assert upload_rest(node, to_bytes(colour_image())).status_code == 200
        studies = {node.get(f"/studies/{s}").json()["MainDicomTags"]["StudyDescription"]: s
                   for s in node.get("/studies").json()}
        state = {"node": node, "data": data, "config": config, "studies": studies}
        yield state
    finally:
        state["node"].stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("TEACHFILE_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


class Pages:
    def __init__(self, browser: Any, node: Node, artifacts: Path, name: str) -> None:
        self.browser, self.node, self.artifacts, self.name = browser, node, artifacts, name
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def open(self, user: str, fragment: str = "") -> Any:
        ctx = self.browser.new_context(
            http_credentials={"username": user, "password": USERS[user]},
            viewport={"width": 1280, "height": 860})
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(f"{self.node.url}/teachfile/ui/{fragment}")
        return page

    @contextlib.contextmanager
    def step(self, page: Any, what: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            path = self.artifacts / f"{self.name}-{what}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(path))
            print(f"screenshot of the failing step: {path}; page errors: {self.errors}")
            raise

    def close(self) -> None:
        for c in self.contexts:
            c.close()


@pytest.fixture
def pages(browser: Any, portal: dict[str, Any], artifacts: Path,
          request: pytest.FixtureRequest) -> Iterator[Pages]:
    p = Pages(browser, portal["node"], artifacts, request.node.name)
    yield p
    p.close()
    assert not p.errors, p.errors


def _wait_until(done: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the node never showed the change"
        time.sleep(0.2)


def _canvas_hash(page: Any) -> str:
    data = page.evaluate("() => document.querySelector('.vstage canvas').toDataURL()")
    return hashlib.sha256(data.encode()).hexdigest()


def _wait_drawn(page: Any, frame: int) -> None:
    page.wait_for_function(
        "f => { const v = window.__viewer; return v && v.cache.has(v._key(f)) && "
        "document.querySelector('.vstage canvas').dataset.frame === String(f); }",
        arg=frame, timeout=15000)


def test_library_lists_and_searches(pages: Pages) -> None:
    page = pages.open("vera")
    with pages.step(page, "library"):
        page.wait_for_selector(".card")
        assert page.locator(".card").count() == 4
        assert page.locator("#lib-status").inner_text().startswith("4 cases")
        assert page.locator(".card img").count() == 4
    with pages.step(page, "search"):
        page.fill("input[name=q]", "nodule")
        page.press("input[name=q]", "Enter")
        page.wait_for_function("() => document.querySelectorAll('.card').length === 1")
        assert "Lung nodule" in page.locator(".card").inner_text()
        assert "q=nodule" in page.url  # the link carries the search


def test_case_viewer_scrolls_and_windows(pages: Pages, portal: dict[str, Any]) -> None:
    study = portal["studies"]["Lung nodule"]
    page = pages.open("vera", f"#/case/{study}")
    with pages.step(page, "open"):
        _wait_drawn(page, 0)
        assert page.locator(".counter").inner_text() == "1 / 16"
        first = _canvas_hash(page)
    with pages.step(page, "scroll-keys"):
        page.focus(".vstage")
        page.keyboard.press("ArrowDown")
        _wait_drawn(page, 1)
        assert page.locator(".counter").inner_text() == "2 / 16"
        second = _canvas_hash(page)
        assert second != first
    with pages.step(page, "scroll-wheel"):
        page.hover(".vstage")
        page.mouse.wheel(0, 120)
        _wait_drawn(page, 2)
        assert "frame=2" in page.url  # the link carries the frame
    with pages.step(page, "slider"):
        page.locator(".slider").fill("15")
        _wait_drawn(page, 15)
        assert page.locator(".counter").inner_text() == "16 / 16"
    with pages.step(page, "window-preset"):
        before = _canvas_hash(page)
        page.select_option(".preset", "CT lung")
        page.wait_for_function("() => document.querySelector('.vstage canvas')"
                               ".dataset.wl === '1500/-600'")
        assert _canvas_hash(page) != before
    with pages.step(page, "window-drag"):
        before = _canvas_hash(page)
        box = page.locator(".vstage").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x - 150, y + 40, steps=5)
        page.mouse.up()
        wl = page.evaluate("() => document.querySelector('.vstage canvas').dataset.wl")
        assert wl != "1500/-600"
        assert _canvas_hash(page) != before
    with pages.step(page, "zoom"):
        before = _canvas_hash(page)
        page.click(".zin")
        assert _canvas_hash(page) != before
    with pages.step(page, "prefetch"):
        # Every frame is in memory once loaded: each step draws at once, without a request
        # (how fast is for scripts/bench-portal to say, not for a test).
        page.wait_for_function("() => window.__viewer.cache.size === 16", timeout=15000)
        shown = page.evaluate("""() => { const v = window.__viewer; v.stats.shown = [];
            for (let i = 14; i >= 0; i--) v.go(i); return v.stats.shown.map(s => s.frame); }""")
        assert shown == list(range(14, -1, -1))


def _pixel(page: Any, fx: float, fy: float) -> list[int]:
    return page.evaluate("""([fx, fy]) => { const c = document.querySelector('.vstage canvas');
        const d = c.getContext('2d').getImageData(Math.floor(c.width * fx),
                                                  Math.floor(c.height * fy), 1, 1).data;
        return [d[0], d[1], d[2]]; }""", [fx, fy])


def test_multiframe_and_colour(pages: Pages, portal: dict[str, Any]) -> None:
    page = pages.open("vera", f"#/case/{portal['studies']['Multiframe MR']}")
    with pages.step(page, "multiframe"):
        _wait_drawn(page, 0)
        assert page.locator(".counter").inner_text() == "1 / 10"
        first = _canvas_hash(page)
        page.focus(".vstage")
        page.locator(".slider").fill("9")
        _wait_drawn(page, 9)
        assert _canvas_hash(page) != first
    page.goto(f"{portal['node'].url}/teachfile/ui/#/case/{portal['studies']['Colour case']}")
    with pages.step(page, "colour"):
        page.wait_for_function("() => document.querySelector('.counter')?.innerText === '1 / 1'")
        _wait_drawn(page, 0)
        top, middle = _pixel(page, 0.5, 0.15), _pixel(page, 0.5, 0.5)
        assert top[0] > 150 and top[1] < 60 and top[2] < 60, top  # red band
        assert middle[1] > 150 and middle[0] < 60, middle  # green band


def test_a_copied_link_opens_the_same_case_series_and_frame(pages: Pages,
                                                            portal: dict[str, Any]) -> None:
    study = portal["studies"]["Lung nodule"]
    page = pages.open("vera", f"#/case/{study}")
    with pages.step(page, "copy"):
        _wait_drawn(page, 0)
        page.locator(".slider").fill("5")
        _wait_drawn(page, 5)
        page.click("#copylink")
        # the handler sets it after the clipboard write, which it awaits
        page.wait_for_function("() => window.__copiedLink")
        link = page.evaluate("() => window.__copiedLink")
        assert "frame=5" in link and "series=" in link
    other = pages.open("carl")
    other.goto(link)
    with pages.step(other, "open-link"):
        _wait_drawn(other, 5)
        assert other.locator(".counter").inner_text() == "6 / 16"
        assert other.locator("#case-title").inner_text() == "Lung nodule"


def test_admin_page_shows_counters_fingerprint_and_echoes_nodes(pages: Pages,
                                                               portal: dict[str, Any]) -> None:
    node: Node = portal["node"]
    page = pages.open("admin", "#/admin")
    with pages.step(page, "admin"):
        page.wait_for_function("() => document.querySelector('td.echo')?.innerText"
                               ".startsWith('echo ok')", timeout=20000)
        assert page.locator("#fingerprint").inner_text() == node.status()["key_fingerprint"]
        assert "received" in page.locator("table.counters").inner_text()
    viewer = pages.open("vera", "#/admin")
    with pages.step(viewer, "not-admin"):
        viewer.wait_for_function("() => document.body.dataset.ready === 'admin'")
        assert "needs the admin role" in viewer.locator("main").inner_text()


def test_author_as_contributor(pages: Pages, portal: dict[str, Any]) -> None:
    study = portal["studies"]["Lung nodule"]
    page = pages.open("carl", f"#/case/{study}")
    with pages.step(page, "edit"):
        page.click("#edit")
        page.fill("[name=history]", "Smoker, cough for 3 months. Seen 12/03/2021")
        warn = page.locator("[data-warn=history]")
        assert "date" in warn.inner_text()
        page.fill("[name=history]", "Smoker, cough for 3 months.")
        assert warn.inner_text() == ""
        page.fill("[name=findings]", "Spiculated nodule in the right upper lobe.")
        page.fill("[name=diagnosis]", "Adenocarcinoma of the lung")
        page.fill("[name=differential]", "Granuloma; metastasis")
        page.fill("[name=discussion]", "Spiculation raises the likelihood of malignancy.")
        page.fill("[name=keywords]", "lung, nodule, oncology")
        page.click("#author button[type=submit]")
    with pages.step(page, "saved"):
        page.wait_for_selector("[data-field=diagnosis]")
        assert "Adenocarcinoma" in page.locator("[data-field=diagnosis]").inner_text()
    with pages.step(page, "key-image"):
        _wait_drawn(page, 0)
        page.click("#markkey")
        page.wait_for_function("() => document.querySelector('#keystate').textContent"
                               ".includes('key image')")
    node: Node = portal["node"]
    case = node.get(f"/teachfile/portal/cases/{study}").json()
    assert case["record"]["diagnosis"] == "Adenocarcinoma of the lung"
    assert case["record"]["history"] == "Smoker, cough for 3 months."
    assert case["keywords"] == ["lung", "nodule", "oncology"]
    assert len(case["record"]["key_images"]) == 1
    assert case["series_list"][0]["key_images"] == case["record"]["key_images"]
    # Full-text search reaches the new fields.
    hits = node.get("/teachfile/portal/library", params={"q": "spiculated"}).json()
    assert [c["study"] for c in hits["cases"]] == [study]


def test_viewer_cannot_edit(pages: Pages, portal: dict[str, Any]) -> None:
    study = portal["studies"]["Brain case"]
    page = pages.open("vera", f"#/case/{study}")
    with pages.step(page, "no-edit"):
        page.wait_for_selector("#copylink")
        assert page.locator("#edit").count() == 0
        assert page.locator("#markkey").count() == 0
        assert page.locator("#nav-admin").is_hidden()
    node: Node = portal["node"]
    r = requests.put(f"{node.url}/teachfile/portal/cases/{study}", json={"diagnosis": "x"},
                     auth=("vera", USERS["vera"]), timeout=30)
    assert r.status_code == 403
    r = requests.put(f"{node.url}/teachfile/portal/conferences", json={"lists": []},
                     auth=("vera", USERS["vera"]), timeout=30)
    assert r.status_code == 403
    r = requests.post(f"{node.url}/teachfile/portal/nodes/x/echo",
                      auth=("carl", USERS["carl"]), timeout=30)
    assert r.status_code == 403
    assert node.get(f"/teachfile/portal/cases/{study}").json()["record"]["diagnosis"] == ""


def test_unknown_mode_hides_the_answer_until_revealed(pages: Pages,
                                                      portal: dict[str, Any]) -> None:
    study = portal["studies"]["Lung nodule"]
    page = pages.open("vera", "#/library?unknown=1&q=adenocarcinoma")
    with pages.step(page, "search-hidden"):
        page.wait_for_selector("#lib-status")
        page.wait_for_function("() => document.body.dataset.ready === 'library'")
        assert page.locator(".card").count() == 0  # the diagnosis is not searched
    page.goto(f"{portal['node'].url}/teachfile/ui/#/library?unknown=1&q=nodule")
    with pages.step(page, "results-hidden"):
        page.wait_for_selector(".card")
        assert page.locator(".card").count() == 1
        assert "Adenocarcinoma" not in page.locator(".card").inner_text()
        page.click(".card")
    with pages.step(page, "case-hidden"):
        page.wait_for_selector("#reveal")
        assert "unknown=1" in page.url
        text = page.locator("#record").inner_text()
        assert "Adenocarcinoma" not in text and "Granuloma" not in text
        assert "Spiculated nodule" in text  # findings stay
        assert "Adenocarcinoma" not in page.content()
    with pages.step(page, "reveal"):
        page.click("#reveal")
        page.wait_for_function("() => document.querySelector('#record').innerText"
                               ".includes('Adenocarcinoma')")
    # The API hides the same fields.
    node: Node = portal["node"]
    hidden = node.get(f"/teachfile/portal/cases/{study}", params={"unknown": "1"}).json()
    assert "diagnosis" not in hidden["record"] and "discussion" not in hidden["record"]


def test_conference_list_keeps_its_order_across_a_restart(pages: Pages,
                                                          portal: dict[str, Any]) -> None:
    lung, brain = portal["studies"]["Lung nodule"], portal["studies"]["Brain case"]
    page = pages.open("carl", "#/conferences")
    with pages.step(page, "create"):
        page.wait_for_selector("#newlist")
        page.fill("#newlist input", "Friday conference")
        page.click("#newlist button")
        page.wait_for_selector(".conf[data-list='Friday conference']")
    for study, title in ((lung, "Lung nodule"), (brain, "Brain case")):
        page.goto(f"{portal['node'].url}/teachfile/ui/#/case/{study}")
        with pages.step(page, "add"):
            page.wait_for_function(
                f"() => document.querySelector('#case-title')?.innerText === '{title}'")
            page.wait_for_selector("#addto option:has-text('Friday conference')", state="attached")
            page.select_option("#addto", "Friday conference")
            # Asked of the node from here: a wait_for_function predicate that returns a
            # Promise counts as true at once (it is truthy), which let this step race the PUT.
            _wait_until(lambda s=study: s in portal["node"].get(
                "/teachfile/portal/conferences").json()["lists"][0]["cases"])
    page.goto(f"{portal['node'].url}/teachfile/ui/#/conferences")
    with pages.step(page, "reorder"):
        page.wait_for_selector(".conf li")
        page.click(f"li[data-study='{brain}'] button[data-up]")
        page.wait_for_function(
            f"() => document.querySelector('.conf li').dataset.study === '{brain}'")
    # Restart the node on the same data and ports.
    node: Node = portal["node"]
    node.stop()
    portal["node"] = start_node(portal["data"], password=USERS["admin"],
                                extra_config=portal["config"], dicom_port=node.dicom_port,
                                http_port=node.http_port)
    lists = portal["node"].get("/teachfile/portal/conferences").json()["lists"]
    assert lists == [{"name": "Friday conference", "cases": [brain, lung]}]
    page.goto(f"{portal['node'].url}/teachfile/ui/#/conferences")
    with pages.step(page, "after-restart"):
        page.reload()
        page.wait_for_selector(".conf li")
        order = page.eval_on_selector_all(".conf li", "els => els.map(e => e.dataset.study)")
        assert order == [brain, lung]
    with pages.step(page, "present"):
        page.click(".conf a.button")
        page.wait_for_selector("#reveal")
        page.wait_for_function("() => document.querySelector('#ppos').innerText"
                               ".includes('case 1 of 2')")
        assert page.locator("#case-title").inner_text() == "Brain case"


def test_explain_page_shows_what_the_node_would_change(pages: Pages, portal: dict[str, Any],
                                                       tmp_path: Path) -> None:
    node: Node = portal["node"]
    before = sorted(node.instances())
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "PHIQEXPLAIN^PORTAL"
    path = tmp_path / "mine.dcm"
    path.write_bytes(to_bytes(ds))
    page = pages.open("carl", "#/explain")
    with pages.step(page, "explain"):
        page.wait_for_selector("#explainfile", state="attached")
        page.set_input_files("#explainfile", str(path))
        page.wait_for_selector("#explain-decision")
        assert "store" in page.locator("#explain-decision").inner_text()
        table = page.locator(".explain-table").inner_text()
        assert "PatientName" in table and "PHIQEXPLAIN^PORTAL" in table and "table" in table
    assert sorted(node.instances()) == before, "explaining must store nothing"
    assert "PHIQEXPLAIN" not in node.log_text()
    # A viewer is not offered the page.
    viewer = pages.open("vera", "#/library")
    with pages.step(viewer, "viewer-nav"):
        viewer.wait_for_selector("#nav-explain", state="attached")
        assert viewer.locator("#nav-explain").is_hidden()


def test_case_page_offers_nifti_when_the_node_can(pages: Pages, portal: dict[str, Any]) -> None:
    import io
    import zipfile

    node: Node = portal["node"]
    if not node.get("/teachfile/portal/me").json().get("nifti"):
        pytest.skip("this node has no dcm2niix (scripts/setup installs it)")
    study = portal["studies"]["Brain case"]
    page = pages.open("carl", f"#/case/{study}")
    with pages.step(page, "nifti-link"):
        page.wait_for_selector(f"a[href$='/cases/{study}/nifti']")
    r = node.get(f"/teachfile/portal/cases/{study}/nifti")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert any(n.endswith(".nii.gz") for n in names) and any(n.endswith(".json") for n in names)

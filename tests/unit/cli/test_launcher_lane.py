"""Lane selection in the launcher ($TEACHFILE_ORTHANC), without starting Orthanc."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from teachfile.cli import launcher
from teachfile.errors import ConfigError


def test_the_default_lane_is_the_systems_orthanc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEACHFILE_ORTHANC", raising=False)
    assert launcher.current_lane() == "system"
    assert launcher.lane_root() is None
    assert launcher.lane_command(["/usr/sbin/Orthanc", "x.json"]) == ["/usr/sbin/Orthanc",
                                                                        "x.json"]


def test_an_unknown_lane_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="TEACHFILE_ORTHANC"):
        launcher.current_lane({"TEACHFILE_ORTHANC": "1.13"})


def test_a_missing_root_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(launcher, "LANE_ROOT", tmp_path / "nothing")
    with pytest.raises(ConfigError, match="scripts/setup-lane"):
        launcher.lane_root("latest")


@pytest.mark.skipif(os.geteuid() != 0, reason="the latest lane's command needs root")
def test_the_latest_lane_binds_paths_once_and_execs_the_program(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "sbin").mkdir(parents=True)
    (root / "usr" / "sbin" / "Orthanc").touch()
    monkeypatch.setattr(launcher, "LANE_ROOT", root)
    data = tmp_path / "data"
    cmd = launcher.lane_command(["/usr/sbin/Orthanc", "c.json"],
                                [data, data / "storage", launcher.REPO_DIR / "var"],
                                lane="latest")
    binds = cmd[cmd.index(str(root)) + 2:cmd.index("--", cmd.index(str(root)))]
    # Every path is covered by one bind (its own or a parent's: the checkout may itself be in
    # the temporary directory); nested paths are not bound again; every bound path exists.
    def covered(p: Path) -> bool:
        return any(p == Path(b) or Path(b) in p.parents for b in binds)

    assert all(covered(p) for p in (launcher.REPO_DIR, data, data / "storage"))
    assert str(launcher.REPO_DIR / "var") not in binds and str(data / "storage") not in binds
    assert len(binds) == len(set(binds))
    assert all(Path(b).is_dir() for b in binds)
    assert cmd[-2:] == ["/usr/sbin/Orthanc", "c.json"]
    # The shell part is valid and ends in exec: the process started is the program itself.
    script = cmd[cmd.index("-c") + 1]
    assert subprocess.run(["/bin/sh", "-n", "-c", script]).returncode == 0
    assert "exec chroot" in script


def test_allow_threads_only_where_the_plugin_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for version, want in (("4.0-3", {}), ("4.3-1", {"AllowThreads": True}),
                          ("7.1+ds-1+b2", {"AllowThreads": True})):
        monkeypatch.setattr(launcher, "lane_packages",
                            lambda lane=None, v=version: {"orthanc-python": v})
        assert launcher.python_plugin_options() == want


def test_the_web_viewer_is_loaded_unless_turned_off() -> None:
    """On every node by default (issue 20); TEACHFILE_WEBVIEWER=0 leaves it out."""
    viewer = str(launcher.ORTHANC_PLUGINS / launcher.WEBVIEWER_FILE)
    assert viewer in launcher.plugin_paths({})
    assert viewer in launcher.plugin_paths({"TEACHFILE_WEBVIEWER": "1"})
    assert viewer not in launcher.plugin_paths({"TEACHFILE_WEBVIEWER": "0"})
    with pytest.raises(launcher.ConfigError, match="TEACHFILE_WEBVIEWER"):
        launcher.plugin_paths({"TEACHFILE_WEBVIEWER": "maybe"})


def test_prepare_reads_the_web_viewer_setting_from_its_environment(tmp_path: Path) -> None:
    """The environment given to prepare (the harness's, a service's), not the process's."""
    viewer = str(launcher.ORTHANC_PLUGINS / launcher.WEBVIEWER_FILE)
    settings = launcher.NodeSettings(aet="T", dicom_port=1, http_port=2, data_dir=tmp_path / "a")
    off = launcher.prepare(settings, {"TEACHFILE_ADMIN_PASSWORD": "x", "TEACHFILE_WEBVIEWER": "0"})
    assert viewer not in off.config["Plugins"]
    on = launcher.prepare(settings, {"TEACHFILE_ADMIN_PASSWORD": "x"})
    assert viewer in on.config["Plugins"]

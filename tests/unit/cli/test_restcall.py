"""The native plugin for GIL-free REST calls (native/restcall.c) and its Python side.

Outside Orthanc the plugin is never initialised, so these tests check what can be checked
without it: the build, which lanes list it (first), and that an uninitialised library is
refused rather than called. ``test_answering.py::test_concurrent_uploads_and_c_stores_all_complete``
checks what it is for, on real Orthanc processes.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from teachfile.cli import launcher
from teachfile.node import restcall

SOURCE = launcher.REPO_DIR / "native" / "restcall.c"


def _library() -> Path:
    return Path(launcher.sys.prefix) / "lib" / restcall.LIBRARY_NAME


def test_the_source_compiles_without_warnings(tmp_path: Path) -> None:
    out = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                          str(tmp_path / "r.so"), str(SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_built_plugin_is_the_source_in_the_checkout() -> None:
    assert _library().stat().st_mtime >= SOURCE.stat().st_mtime


def test_it_exports_an_orthanc_plugin_and_the_call() -> None:
    lib = ctypes.CDLL(str(_library()))
    for name in ("OrthancPluginInitialize", "OrthancPluginFinalize", "OrthancPluginGetName",
                 "OrthancPluginGetVersion", "teachfile_restcall", "teachfile_restcall_free",
                 "teachfile_restcall_ready", "teachfile_take_instances",
                 "teachfile_set_transcoder", "teachfile_transcoded"):
        assert hasattr(lib, name), name


def test_the_transcoder_cannot_be_installed_before_orthanc_initialised_it() -> None:
    lib = ctypes.CDLL(str(_library()))
    lib.teachfile_set_transcoder.restype = ctypes.c_int32
    lib.teachfile_transcoded.restype = ctypes.c_int32
    assert lib.teachfile_set_transcoder(None) == -1
    assert lib.teachfile_transcoded(None, b"x", 1) == -1


def test_an_uninitialised_library_is_refused_not_called() -> None:
    with pytest.raises(RuntimeError, match="not loaded by Orthanc"):
        restcall.RestCall(_library())


def test_the_call_itself_refuses_before_orthanc_initialised_it() -> None:
    lib = ctypes.CDLL(str(_library()))
    lib.teachfile_restcall.restype = ctypes.c_int32
    answer = restcall._Buffer()
    code = lib.teachfile_restcall(0, b"/system", None, 0, ctypes.byref(answer))
    assert code == 6  # OrthancPluginErrorCode_BadSequenceOfCalls
    assert not answer.data


def test_the_library_is_found_in_orthancs_plugin_list() -> None:
    lib = str(_library())
    assert restcall.find_library(["/usr/share/orthanc/plugins/libOrthancPython.so", lib]) == \
        Path(lib)
    assert restcall.find_library(["/usr/share/orthanc/plugins/libOrthancPython.so"]) is None
    assert restcall.find_library(None) is None


@pytest.mark.parametrize("version", ["4.0-3", "4.3-1", "7.1+ds-1+b2"])
def test_listed_first_on_every_lane(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """First, since Orthanc initialises plugins in list order: the Python plugin looks for it
    while it loads, and its /instances must be registered before any other. On every lane: it
    also owns the uploads (Explorer's refusals as 4xx, 413 before a body is read)."""
    monkeypatch.setattr(launcher, "lane_packages",
                        lambda lane=None, v=version: {"orthanc-python": v})
    paths = launcher.plugin_paths({})
    assert paths[0] == str(_library())
    assert paths.count(str(_library())) == 1


def test_it_takes_the_uploads_only_once_orthanc_initialised_it() -> None:
    lib = ctypes.CDLL(str(_library()))
    lib.teachfile_take_instances.argtypes = [ctypes.c_char_p, ctypes.c_uint64]
    lib.teachfile_take_instances.restype = ctypes.c_int32
    assert lib.teachfile_take_instances(b"/teachfile-intake/instances", 1 << 20) == -1


def test_a_missing_library_says_to_run_setup(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(launcher, "lane_packages", lambda lane=None: {"orthanc-python": "4.0"})
    monkeypatch.setattr(launcher.sys, "prefix", str(tmp_path))
    with pytest.raises(launcher.ConfigError, match="run scripts/setup"):
        launcher.restcall_plugin()

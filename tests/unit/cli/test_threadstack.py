"""The thread-stack preload (native/threadstack.c) that every Orthanc the project starts loads.

Loaded here with ctypes: the shim's ``pthread_attr_setstacksize`` is called directly, so these
tests check its rule (never below 8 MiB, larger requests kept) without starting Orthanc; the
integration test ``test_lane.py::test_gdcm_transcodings_on_http_threads_keep_orthanc_alive``
checks what it is for.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from teachfile.cli import launcher

MIB = 1 << 20


@pytest.fixture(scope="module")
def shim() -> ctypes.CDLL:
    return ctypes.CDLL(str(launcher.thread_stack_shim()))


def _stack_after_set(shim: ctypes.CDLL, size: int) -> int:
    libc = ctypes.CDLL(None)
    attr = ctypes.create_string_buffer(128)  # pthread_attr_t is 56 bytes on x86-64 glibc
    assert libc.pthread_attr_init(attr) == 0
    try:
        shim.pthread_attr_setstacksize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        assert shim.pthread_attr_setstacksize(attr, size) == 0
        got = ctypes.c_size_t()
        assert libc.pthread_attr_getstacksize(attr, ctypes.byref(got)) == 0
        return got.value
    finally:
        libc.pthread_attr_destroy(attr)


@pytest.mark.parametrize("asked", [16384, 102400, 4 * MIB])
def test_small_requests_get_8_mib(shim: ctypes.CDLL, asked: int) -> None:
    assert _stack_after_set(shim, asked) == 8 * MIB


def test_larger_requests_are_kept(shim: ctypes.CDLL) -> None:
    assert _stack_after_set(shim, 32 * MIB) == 32 * MIB


def test_the_built_shim_is_the_source_in_the_checkout() -> None:
    """setup rebuilds it when the source is newer; a stale build would hide a change."""
    source = launcher.REPO_DIR / "native" / "threadstack.c"
    assert launcher.thread_stack_shim().stat().st_mtime >= source.stat().st_mtime


def test_orthanc_env_preloads_the_shim_first_once(tmp_path: Path) -> None:
    shim = str(launcher.thread_stack_shim())
    env = launcher.orthanc_env({"LD_PRELOAD": f"/x/other.so:{shim}"})
    assert env["LD_PRELOAD"] == f"{shim}:/x/other.so"
    assert launcher.orthanc_env({})["LD_PRELOAD"] == shim


def test_a_missing_shim_says_to_run_setup(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(launcher.sys, "prefix", str(tmp_path))
    with pytest.raises(launcher.ConfigError, match="run scripts/setup"):
        launcher.orthanc_env({})


def test_the_source_compiles_without_warnings(tmp_path: Path) -> None:
    source = launcher.REPO_DIR / "native" / "threadstack.c"
    out = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                          str(tmp_path / "s.so"), str(source), "-ldl"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

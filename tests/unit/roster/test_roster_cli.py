"""``teachfile roster ...`` in-process: exit codes 0 (ok), 1 (invalid roster), 2 (usage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from teachfile.cli.main import main
from teachfile.roster.remote import diff_modalities

EXAMPLE = Path(__file__).resolve().parents[3] / "orthanc-config" / "roster.example.yaml"


def test_check_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roster", "check", str(EXAMPLE)]) == 0
    assert "OK, server TEACHFILE and 20 participants" in capsys.readouterr().out


def test_check_invalid_prints_every_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "roster.yaml"
    bad.write_text(EXAMPLE.read_text().replace("aet: TEACHFILE", "aet: teachfile")
                   .replace("port: 11112", "port: 111120").replace("  generate:", "  generat:"))
    assert main(["roster", "check", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{bad}:17:8: AET 'teachfile' must be upper case (did you mean 'TEACHFILE'?)"
    assert err[1] == f"{bad}:29:11: defaults port must be between 1 and 65535 (got 111120)"
    assert err[2].startswith(f"{bad}:33:3: unknown key 'generat' in participants; did you mean"
                             " 'generate'?")
    assert err[-1] == f"{bad}: 3 errors"


@pytest.mark.parametrize("argv", [
    ["roster", "check"],
    ["roster", "render", str(EXAMPLE)],  # -o is required
    ["roster", "apply", str(EXAMPLE)],  # --url is required
    ["roster", "bogus"],
])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_missing_files_are_usage_errors(tmp_path: Path) -> None:
    assert main(["roster", "check", str(tmp_path / "nope.yaml")]) == 2
    assert main(["roster", "render", str(EXAMPLE), "-o", str(tmp_path),
                 "--templates", str(tmp_path / "nope")]) == 2
    assert main(["roster"]) == 2


def test_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roster", "render", str(EXAMPLE), "-o", str(tmp_path / "out")]) == 0
    assert "wrote 44 files" in capsys.readouterr().out
    assert (tmp_path / "out" / "server" / "orthanc.json").is_file()
    assert (tmp_path / "out" / "handouts" / "workshop20.html").is_file()


def test_render_with_broken_template_exits_1(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "compose.yaml.j2").write_text("services: [\n")
    assert main(["roster", "render", str(EXAMPLE), "-o", str(tmp_path / "out"),
                 "--templates", str(tmp_path / "tpl")]) == 1


def test_apply_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 on loopback (discard) is closed on a test machine; nothing leaves the host.
    assert main(["roster", "apply", str(EXAMPLE), "--url", "http://127.0.0.1:9"]) == 1
    assert "nothing listens on port 9 of 127.0.0.1" in capsys.readouterr().err


def test_diff_modalities() -> None:
    base = {"AET": "A", "Host": "127.0.0.1", "Port": 104, "Manufacturer": "Generic",
            "AllowEcho": True, "AllowFind": True, "AllowMove": True, "AllowGet": False,
            "AllowStore": True}
    current = {"same": {**base, "Timeout": 0, "LocalAet": ""}, "moved": base, "gone": base}
    desired = {"same": base, "moved": {**base, "Port": 105}, "new": {**base, "AET": "N"}}
    diff = diff_modalities(current, desired)
    assert set(diff.added) == {"new"} and set(diff.changed) == {"moved"}
    assert diff.removed == ("gone",)
    assert diff.lines() == ["+ new: N@127.0.0.1:104 [echo find move store]",
                            "~ moved: Port 104 -> 105", "- gone"]
    assert diff_modalities(desired, desired).empty


def test_non_utf8_roster_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "roster.yaml"
    bad.write_bytes(b"title: ok\ntitle2: caf\xe9\n")
    assert main(["roster", "check", str(bad)]) == 1
    assert f"{bad}:2:1: the roster is not UTF-8 text" in capsys.readouterr().err

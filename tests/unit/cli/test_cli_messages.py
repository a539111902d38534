"""What the ``teachfile`` command tells its user: a real description, help for every option,
and failures that say what to change instead of naming an exception class."""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from teachfile.cli.main import build_parser, main
from teachfile.neterrors import explain

_CLASS_NAME = re.compile(r"\b(Invalid\w+|Missing\w+|\w+Error|\w+Timeout|\w+Exception)\b")


def _parsers(parser: argparse.ArgumentParser, path: str = "teachfile"
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help line"
                yield from _parsers(sub, f"{path} {name}")


def test_help_describes_the_command_and_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    assert "thin shell" not in text and "``" not in text  # not the module's docstring
    assert "de-identified" in text and "--help" in text
    missing = [f"{path}: {a.option_strings or a.dest}"
               for path, p in _parsers(parser) for a in p._actions
               if not isinstance(a, argparse._SubParsersAction)
               and not a.help]  # SUPPRESS: an option hidden on purpose (tests only)
    assert missing == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("url, expected", [
    ("127.0.0.1:8042", "--url needs http:// or https://"),
    ("ftp://127.0.0.1:8042", "--url needs http:// or https://"),
    ("http://", "--url is not a valid URL"),
])
def test_a_bad_url_says_what_to_type(url: str, expected: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", "--url", url, "--password", "x", "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert expected in err and not _CLASS_NAME.search(err), err


def test_a_closed_port_says_nothing_listens_there(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    for argv in (["backup", "--url", f"http://127.0.0.1:{port}", "--password", "x", "-o",
                  str(tmp_path / "b")],
                 ["export", "--url", f"http://127.0.0.1:{port}", "--study", "1.2.3", "-o",
                  str(tmp_path / "c.zip")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"nothing listens on port {port} of 127.0.0.1" in err, err
        assert not _CLASS_NAME.search(err), err


def test_a_silent_node_and_an_unknown_host_are_explained() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(requests.RequestException) as exc:
            requests.get(url, timeout=0.5)
        text = explain(exc.value, url, 0.5)
    assert "did not answer within 0.5 s" in text, text
    # Name resolution is not tried here (no traffic off loopback): the error as requests
    # raises it, built by hand.
    gai = socket.gaierror(-2, "Name or service not known")
    err = requests.exceptions.ConnectionError(gai)
    assert explain(err, "http://nosuchhost:8042") == ("cannot resolve the host name "
                                                      "'nosuchhost': check --url")

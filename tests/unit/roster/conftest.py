"""The example roster, loaded and rendered once for the rendering tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from teachfile.roster import Roster, load_roster
from teachfile.roster.render import render

EXAMPLE = Path(__file__).resolve().parents[3] / "orthanc-config" / "roster.example.yaml"


@pytest.fixture(scope="module")
def roster() -> Roster:
    return load_roster(EXAMPLE, environ={})


@pytest.fixture(scope="module")
def outputs(roster: Roster) -> dict[str, str]:
    return render(roster)

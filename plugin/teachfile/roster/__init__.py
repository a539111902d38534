"""Roster -> configuration generator: one YAML file in, every workshop configuration out.

``model`` validates the roster into dataclasses (with file positions for every error),
``render`` turns a valid roster into Orthanc, Docker Compose, handout and CSV files, ``remote``
brings a running server's modalities in line with it, and ``cli`` wires these to
``teachfile roster ...``.
"""

from .model import Participant, Plugin, Roster, Server, User, load_roster, parse_roster
from .source import PERMISSIONS, ROLES, Diagnostic, RosterError

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "Diagnostic",
    "Participant",
    "Plugin",
    "Roster",
    "RosterError",
    "Server",
    "User",
    "load_roster",
    "parse_roster",
]

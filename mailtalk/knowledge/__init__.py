"""What mailtalk knows about the protocols, kept as data (TOML files next to this module)."""

from __future__ import annotations

import os
from typing import Any

_HERE = os.path.dirname(__file__)


def read_text(name: str) -> str:
    """The text of the data file ``name`` of this package.

    The files sit next to this module: opened directly, because importlib.resources
    and pathlib cost milliseconds to import, which `mailtalk explain` in a loop feels
    (and a server's start: the zipfile module comes with resources.files).
    """
    with open(os.path.join(_HERE, name), encoding="utf-8") as file:
        return file.read()


def read_data(name: str) -> dict[str, Any]:
    """Parse the TOML file ``name`` of this package; a syntax error names the file."""
    import tomllib  # here: importing the package stays cheap

    text = read_text(name)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{name}: {error}") from error

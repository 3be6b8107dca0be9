"""What mailtalk knows about the protocols, kept as data (TOML files next to this module)."""

from __future__ import annotations

import os
from typing import Any

_HERE = os.path.dirname(__file__)


def read_data(name: str) -> dict[str, Any]:
    """Parse the TOML file ``name`` of this package; a syntax error names the file.

    The files sit next to this module: opened directly, because importlib.resources
    and pathlib cost milliseconds to import, which `mailtalk explain` in a loop feels.
    """
    import tomllib  # here: importing the package stays cheap

    with open(os.path.join(_HERE, name), encoding="utf-8") as file:
        text = file.read()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{name}: {error}") from error

"""What mailtalk knows about the protocols, kept as data (TOML files next to this module)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

_HERE = os.path.dirname(__file__)
_CACHE = os.path.join(_HERE, "__pycache__")


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


def parsed(name: str, part: str, parse: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``parse()``: ``part`` of the TOML file ``name`` as data, kept as JSON in
    ``__pycache__`` beside it and read from there while the file is the same file.

    As Python keeps a module's bytecode, and under the same rule (nothing is written
    with ``PYTHONDONTWRITEBYTECODE`` or into a directory that is not writable): the
    TOML stays what is edited and read by people, the copy only spares a start
    importing tomllib and parsing (3 ms of ``mailtalk serve``'s personality). The
    data is checked by its user as after a parse, wherever it came from.
    """
    import json  # here: importing the package stays cheap

    try:
        info = os.stat(os.path.join(_HERE, name))
    except OSError:
        return parse()
    stamp = [info.st_ino, info.st_size, info.st_mtime_ns]
    kept = os.path.join(_CACHE, f"{name}.{part}.json")
    try:
        with open(kept, encoding="utf-8") as file:
            record = json.load(file)
        if record["stamp"] == stamp and isinstance(record["data"], dict):
            return dict(record["data"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or another file's: parsed again, and kept
    data = parse()
    if not sys.dont_write_bytecode:
        temporary = f"{kept}.{os.getpid()}.tmp"
        try:
            os.makedirs(_CACHE, exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump({"stamp": stamp, "data": data}, file)
            os.replace(temporary, kept)  # a reader sees a whole copy or none
        except (OSError, TypeError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return data

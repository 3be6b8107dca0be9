"""The config file: per-host defaults, as swaks and curl users keep theirs.

``$XDG_CONFIG_HOME/mailtalk/config.toml`` (``~/.config/mailtalk/config.toml`` when that
is unset), or the file ``--config FILE`` or ``$MAILTALK_CONFIG`` names::

    [hosts.work]                  # an alias: mailtalk send --server work
    server = "smtp.example.com"
    port = 587
    tls = "starttls"              # starttls, tls (implicit) or none
    user = "alice"                # the AUTH/login user; the password is NOT kept here
    cafile = "~/work-ca.pem"      # relative to this file's directory
    helo = "laptop.example.com"
    from = "alice@example.com"

    [hosts."mail.example.org"]    # a host name: server defaults to the section's name
    cafile = "ca.pem"

A section is one service (a host and port); a command-line option always wins over
it. Passwords are refused: they belong in ``~/.netrc`` or ``$MAILTALK_PASSWORD``,
never in a file of settings people copy around. Pure: reading and checking only
(``commands/host_defaults.py`` applies it to a command's options).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailtalk.net.target import Target

TLS_MODES = ("starttls", "tls", "none")
_TEXT_KEYS = ("server", "user", "cafile", "helo", "from")
KEYS = (*_TEXT_KEYS, "port", "tls")
# a key that smells of a secret is refused, not ignored: the user meant it to be used
_SECRET_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)


class ConfigError(ValueError):
    """A config file that cannot be used; ``str()`` is one line, ``FILE:LINE: why``."""


@dataclass(frozen=True)
class HostDefaults:
    """One ``[hosts.NAME]`` section, checked; None where the file says nothing."""

    name: str
    server: str  # the section's name when it has no server key
    port: int | None = None
    tls: str | None = None  # one of TLS_MODES
    user: str | None = None
    cafile: str | None = None  # absolute, ~ expanded
    helo: str | None = None
    sender: str | None = None  # the key ``from``


def port_given(authority: str) -> bool:
    """Whether ``[user@]host[:port]`` says a port (a bare IPv6 address does not)."""
    host_port = authority.rpartition("@")[2]
    after = host_port.rpartition("]")[2] if host_port.startswith("[") else host_port
    return after.count(":") == 1


def for_target(target: Target, host: HostDefaults, has_port: bool, tls_given: bool) -> Target:
    """``target`` (from a URL or HOST[:PORT] that named ``host``) with the section's
    server, port (unless ``has_port``), user (unless the target has one) and, for a
    plain target whose TLS mode was not given, implicit TLS from ``tls = "tls"`` (on
    that protocol's implicit-TLS port when the section has no port). The rest of the
    section (cafile, starttls) is the caller's: it is an option, not the target."""
    from mailtalk.net.target import IMPLICIT_TLS_PORT

    tls = target.tls
    if host.tls == "tls" and tls == "none" and not tls_given:
        tls = "implicit"
    port = target.port
    if not has_port:
        port = host.port or (IMPLICIT_TLS_PORT[target.protocol] if tls != target.tls else port)
    return replace(target, host=host.server, port=port, tls=tls, user=target.user or host.user)


def default_path(variables: Mapping[str, str]) -> Path:
    """Where the file is looked for without --config or $MAILTALK_CONFIG (XDG base
    directories: a relative $XDG_CONFIG_HOME is ignored, as the spec says)."""
    base = variables.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(variables.get("HOME") or str(Path.home()), ".config")
    return Path(base) / "mailtalk" / "config.toml"


def chosen_path(explicit: str | None, variables: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read and whether it must exist: --config, then $MAILTALK_CONFIG
    (both must), then the XDG default (may be absent)."""
    if explicit:
        return Path(explicit).expanduser(), True
    if variables.get("MAILTALK_CONFIG"):
        return Path(variables["MAILTALK_CONFIG"]).expanduser(), True
    return default_path(variables), False


def load(path: Path, required: bool) -> dict[str, HostDefaults]:
    """The hosts the file at ``path`` defines, by section name; {} for an absent
    optional file. Raises ConfigError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such config file") from None
        return {}
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the config file: {reason}") from None
    return parse(text, str(path))


def parse(text: str, shown: str) -> dict[str, HostDefaults]:
    """The hosts of a config file's ``text``; ``shown`` names it in errors."""
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = found.group(1) if found else "1"
        why = message[: found.start()].strip() if found else message
        raise ConfigError(f"{shown}:{line}: not valid TOML: {why}") from None
    base = Path(shown).parent
    hosts: dict[str, HostDefaults] = {}
    for key, value in document.items():
        if key != "hosts":
            where = _line_of(text, None, key)
            raise ConfigError(f"{shown}:{where}: unknown table or key {key!r} (only [hosts.NAME])")
        if not isinstance(value, dict):
            where = _line_of(text, None, key)
            raise ConfigError(f"{shown}:{where}: hosts must be tables, [hosts.NAME]")
        for name, section in value.items():
            hosts[name] = _host(name, section, text, shown, base)
    return hosts


def _host(name: str, section: object, text: str, shown: str, base: Path) -> HostDefaults:
    def fail(key: str | None, why: str) -> ConfigError:
        return ConfigError(f"{shown}:{_line_of(text, name, key)}: [hosts.{name}] {why}")

    if not isinstance(section, dict):
        raise fail(None, "must be a table")
    for key, value in section.items():
        if _SECRET_KEY.search(key):
            raise fail(key, f"{key}: passwords are not kept in the config file; put them "
                       "in ~/.netrc or $MAILTALK_PASSWORD")
        if key not in KEYS:
            raise fail(key, f"unknown key {key!r} (keys: {', '.join(KEYS)})")
        if key in _TEXT_KEYS and (not isinstance(value, str) or not value.strip()):
            raise fail(key, f"{key} must be a non-empty string")
    port = section.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 < port < 65536):
        raise fail("port", "port must be a number from 1 to 65535")
    tls = section.get("tls")
    if tls is not None and tls not in TLS_MODES:
        raise fail("tls", f"tls must be one of {', '.join(TLS_MODES)}")
    cafile = section.get("cafile")
    if cafile is not None:
        cafile = str(base / Path(cafile).expanduser())
    return HostDefaults(
        name=name,
        server=section.get("server", name),
        port=port,
        tls=tls,
        user=section.get("user"),
        cafile=cafile,
        helo=section.get("helo"),
        sender=section.get("from"),
    )


def _line_of(text: str, section: str | None, key: str | None) -> int:
    """The line of ``key`` in ``[hosts.section]`` (or at the top), for error messages;
    the section's header when the key is not found, else 1."""
    header = re.compile(r"^\s*\[\s*hosts\s*\.\s*(\"?)" + re.escape(section or "") + r"\1\s*\]")
    key_line = re.compile(r"^\s*(\"?)" + re.escape(key or "") + r"\1\s*=") if key else None
    inside = section is None
    found = 1
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("["):
            if inside and section is not None:
                break
            inside = bool(section is not None and header.match(line))
            if inside:
                found = number
            elif section is None and key and re.match(r"^\s*\[\s*" + re.escape(key) + r"\b", line):
                return number
            continue
        if inside and key_line and key_line.match(line):
            return number
    return found

"""RFC 3461 DSN parameters as a server reads them: NOTIFY= and ORCPT= on RCPT, RET= and
ENVID= on MAIL. Pure functions; each returns the value as kept or raises ValueError
with a sentence saying what is wrong (the server puts it in its 501)."""

from __future__ import annotations

import re
from typing import Final

NOTIFY_WORDS: Final = ("SUCCESS", "FAILURE", "DELAY")
RET_VALUES: Final = ("FULL", "HDRS")
# RFC 3461 4.4: ENVID is at most 100 characters; 4.2: ORCPT at most 500.
MAX_ENVID: Final = 100
MAX_ORCPT: Final = 500

# RFC 3461 4: xtext = *( xchar / hexchar ), hexchar = "+" 2(upper-case hex digit);
# xchar is "!" to "~" except "+" and "=".
_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR: Final = re.compile(r"\+([0-9A-F]{2})")
_ADDR_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def parse_notify(value: str) -> str:
    """NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1)."""
    words = [word.upper() for word in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if any(word not in NOTIFY_WORDS for word in words) or len(set(words)) != len(words):
        raise ValueError("NOTIFY takes NEVER, or one or more of SUCCESS,FAILURE,DELAY")
    return ",".join(words)


def parse_ret(value: str) -> str:
    """RET=FULL or RET=HDRS (RFC 3461 4.3)."""
    if value.upper() not in RET_VALUES:
        raise ValueError("RET takes FULL or HDRS")
    return value.upper()


def decode_xtext(value: str) -> str:
    """The text an xtext stands for; ValueError if it is not xtext."""
    if not value.isascii() or _XTEXT.fullmatch(value) is None:
        raise ValueError("not xtext (RFC 3461 4: printable ASCII, with +XX for +, = and the rest)")
    raw = _HEXCHAR.sub(lambda match: chr(int(match.group(1), 16)), value)
    return raw.encode("latin-1").decode("utf-8", errors="backslashreplace")


def parse_envid(value: str) -> str:
    """ENVID=xtext (RFC 3461 4.4), kept as sent (encoded)."""
    if not value or len(value) > MAX_ENVID:
        raise ValueError(f"ENVID takes 1 to {MAX_ENVID} characters of xtext")
    decode_xtext(value)
    return value


def parse_orcpt(value: str, smtputf8: bool = False) -> str:
    """ORCPT=addr-type;xtext (RFC 3461 4.2), kept as sent; utf-8 addr-type (RFC 6533)
    may carry UTF-8 as it is once SMTPUTF8 is on."""
    kind, semicolon, address = value.partition(";")
    if not semicolon or _ADDR_TYPE.fullmatch(kind) is None or not address:
        raise ValueError("ORCPT takes addr-type;address, e.g. rfc822;user@example.com")
    if len(value) > MAX_ORCPT:
        raise ValueError(f"ORCPT is at most {MAX_ORCPT} characters")
    if not (smtputf8 and kind.lower() == "utf-8" and not address.isascii()):
        decode_xtext(address)
    return value

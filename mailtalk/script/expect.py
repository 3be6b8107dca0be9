"""What an ``S:`` line expects of a reply, and whether a reply meets it.

``S: 250``, ``S: 2xx``, ``S: 5.7.1``, ``S: 250 2.1.5``, ``S: +OK``, ``S: NO``, any of
those followed by a text pattern (``S: 554 *Relay access denied*``, ``S: 250
/queued as [A-Z0-9]+/``), or ``S: *`` for any reply. ``S: * ...`` (IMAP) expects an
untagged response among those the command brought. A text pattern is a glob over the
whole text when it holds ``*`` or ``?`` (``[`` is a plain character, since response
codes such as ``[IN-USE]`` are written with brackets), a regex between slashes, and
otherwise words the text must contain, each as a whole word, in any order; all three
ignore case. Replies are taken apart by the same parser as ``mailtalk explain``
(knowledge.replies), so multi-line SMTP replies, POP3 status lines and IMAP tagged
completions all match alike.

A first word shaped like a code that is none (``2x0``, ``600``, ``3.1.1``) is an
error, not a text pattern; ``check_protocol`` refuses, when the file is read, what
can never match a reply of the protocol the file talks (``+OK`` to an SMTP server,
``250`` or ``5.7.1`` to an IMAP server, ``S: * ...`` outside IMAP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from mailtalk.knowledge.replies import ParsedReply, parse
from mailtalk.language import N_, WordedError

_BASIC: Final = re.compile(r"[1-5](?:\d\d|\dx|xx)", re.I)
_ENHANCED: Final = re.compile(r"[245x]\.(?:\d{1,3}|x)\.(?:\d{1,3}|x)", re.I)
_STATUSES: Final = {"+OK", "-ERR", "OK", "NO", "BAD", "BYE", "PREAUTH", "+"}
# what a mistyped code looks like: three digits or x, starting with a digit (and, in
# SMTP, any run of those); three dotted numbers
_CODE_LIKE: Final = re.compile(r"\d[\dx]{2}", re.I)
_DIGITS: Final = re.compile(r"\d[\dx]*", re.I)
_ENHANCED_LIKE: Final = re.compile(r"[\dx]+\.[\dx]+\.[\dx]+", re.I)
STATUSES_OF: Final = {
    "smtp": frozenset(),
    "pop3": frozenset({"+OK", "-ERR", "+"}),
    "imap": frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH", "+"}),
}


class ExpectationError(WordedError):
    """An ``S:`` line that cannot be understood (a template and its values: run says it
    in its language)."""


@dataclass(frozen=True)
class Expectation:
    """One parsed ``S:`` line; ``source`` is the line as written."""

    source: str
    any_reply: bool = False
    untagged: bool = False
    # "S: 250-PIPELINING": one line of a multi-line SMTP reply, as RFCs write them;
    # it checks the reply without using it up (the last "S: 250 ..." line does)
    line_of_reply: bool = False
    code: str | None = None  # "250", "2xx", "+OK", "NO"
    enhanced: str | None = None  # "5.7.1", "5.x.x"
    text: str | None = None  # the text pattern, as written
    regex: re.Pattern[str] | None = None  # a glob or /regex/
    words: tuple[tuple[str, re.Pattern[str]], ...] = ()  # or words, each a whole word

    def _text_matches(self, text: str) -> bool:
        if self.regex is not None:
            return self.regex.search(text) is not None
        return all(pattern.search(text) for _, pattern in self.words)

    def missing_words(self, reply: ParsedReply) -> list[str]:
        """The words of a words pattern that the reply's text lacks (for the FAIL line)."""
        text = _text_of(reply)
        return [word for word, pattern in self.words if not pattern.search(text)]

    def codes_match(self, reply: ParsedReply) -> bool:
        """The code and enhanced code match; only the text may differ."""
        if self.code is not None and not _code_matches(self.code, reply.code):
            return False
        return self.enhanced is None or _code_matches(
            self.enhanced, reply.enhanced_code, sep="."
        )

    def describe(self) -> str:
        return self.source

    def matches(self, reply: ParsedReply) -> bool:
        if self.any_reply:
            return True
        return self.codes_match(reply) and self._text_matches(_text_of(reply))

    def matches_a_line(self, raw: str) -> bool:
        """For ``S: 250-TEXT``: does a line of the (multi-line) reply match?"""
        assert self.code is not None
        for line in raw.splitlines():
            line = line.strip()
            if len(line) < 3 or not _code_matches(self.code, line[:3]):
                continue
            if self._text_matches(line[4:].strip()):
                return True
        return False

    def matches_untagged(self, lines: list[str]) -> bool:
        """For ``S: * ...``: does any untagged response of the command match?"""
        return any(self._text_matches(line) for line in lines)


def _code_matches(pattern: str, actual: str | None, sep: str = "") -> bool:
    if actual is None:
        return False
    pattern, actual = pattern.upper(), actual.upper()
    if pattern in _STATUSES or actual in _STATUSES:
        return pattern == actual
    if sep:
        want, have = pattern.split(sep), actual.split(sep)
        return len(want) == len(have) and all(
            w in ("X", h) for w, h in zip(want, have, strict=True)
        )
    return len(pattern) == len(actual) and all(
        w in ("X", h) for w, h in zip(pattern, actual, strict=True)
    )


def _text_of(reply: ParsedReply) -> str:
    """The text a pattern is matched against: the reply without its codes."""
    if reply.response_code:
        return f"[{reply.response_code}] {reply.text}".strip()
    return reply.text


def _pattern(text: str | None) -> dict[str, object]:
    """The matcher of a text pattern: ``regex`` for a glob or /regex/, else ``words``."""
    if not text:
        return {}
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        try:
            return {"regex": re.compile(text[1:-1], re.I | re.S)}
        except re.error as error:
            raise ExpectationError(N_("bad pattern {text!r}: {error}"), text=text,
                                   error=error) from None
    if "*" in text or "?" in text:
        # a glob matches the whole text: "queued*" must not match "Ok: queued as"
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
        return {"regex": re.compile(rf"\A{body}\Z", re.I | re.S)}
    return {"words": tuple((word, _word(word)) for word in text.split())}


def _word(word: str) -> re.Pattern[str]:
    # a whole word: "OK" must not match "BOOKED"; "ready" matches "ready."
    start = r"\b" if word[:1].isalnum() or word[:1] == "_" else ""
    end = r"\b" if word[-1:].isalnum() or word[-1:] == "_" else ""
    return re.compile(f"{start}{re.escape(word)}{end}", re.I)


def parse_expectation(source: str) -> Expectation:
    """Read what follows ``S:``."""
    text = source.strip()
    if not text:
        raise ExpectationError(N_("S: needs an expectation (a code, a pattern, or * for any)"))
    if text == "*":
        return Expectation(source=text, any_reply=True)
    continued = re.fullmatch(r"([1-5](?:\d\d|\dx|xx))-(.*)", text, re.I | re.S)
    if continued:
        rest = continued[2].strip()
        return Expectation(
            source=text,
            line_of_reply=True,
            code=continued[1].lower(),
            text=rest or None,
            **_pattern(rest),  # type: ignore[arg-type]
        )
    if text.startswith("* "):
        rest = text[2:].strip()
        return Expectation(source=text, untagged=True, text=rest, **_pattern(rest))  # type: ignore[arg-type]
    words = text.split(None, 1)
    first = words[0]
    rest = words[1] if len(words) > 1 else ""
    code = enhanced = None
    if _BASIC.fullmatch(first) or first.upper() in _STATUSES:
        code = first.upper() if first.upper() in _STATUSES else first.lower()
        if rest:
            parts = rest.split(None, 1)
            if _ENHANCED.fullmatch(parts[0]):
                enhanced = parts[0].lower()
                rest = parts[1] if len(parts) > 1 else ""
            elif _ENHANCED_LIKE.fullmatch(parts[0]):
                raise _not_enhanced(parts[0])
    elif _ENHANCED.fullmatch(first):
        enhanced = first.lower()
    elif _ENHANCED_LIKE.fullmatch(first):
        raise _not_enhanced(first)
    elif _CODE_LIKE.fullmatch(first):
        raise _not_a_code(first)
    else:
        rest = text  # a text pattern alone
    pattern = rest.strip() or None
    return Expectation(
        source=text,
        code=code,
        enhanced=enhanced,
        text=pattern,
        **_pattern(pattern),  # type: ignore[arg-type]
    )


def _not_a_code(word: str) -> ExpectationError:
    return ExpectationError(
        N_("{word} is not a reply code (1 to 5, then two digits or x: 250, 2xx, 25x)"), word=word)


def _not_enhanced(word: str) -> ExpectationError:
    return ExpectationError(N_("{word} is not an enhanced status code (2, 4 or 5, then numbers "
                               "or x: 5.7.1, 5.x.x)"), word=word)


# what each protocol's replies are, after a code of another (check_protocol)
_STATUS_OF_ANOTHER: Final = {
    "smtp": N_("{code} is a status of {owner}; SMTP replies have three-digit codes (250, 2xx)"),
    "pop3": N_("{code} is a status of {owner}; POP3 answers +OK or -ERR"),
    "imap": N_("{code} is a status of {owner}; IMAP answers OK, NO or BAD"),
}


def check_protocol(expectation: Expectation, protocol: str) -> ExpectationError | None:
    """Why ``expectation`` can never match a reply of ``protocol`` (a template and its
    values), or None if it can."""
    name = protocol.upper()
    if expectation.untagged and protocol != "imap":
        return ExpectationError(
            N_("S: * TEXT expects an IMAP untagged response; this is {name} (a text in any "
               "reply: S: TEXT; a glob: S: *TEXT*)"), name=name)
    code = expectation.code
    if code is not None and code.upper() not in _STATUSES and protocol != "smtp":
        if protocol == "pop3":
            return ExpectationError(
                N_("{code} is an SMTP reply code; POP3 answers +OK or -ERR"), code=code)
        return ExpectationError(
            N_("{code} is an SMTP reply code; IMAP answers OK, NO or BAD"), code=code)
    if code is not None and code.upper() in _STATUSES and code not in STATUSES_OF[protocol]:
        if code == "+":
            return ExpectationError(
                N_("+ is the POP3 and IMAP continuation; SMTP's are 334 and 354"))
        owner = "POP3" if code in STATUSES_OF["pop3"] else "IMAP"
        return ExpectationError(_STATUS_OF_ANOTHER[protocol], code=code, owner=owner)
    if expectation.enhanced is not None and protocol != "smtp":
        return ExpectationError(N_("enhanced status codes ({enhanced}) are SMTP's; this is "
                                   "{name}"), enhanced=expectation.enhanced, name=name)
    if expectation.line_of_reply and protocol != "smtp":
        return ExpectationError(N_("S: {source} checks a line of a multi-line SMTP reply; this "
                                   "is {name}"), source=expectation.source, name=name)
    if protocol == "smtp" and code is None and expectation.enhanced is None and expectation.text:
        first = expectation.text.split()[0]
        if _DIGITS.fullmatch(first):
            return _not_a_code(first)
    return None


def reply_of(raw: str, protocol: str) -> ParsedReply:
    """A received reply, taken apart like ``mailtalk explain`` does."""
    reply = parse(raw, protocol)  # type: ignore[arg-type]
    if protocol == "pop3" and reply.code is None and re.match(r"\+( |$)", raw):
        # POP3's SASL continuation (RFC 5034): "S: +" as in IMAP
        return replace(reply, code="+", text=raw[1:].strip())
    return reply

"""ENVELOPE and BODYSTRUCTURE (RFC 3501 7.4.2) rendered from a message's headers, no I/O.

Addresses are parsed from the header fields as RFC 5322 tokens (``parse_addresses``,
groups as start and end markers), the MIME tree comes from
:mod:`mailtalk.servers.imap.message`; both are written through a
:class:`~mailtalk.servers.imap.output.ResponseWriter`, so 8-bit or CR/LF data goes out
as a literal, never mangled into a quoted string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mailtalk.servers.imap.message import TOKEN, Entity, Header, parse_params, read_quoted
from mailtalk.servers.imap.output import ResponseWriter

__all__ = ["parse_addresses", "render_body", "render_envelope"]


# -- addresses ------------------------------------------------------------------------


def _tokens(text: str) -> list[tuple[str, str]]:
    """RFC 5322 tokens: ("atom"|"quoted"|"comment"|"literal"|"special", text)."""
    out: list[tuple[str, str]] = []
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char.isspace():  # \s in TOKEN: every kind of white space, \x0b too
            pos += 1
        elif char == '"':
            value, pos = read_quoted(text, pos)
            out.append(("quoted", value))
        elif char == "(":
            depth = 0
            chunk: list[str] = []
            while pos < length:
                c = text[pos]
                if c == "\\" and pos + 1 < length:
                    chunk.append(text[pos + 1])
                    pos += 2
                    continue
                if c == "(":
                    depth += 1
                    if depth > 1:
                        chunk.append(c)
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                    chunk.append(c)
                else:
                    chunk.append(c)
                pos += 1
            out.append(("comment", "".join(chunk).strip()))
        elif char == "[":
            end = text.find("]", pos)
            end = length if end < 0 else end + 1
            out.append(("literal", text[pos:end]))
            pos = end
        elif char in '<>@,;:\\.]':
            out.append(("special", char))
            pos += 1
        else:
            match = TOKEN.match(text, pos)
            assert match is not None
            out.append(("atom", match.group(0)))
            pos = match.end()
    return out


@dataclass(frozen=True, slots=True)
class _Address:
    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


_GROUP_END: Final = _Address(None, None, None, None)


def _phrase(tokens: Sequence[tuple[str, str]]) -> str | None:
    words: list[str] = []
    for kind, text in tokens:
        if kind == "comment":
            continue
        if kind == "special" and text == "." and words:
            words[-1] += "."
        else:
            words.append(text)
    return " ".join(words) if words else None


def _addr_spec(tokens: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    parts = [(k, t) for k, t in tokens if k != "comment"]
    at = max((i for i, (k, t) in enumerate(parts) if k == "special" and t == "@"), default=-1)
    local_tokens = parts if at < 0 else parts[:at]
    domain_tokens = [] if at < 0 else parts[at + 1 :]

    def join(items: Sequence[tuple[str, str]]) -> str:
        out = []
        for kind, text in items:
            if kind == "quoted":
                out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
            else:
                out.append(text)
        return "".join(out)

    local = join(local_tokens) or None
    domain = join(domain_tokens) or None
    return local, domain


def parse_addresses(value: str) -> list[_Address]:
    """An address-list header as envelope addresses, groups as start/end markers."""
    tokens = _tokens(value)
    out: list[_Address] = []
    i = 0
    n = len(tokens)
    in_group = False
    while i < n:
        words: list[tuple[str, str]] = []
        while i < n and not (tokens[i][0] == "special" and tokens[i][1] in "<,;:"):
            words.append(tokens[i])
            i += 1
        sep = tokens[i][1] if i < n else ""
        if sep == ":" and not in_group:
            out.append(_Address(None, None, _phrase(words) or "", None))
            in_group = True
            i += 1
            continue
        if sep == "<":
            i += 1
            inner: list[tuple[str, str]] = []
            while i < n and tokens[i] != ("special", ">"):
                inner.append(tokens[i])
                i += 1
            i += 1  # past ">"
            adl = None
            colon = next((j for j, t in enumerate(inner) if t == ("special", ":")), -1)
            if inner and inner[0] == ("special", "@") and colon > 0:
                adl = "".join(t for _, t in inner[:colon])
                inner = inner[colon + 1 :]
            local, domain = _addr_spec(inner)
            name = _phrase(words)
            while i < n and not (tokens[i][0] == "special" and tokens[i][1] in ",;"):
                i += 1
            if local is not None or domain is not None:
                out.append(_Address(name, adl, local or "MISSING_MAILBOX",
                                    domain or "MISSING_DOMAIN"))
        elif any(k != "comment" for k, _ in words):
            local, domain = _addr_spec(words)
            comments = [t for k, t in words if k == "comment" and t]
            out.append(_Address(comments[-1] if comments else None, None,
                                local or "MISSING_MAILBOX", domain or "MISSING_DOMAIN"))
        if i < n:
            sep = tokens[i][1]
            if sep == ";" and in_group:
                out.append(_GROUP_END)
                in_group = False
            i += 1
    if in_group:
        out.append(_GROUP_END)
    return out


# -- ENVELOPE / BODYSTRUCTURE -----------------------------------------------------------


def _render_addresses(
    out: ResponseWriter, header: Header, name: str, fallback: str | None = None
) -> None:
    value = header.first(name)
    addresses = parse_addresses(value) if value is not None else []
    if not addresses and fallback is not None:
        value = header.first(fallback)
        addresses = parse_addresses(value) if value is not None else []
    if not addresses:
        out.text("NIL")
        return
    out.text("(")
    for address in addresses:
        out.text("(")
        out.string(address.name)
        out.text(" ")
        out.string(address.adl)
        out.text(" ")
        out.string(address.mailbox)
        out.text(" ")
        out.string(address.host)
        out.text(")")
    out.text(")")


def render_envelope(out: ResponseWriter, header: Header) -> None:
    out.text("(")
    out.string(header.first("date"))
    out.text(" ")
    out.string(header.first("subject"))
    for name, fallback in (("from", None), ("sender", "from"), ("reply-to", "from"),
                           ("to", None), ("cc", None), ("bcc", None)):
        out.text(" ")
        _render_addresses(out, header, name, fallback)
    out.text(" ")
    out.string(header.first("in-reply-to"))
    out.text(" ")
    out.string(header.first("message-id"))
    out.text(")")


def _render_params(out: ResponseWriter, params: Sequence[tuple[str, str]]) -> None:
    if not params:
        out.text("NIL")
        return
    out.text("(")
    for index, (name, value) in enumerate(params):
        if index:
            out.text(" ")
        out.string(name)
        out.text(" ")
        out.string(value)
    out.text(")")


def _render_extension(out: ResponseWriter, header: Header) -> None:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc."""
    disposition = header.first("content-disposition")
    head, params = parse_params(disposition) if disposition is not None else ("", [])
    if head:
        out.text("(")
        out.string(head.upper())
        out.text(" ")
        _render_params(out, params)
        out.text(")")
    else:
        out.text("NIL")
    out.text(" ")
    language = header.first("content-language")
    tags = [t.strip() for t in (language or "").split(",") if t.strip()]
    if not tags:
        out.text("NIL")
    elif len(tags) == 1:
        out.string(tags[0])
    else:
        out.text("(")
        for index, tag in enumerate(tags):
            if index:
                out.text(" ")
            out.string(tag)
        out.text(")")
    out.text(" ")
    location = header.first("content-location")
    out.string(re.sub(r"\s+", "", location) if location is not None else None)


def render_body(out: ResponseWriter, entity: Entity, extensible: bool) -> None:
    out.text("(")
    if entity.children:
        for child in entity.children:
            render_body(out, child, extensible)
        out.text(" ")
        out.string(entity.sub.upper())
        if extensible:
            out.text(" ")
            _render_params(out, entity.params)
            out.text(" ")
            _render_extension(out, entity.header)
        out.text(")")
        return
    header = entity.header
    out.string(entity.main.upper())
    out.text(" ")
    out.string(entity.sub.upper())
    out.text(" ")
    _render_params(out, entity.params)
    out.text(" ")
    out.string(header.first("content-id"))
    out.text(" ")
    out.string(header.first("content-description"))
    out.text(" ")
    out.string(entity.encoding)
    out.text(f" {len(entity.body)}")
    if entity.message is not None:
        out.text(" ")
        render_envelope(out, entity.message.header)
        out.text(" ")
        render_body(out, entity.message, extensible)
        out.text(f" {entity.lines}")
    elif entity.main == "text":
        out.text(f" {entity.lines}")
    if extensible:
        out.text(" ")
        out.string(header.first("content-md5"))
        out.text(" ")
        _render_extension(out, header)
    out.text(")")

"""mailtalk's own commands, the lines that start with ``:`` and never reach the server.

Shared by the REPL and the pipe mode; what differs between them (asking for a
password, showing progress, quitting) goes through the ``MetaUI`` they pass in.
What each command is for is written once, in the knowledge base
(``knowledge/commands.toml``, ``[meta.NAME]``); this module holds what each does.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from mailtalk.client.conversation import Conversation
from mailtalk.errors import MailtalkError
from mailtalk.protocols.common import ReplyClass

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mailtalk.client.coach import ExtraCommand
    from mailtalk.knowledge.commands import CommandHelp

# Files above this size get a progress bar when sent with :file.
PROGRESS_THRESHOLD: Final = 1024 * 1024


class QuitRequested(Exception):
    """:quit was typed."""


class MetaUI(Protocol):
    raw: bool
    block_colour: bool  # whether show_block may be given ANSI colours

    def note(self, text: str, kind: str = "info") -> None: ...

    def block_width(self) -> int:
        """How wide a block (an explanation) may be."""
        ...

    def ask_secret(self, prompt: str, variable: str = "MAILTALK_PASSWORD") -> str:
        """Ask for a secret without echo; the pipe mode reads ``$variable`` instead."""
        ...

    def show_block(self, text: str) -> None: ...

    def progress(self, total: int, label: str) -> Callable[[int], None]:
        """A callback taking bytes sent so far; the UI draws a bar if it wants."""
        ...

    def done_progress(self) -> None: ...


@dataclass(frozen=True)
class MetaCommand:
    """A ``:command``: what it does here, its words in the knowledge base."""

    name: str
    handler: Callable[[Conversation, MetaUI, list[str]], None]

    @property
    def help(self) -> CommandHelp:
        """Its entry in ``knowledge/commands.toml`` (read on first use)."""
        from mailtalk.knowledge.commands import command_help

        entry = command_help("meta", self.name)
        if entry is None:
            raise LookupError(f"commands.toml has no [meta.{self.name}]")
        return entry

    @property
    def usage(self) -> str:
        """``:auth MECHANISM [USER]``"""
        return self.help.syntax

    @property
    def brief(self) -> str:
        """The short line of lists: :help, the completion menu, the man page."""
        return self.help.brief


def _help(
    conv: Conversation,
    ui: MetaUI,
    args: list[str],
    extra: Mapping[str, ExtraCommand] | None = None,
    heading: str = "",
) -> None:
    from mailtalk.knowledge.commands import command_help, render_help

    protocol = conv.target.protocol
    if args:
        name = " ".join(args)
        if name.startswith(":"):
            meta: MetaCommand | ExtraCommand | None = META_COMMANDS.get(name[1:].lower())
            if meta is None and extra:
                meta = extra.get(name[1:].lower())
            if meta is None:
                raise MailtalkError(f"no mailtalk command {name}; :help lists them")
            ui.show_block(f"{meta.usage}\n  {meta.brief}")
            return
        entry = command_help(protocol, name)
        if entry is None:
            raise MailtalkError(f"{name.upper()} is not a {protocol.upper()} command I know")
        ui.show_block(render_help(entry))
        return
    valid = ", ".join(conv.core.valid_commands()) or "(none: wait, or :reconnect)"
    lines = [
        f"{protocol.upper()} commands valid now ({conv.core.state_name}): {valid}",
        f"Usually next: {conv.core.next_hint()}",
        "",
        "mailtalk commands (never sent to the server):",
    ]
    lines += _listing(META_COMMANDS.values())
    if extra:
        lines += ["", f"{heading or 'more commands'}:", *_listing(extra.values())]
    lines.append("")
    lines.append(":help COMMAND explains a protocol command, e.g. :help " + _example(protocol))
    ui.show_block("\n".join(lines))


def _listing(commands: Iterable[MetaCommand | ExtraCommand]) -> list[str]:
    lines = []
    for meta in commands:
        if len(meta.usage) <= 28:
            lines.append(f"  {meta.usage:<28} {meta.brief}")
        else:  # a long usage gets a line of its own: the list stays within 80 columns
            lines += [f"  {meta.usage}", f"  {'':<28} {meta.brief}"]
    return lines


def _example(protocol: str) -> str:
    return {"smtp": "RCPT", "pop3": "RETR", "imap": "FETCH"}.get(protocol, "QUIT")


def _starttls(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    conv.starttls()


def _auth(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if not args or len(args) > 2:
        raise MailtalkError(
            "usage: :auth MECHANISM [USER] (plain, login, cram-md5, scram-sha-256, ...)"
        )
    mechanism = args[0].upper()
    from mailtalk.protocols.sasl import NO_SECRET_MECHANISMS

    if mechanism in NO_SECRET_MECHANISMS:
        # the TLS client certificate (EXTERNAL) or the Kerberos ticket (GSSAPI) is the
        # identity: no secret is asked for; a USER given is the authorization identity
        # asked for, none the certificate's or the ticket's own
        conv.prepare_auth(mechanism)
        authzid = args[1] if len(args) > 1 else ""
        reply = conv.authenticate(mechanism, authzid, "")
        if reply.reply_class is ReplyClass.POSITIVE:
            by = "the client certificate" if mechanism == "EXTERNAL" else "the Kerberos ticket"
            ui.note(f"authenticated by {by}{' as ' + authzid if authzid else ''}")
        return
    user = args[1] if len(args) > 1 else conv.target.user
    if not user:
        raise MailtalkError("usage: :auth MECHANISM USER (no user in the URL to default to)")
    # What the server offers is settled before anyone is asked for a secret.
    conv.prepare_auth(mechanism)
    from mailtalk.client.credentials import TOKEN_VARIABLE, is_token_mechanism, netrc_lookup

    if is_token_mechanism(mechanism):
        # A token is never looked up in ~/.netrc (its entries are passwords).
        secret = os.environ.get(TOKEN_VARIABLE) or None
        if secret is not None:
            ui.note(f"OAuth2 token for {user} from ${TOKEN_VARIABLE}")
        else:
            secret = ui.ask_secret(f"OAuth2 token for {user}: ", TOKEN_VARIABLE)
    else:
        found = netrc_lookup(conv.target.host, user)
        if found.problem:
            ui.note(found.problem, "warning")
        secret = found.password
        if secret is not None:
            ui.note(f"password for {user} from {found.shown_path}")
        else:
            secret = ui.ask_secret(f"password for {user}: ")
    reply = conv.authenticate(mechanism, user, secret)
    if reply.reply_class is ReplyClass.POSITIVE:
        ui.note(f"authenticated as {user}")


def _xclient(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    from mailtalk.protocols.xclient import XClientError, parse_attribute

    if not args:
        raise MailtalkError("usage: :xclient NAME=VALUE... (e.g. ADDR=192.0.2.1 NAME=host.example)")
    try:
        attributes = tuple(parse_attribute(arg, ":xclient") for arg in args)
    except XClientError as error:
        raise MailtalkError(str(error)) from None
    conv.xclient(attributes)
    shown = " ".join(f"{name}={value}" for name, value in attributes)
    ui.note(f"the server now treats this session as from {shown}")


def _raw(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if args and args[0] in ("on", "off"):
        ui.raw = args[0] == "on"
    else:
        ui.raw = not ui.raw
    ui.note(
        "raw mode on: the exact bytes sent (C:) and received (S:), escaped"
        if ui.raw
        else "raw mode off"
    )


def _save(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if len(args) != 1:
        raise MailtalkError("usage: :save FILE")
    lines = conv.transcript.save(args[0])
    ui.note(f"transcript saved to {args[0]} ({lines} lines)")


def _file(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if len(args) != 1:
        raise MailtalkError("usage: :file PATH (after DATA got 354)")
    if not getattr(conv.core, "in_data", False):
        raise MailtalkError(":file sends a message after DATA got 354; send DATA first")
    path = Path(args[0]).expanduser()
    try:
        message = path.read_bytes()
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise MailtalkError(f"cannot read {path}: {reason}") from None
    if len(message) >= PROGRESS_THRESHOLD:
        callback = ui.progress(len(message), f"sending {path.name}")
        try:
            conv.send_message(message, callback, source=str(path))
        finally:
            ui.done_progress()
    else:
        conv.send_message(message, source=str(path))
    ui.note(f"sent {path} ({len(message)} bytes), dot-stuffed, ended by '.'")


def _explain(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    from mailtalk.explain.view import to_text
    from mailtalk.knowledge.explain import explain

    if args:
        # Any reply, code or response code; the session's protocol settles
        # what is ambiguous (OVERQUOTA alone in an IMAP session).
        text = args[0]
        language = conv.options.language
        explanation = explain(text, language=language)
        if not explanation.known or explanation.protocol is None:
            explanation = explain(text, conv.target.protocol, language=language)
        if not explanation.known:
            raise MailtalkError(f"{text!r} is not a reply or a code; try :explain 550 or 5.7.1")
    else:
        if conv.last_final is None:
            raise MailtalkError("no reply yet: :explain ARG explains any reply or code")
        explanation = conv.explain_event(conv.last_final, conv.last_final_command)
    ui.show_block(to_text(explanation, ui.block_colour, ui.block_width()))


def _record(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if not args:
        where = conv.recorder.path
        ui.note(f"recording to {where}" if where else "not recording; :record FILE starts")
        return
    if args[0] == "stop" and len(args) == 1:
        path = conv.finish_recording()
        if path is None:
            raise MailtalkError("not recording; :record FILE starts")
        ui.note(f"wrote {path}: replay it with mailtalk run {shlex.quote(path)}")
        return
    if len(args) != 1:
        raise MailtalkError("usage: :record FILE, or :record stop")
    path = os.path.expanduser(args[0])
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise MailtalkError(f"cannot write in {directory}")
    conv.recorder.path = path
    ui.note(
        f"recording to {path} from the start of this connection (written at :record stop "
        "or when you leave)"
    )


def _reconnect(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    changes: dict[str, object] = {}
    words = iter(args)
    for word in words:
        if word == "--insecure":
            changes["insecure"] = True
        elif word == "--cafile":
            name = next(words, None)
            if name is None:
                raise MailtalkError("usage: :reconnect [--cafile FILE] [--insecure]")
            path = Path(name).expanduser()
            if not os.access(path, os.R_OK) or not (path.is_file() or path.is_dir()):
                raise MailtalkError(f"cannot read {path}: :reconnect --cafile needs a CA file")
            changes["cafile"] = str(path)
            changes["insecure"] = False
        else:
            raise MailtalkError("usage: :reconnect [--cafile FILE] [--insecure]")
    if changes:
        # Kept for the rest of the session: a later :starttls or :reconnect uses them too.
        conv.options = replace(conv.options, **changes)  # type: ignore[arg-type]
    conv.reconnect()


def _open(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    from mailtalk.net.target import IMPLICIT_TLS_PORT, TargetError, parse_shortcut, parse_url

    if len(args) not in (1, 2) or (len(args) == 2 and "://" in args[0]):
        raise MailtalkError("usage: :open URL, or :open HOST [PORT] (as telnet's open)")
    try:
        if "://" in args[0]:
            target = parse_url(args[0])
        else:
            protocol = conv.target.protocol
            where = f"{args[0]}:{args[1]}" if len(args) == 2 else args[0]
            target = parse_shortcut(protocol, where, implicit_tls=False)
            if target.port == IMPLICIT_TLS_PORT[protocol]:
                target = replace(target, tls="implicit")
    except TargetError as error:
        raise MailtalkError(str(error)) from None
    conv.retarget(target)


def _cert(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if args:
        raise MailtalkError("usage: :cert")
    tls = conv.transport.tls if conv.transport is not None and not conv.closed else None
    if tls is None or not tls.chain:
        raise MailtalkError("no TLS on this connection: :starttls first (or connect with TLS)")
    from mailtalk.net.certchain import chain_text, describe_session_chain

    host = conv.transport.server_hostname if conv.transport is not None else None
    reports = describe_session_chain(tls.chain, tls.verified, host, conv.options.cafile)
    ui.show_block(chain_text(reports, tls.chain_source))


def _quit(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    raise QuitRequested


# In the order :help, the completion menu and the man page list them.
META_COMMANDS: Final[dict[str, MetaCommand]] = {
    name: MetaCommand(name, handler)
    for name, handler in (
        ("help", _help),
        ("explain", _explain),
        ("starttls", _starttls),
        ("cert", _cert),
        ("auth", _auth),
        ("xclient", _xclient),
        ("raw", _raw),
        ("save", _save),
        ("record", _record),
        ("file", _file),
        ("reconnect", _reconnect),
        ("open", _open),
        ("quit", _quit),
    )
}


def run_meta(
    line: str,
    conv: Conversation,
    ui: MetaUI,
    extra: Mapping[str, ExtraCommand] | None = None,
    heading: str = "",
) -> None:
    """Run one ``:command``; raises MailtalkError with a one-line message on misuse.

    ``extra`` are a coach's commands (``client.coach``), listed by :help under
    ``heading``."""
    name, _, rest = line[1:].strip().partition(" ")
    if name.lower() == "explain":
        # a reply is free text: "isn't" must not trip shell quoting
        _explain(conv, ui, [rest.strip()] if rest.strip() else [])
        return
    try:
        words = shlex.split(line[1:])
    except ValueError as error:
        raise MailtalkError(f"cannot parse {line!r}: {error}") from None
    if not words:
        raise MailtalkError("':' alone means nothing; :help lists mailtalk's commands")
    name = words[0].lower()
    if name == "help":
        _help(conv, ui, words[1:], extra, heading)
        return
    command = META_COMMANDS.get(name) or (extra or {}).get(name)
    if command is None:
        raise MailtalkError(f"unknown command :{name}; :help lists mailtalk's commands")
    command.handler(conv, ui, words[1:])


"""mailtalk's own commands, the lines that start with ``:`` and never reach the server.

Shared by the REPL and the pipe mode; what differs between them (asking for a
password, showing progress, quitting) goes through the ``MetaUI`` they pass in.
What each command is for is written once, in the knowledge base
(``knowledge/commands.toml``, ``[meta.NAME]``); this module holds what each does.
What they say is in the session's language (``Conversation.gettext``), as :help's
list, its lines from the knowledge base included.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from mailtalk.client.conversation import Conversation
from mailtalk.client.login import authenticate, prepare_auth
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

    _ = conv.gettext
    protocol = conv.target.protocol
    if args:
        name = " ".join(args)
        if name.startswith(":"):
            meta: MetaCommand | ExtraCommand | None = META_COMMANDS.get(name[1:].lower())
            if meta is None and extra:
                meta = extra.get(name[1:].lower())
            if meta is None:
                raise MailtalkError(_("no mailtalk command {name}; :help lists them").format(
                    name=name))
            ui.show_block(f"{meta.usage}\n  {_(meta.brief)}")
            return
        entry = command_help(protocol, name)
        if entry is None:
            raise MailtalkError(_("{command} is not a {protocol} command I know").format(
                command=name.upper(), protocol=protocol.upper()))
        ui.show_block(render_help(entry, gettext=_))
        return
    valid = ", ".join(conv.core.valid_commands()) or _("(none: wait, or :reconnect)")
    lines = [
        _("{protocol} commands valid now ({state}): {commands}").format(
            protocol=protocol.upper(), state=conv.core.state_name, commands=valid),
        _("Usually next: {hint}").format(hint=_(conv.core.next_hint())),
        "",
        _("mailtalk commands (never sent to the server):"),
    ]
    lines += _listing(META_COMMANDS.values(), _)
    if extra:  # a coach's commands, in its own words already
        lines += ["", f"{heading or _('more commands')}:", *_listing(extra.values())]
    lines.append("")
    lines.append(_(":help COMMAND explains a protocol command, e.g. :help {example}").format(
        example=_example(protocol)))
    ui.show_block("\n".join(lines))


def _listing(
    commands: Iterable[MetaCommand | ExtraCommand], gettext: Callable[[str], str] = str
) -> list[str]:
    lines = []
    for meta in commands:
        brief = gettext(meta.brief)
        if len(meta.usage) <= 28:
            lines.append(f"  {meta.usage:<28} {brief}")
        else:  # a long usage gets a line of its own: the list stays within 80 columns
            lines += [f"  {meta.usage}", f"  {'':<28} {brief}"]
    return lines


def _example(protocol: str) -> str:
    return {"smtp": "RCPT", "pop3": "RETR", "imap": "FETCH"}.get(protocol, "QUIT")


def _starttls(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    conv.starttls()


def _auth(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    _ = conv.gettext
    if not args or len(args) > 2:
        raise MailtalkError(_(
            "usage: :auth MECHANISM [USER] (plain, login, cram-md5, scram-sha-256, ...)"
        ))
    mechanism = args[0].upper()
    from mailtalk.protocols.sasl import NO_SECRET_MECHANISMS

    if mechanism in NO_SECRET_MECHANISMS:
        # the TLS client certificate (EXTERNAL) or the Kerberos ticket (GSSAPI) is the
        # identity: no secret is asked for; a USER given is the authorization identity
        # asked for, none the certificate's or the ticket's own
        prepare_auth(conv, mechanism)
        authzid = args[1] if len(args) > 1 else ""
        reply = authenticate(conv, mechanism, authzid, "")
        if reply.reply_class is ReplyClass.POSITIVE:
            by = (_("the client certificate") if mechanism == "EXTERNAL"
                  else _("the Kerberos ticket"))
            ui.note(_("authenticated by {means} as {user}").format(means=by, user=authzid)
                    if authzid else _("authenticated by {means}").format(means=by))
        return
    user = args[1] if len(args) > 1 else conv.target.user
    if not user:
        raise MailtalkError(_("usage: :auth MECHANISM USER (no user in the URL to default to)"))
    # What the server offers is settled before anyone is asked for a secret.
    prepare_auth(conv, mechanism)
    from mailtalk.client.credentials import TOKEN_VARIABLE, is_token_mechanism, netrc_lookup

    if is_token_mechanism(mechanism):
        # A token is never looked up in ~/.netrc (its entries are passwords).
        secret = os.environ.get(TOKEN_VARIABLE) or None
        if secret is not None:
            ui.note(_("OAuth2 token for {user} from ${variable}").format(
                user=user, variable=TOKEN_VARIABLE))
        else:
            secret = ui.ask_secret(_("OAuth2 token for {user}: ").format(user=user),
                                   TOKEN_VARIABLE)
    else:
        found = netrc_lookup(conv.target.host, user)
        if found.problem:
            ui.note(found.problem, "warning")
        secret = found.password
        if secret is not None:
            ui.note(_("password for {user} from {file}").format(user=user, file=found.shown_path))
        else:
            secret = ui.ask_secret(_("password for {user}: ").format(user=user))
    reply = authenticate(conv, mechanism, user, secret)
    if reply.reply_class is ReplyClass.POSITIVE:
        ui.note(_("authenticated as {user}").format(user=user))


def _xclient(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    from mailtalk.protocols.xclient import XClientError, parse_attribute

    if not args:
        raise MailtalkError(conv.gettext(
            "usage: :xclient NAME=VALUE... (e.g. ADDR=192.0.2.1 NAME=host.example)"))
    try:
        attributes = tuple(parse_attribute(arg, ":xclient") for arg in args)
    except XClientError as error:
        raise MailtalkError(error.said(conv.gettext)) from None
    conv.xclient(attributes)
    shown = " ".join(f"{name}={value}" for name, value in attributes)
    ui.note(conv.gettext("the server now treats this session as from {client}").format(
        client=shown))


def _raw(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if args and args[0] in ("on", "off"):
        ui.raw = args[0] == "on"
    else:
        ui.raw = not ui.raw
    ui.note(conv.gettext(
        "raw mode on: the exact bytes sent (C:) and received (S:), escaped"
        if ui.raw
        else "raw mode off"
    ))


def _save(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if len(args) != 1:
        raise MailtalkError(conv.gettext("usage: :save FILE"))
    try:
        lines = conv.transcript.save(args[0])
    except OSError as error:  # no such folder, a folder named, no room: the user's to fix
        reason = (error.strerror or str(error)).lower()
        raise MailtalkError(conv.gettext("cannot write {file}: {reason}").format(
            file=args[0], reason=reason)) from None
    ui.note(conv.gettext("transcript saved to {file} ({count} lines)").format(
        file=args[0], count=lines))


def _file(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    _ = conv.gettext
    if len(args) != 1:
        raise MailtalkError(_("usage: :file PATH (after DATA got 354)"))
    if not getattr(conv.core, "in_data", False):
        raise MailtalkError(_(":file sends a message after DATA got 354; send DATA first"))
    path = Path(args[0]).expanduser()
    try:
        message = path.read_bytes()
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise MailtalkError(_("cannot read {file}: {reason}").format(
            file=path, reason=reason)) from None
    if len(message) >= PROGRESS_THRESHOLD:
        callback = ui.progress(len(message), _("sending {file}").format(file=path.name))
        try:
            conv.send_message(message, callback, source=str(path))
        finally:
            ui.done_progress()
    else:
        conv.send_message(message, source=str(path))
    ui.note(_("sent {file} ({size} bytes), dot-stuffed, ended by '.'").format(
        file=path, size=len(message)))


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
            raise MailtalkError(conv.gettext(
                "{text} is not a reply or a code; try :explain 550 or 5.7.1").format(
                    text=repr(text)))
    else:
        if conv.last_final is None:
            raise MailtalkError(conv.gettext(
                "no reply yet: :explain ARG explains any reply or code"))
        explanation = conv.explain_event(conv.last_final, conv.last_final_command)
    ui.show_block(to_text(explanation, ui.block_colour, ui.block_width()))


def _record(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    _ = conv.gettext
    if not args:
        where = conv.recorder.path
        ui.note(_("recording to {file}").format(file=where) if where
                else _("not recording; :record FILE starts"))
        return
    if args[0] == "stop" and len(args) == 1:
        path = conv.finish_recording()
        if path is None:
            raise MailtalkError(_("not recording; :record FILE starts"))
        ui.note(_("wrote {file}: replay it with mailtalk run {quoted}").format(
            file=path, quoted=shlex.quote(path)))
        return
    if len(args) != 1:
        raise MailtalkError(_("usage: :record FILE, or :record stop"))
    path = os.path.expanduser(args[0])
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise MailtalkError(_("cannot write in {folder}").format(folder=directory))
    conv.recorder.path = path
    ui.note(_("recording to {file} from the start of this connection (written at :record "
              "stop or when you leave)").format(file=path))


def _reconnect(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    usage = conv.gettext("usage: :reconnect [--cafile FILE] [--insecure]")
    changes: dict[str, object] = {}
    words = iter(args)
    for word in words:
        if word == "--insecure":
            changes["insecure"] = True
        elif word == "--cafile":
            name = next(words, None)
            if name is None:
                raise MailtalkError(usage)
            path = Path(name).expanduser()
            if not os.access(path, os.R_OK) or not (path.is_file() or path.is_dir()):
                raise MailtalkError(conv.gettext(
                    "cannot read {file}: :reconnect --cafile needs a CA file").format(file=path))
            changes["cafile"] = str(path)
            changes["insecure"] = False
        else:
            raise MailtalkError(usage)
    if changes:
        # Kept for the rest of the session: a later :starttls or :reconnect uses them too.
        conv.options = replace(conv.options, **changes)  # type: ignore[arg-type]
    conv.reconnect()


def _open(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    from mailtalk.net.target import IMPLICIT_TLS_PORT, TargetError, parse_shortcut, parse_url

    if len(args) not in (1, 2) or (len(args) == 2 and "://" in args[0]):
        raise MailtalkError(conv.gettext(
            "usage: :open URL, or :open HOST [PORT] (as telnet's open)"))
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
        raise MailtalkError(error.said(conv.gettext)) from None
    conv.retarget(target)


def _cert(conv: Conversation, ui: MetaUI, args: list[str]) -> None:
    if args:
        raise MailtalkError(conv.gettext("usage: :cert"))
    tls = conv.transport.tls if conv.transport is not None and not conv.closed else None
    if tls is None or not tls.chain:
        raise MailtalkError(conv.gettext(
            "no TLS on this connection: :starttls first (or connect with TLS)"))
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
    _ = conv.gettext
    try:
        words = shlex.split(line[1:])
    except ValueError as error:
        raise MailtalkError(_("cannot parse {line}: {error}").format(
            line=repr(line), error=error)) from None
    if not words:
        raise MailtalkError(_("':' alone means nothing; :help lists mailtalk's commands"))
    name = words[0].lower()
    if name == "help":
        _help(conv, ui, words[1:], extra, heading)
        return
    command = META_COMMANDS.get(name) or (extra or {}).get(name)
    if command is None:
        raise MailtalkError(_("unknown command :{name}; :help lists mailtalk's commands").format(
            name=name))
    command.handler(conv, ui, words[1:])


"""Logging in to the IMAP server: LOGIN and AUTHENTICATE (with SASL-IR; the exchange is
``servers.sasl_exchange``'s, the words and the state IMAP's), the verdict from the
server's guard, journaled and answered; at a user's first login the SPECIAL-USE folders
are made. A layer of :class:`~mailtalk.servers.imap.server.IMAPServerProtocol` over the
connection (:mod:`mailtalk.servers.imap.session`).
"""

from __future__ import annotations

import functools
import logging
from typing import Final

from mailtalk.protocols.common import Continuation
from mailtalk.protocols.imap import Command
from mailtalk.servers import sasl_exchange
from mailtalk.servers.guard import Verdict
from mailtalk.servers.imap.mailboxes import SPECIAL_USE
from mailtalk.servers.imap.parse import parse_astrings
from mailtalk.servers.imap.session import IMAPSession
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, tokenize
from mailtalk.servers.sasl import open_exchange

log = logging.getLogger("mailtalk.imap")

# What a malformed answer is told (BAD), but for the mechanism's own words.
MALFORMED: Final = {"base64": "Invalid base64 data", "fields": "Malformed PLAIN response"}


class IMAPLoginSession(IMAPSession):
    """The not authenticated state's logins: LOGIN and AUTHENTICATE."""

    def _login(self, command: Command) -> None:
        if not self._plaintext_allowed():
            self.tagged(command.tag, "NO", "PRIVACYREQUIRED",
                         "Plaintext authentication disallowed on non-secure connections")
            return
        name, secret = parse_astrings(command.args, command.literals, 2)
        self.defer_tagged(self._verify(command.tag, name, secret, "LOGIN"), command.tag)

    def _authenticate(self, command: Command) -> None:
        values = tokenize(command.args, command.literals)
        if not values or not isinstance(values[0], Atom) or len(values) > 2:
            raise IMAPSyntaxError("AUTHENTICATE takes a mechanism and an optional initial response")
        exchange = open_exchange(values[0].value.upper(), self.context, sasl_exchange.IMAP)
        if exchange is None:
            self.tagged(command.tag, "NO", None, "Unsupported authentication mechanism")
            return
        if not self._plaintext_allowed():
            self.tagged(command.tag, "NO", "PRIVACYREQUIRED",
                         "Plaintext authentication disallowed on non-secure connections")
            return
        self._exchange = exchange
        initial = None
        if len(values) == 2:  # SASL-IR
            initial = values[1].value if isinstance(values[1], Atom) else ""
        self._sasl_step(command.tag, exchange.start(initial))

    def _sasl_answer(self, tag: str, line: str) -> None:
        assert self._exchange is not None  # a continuation is asked for only in one
        self._sasl_step(tag, self._exchange.answer(line))

    def _sasl_step(self, tag: str, step: sasl_exchange.Step) -> None:
        """The exchange's next move (servers.sasl_exchange), in IMAP's words."""
        exchange = self._exchange
        assert exchange is not None
        if exchange.over:
            self._exchange = None
        if isinstance(step, sasl_exchange.Challenge):
            self._sasl_tag = tag
            self.write(self.core.send(Continuation(step.line)))
        elif isinstance(step, sasl_exchange.Verify):
            self.defer_tagged(self.sasl_verdict(step, functools.partial(self._sasl_step, tag),
                                                functools.partial(self._decided, tag)), tag)
        elif isinstance(step, sasl_exchange.Cancelled):
            self.tagged(tag, "BAD", None, "Authentication cancelled")
        elif isinstance(step, sasl_exchange.Malformed):
            self.tagged(tag, "BAD", None, MALFORMED.get(step.kind, step.detail))
        elif isinstance(step, sasl_exchange.Credentials):
            if step.authzid and step.authzid != step.user:
                self.tagged(tag, "NO", "AUTHORIZATIONFAILED", "Cannot act as another user")
                return
            self.defer_tagged(self._verify(tag, step.user, step.password, exchange.name), tag)
        else:
            verdict = Verdict.OK if step.ok else Verdict.FAILED
            self._decided(tag, verdict, step.user, exchange.name)

    async def _verify(self, tag: str, name: str, secret: str, mechanism: str) -> None:
        context = self.context
        verdict = await context.guard.check_password(context.users, name, secret, self.client_ip)
        if self._closing:
            return
        self._decided(tag, verdict, name, mechanism)

    def _decided(self, tag: str, verdict: Verdict, name: str, mechanism: str) -> None:
        """A login's verdict, journaled and answered."""
        if verdict is Verdict.REFUSED:
            log.info("session %s: login refused: too many failures from %s", self.session_id,
                     self.client_ip)
            if self.journal is not None:
                self.journal_write("auth", user=name, mechanism=mechanism, ok=False)
            self.tagged(tag, "NO", "UNAVAILABLE",
                        f"Too many failed logins from {self.client_ip}; try again later")
            return
        ok = verdict is Verdict.OK
        if ok:
            try:
                mailboxes = self.context.mailstore.user_mailboxes(
                    name, quota_bytes=self.context.settings.quota_bytes
                )
            except ValueError:
                ok = False
            else:
                try:
                    mailboxes.create_default_folders(SPECIAL_USE)
                except OSError as error:
                    # A full disk must not keep a user from logging in to delete
                    # mail: the folders are made at a later login.
                    log.warning("session %s: default folders not made: %s",
                                self.session_id, error)
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=ok)
        if not ok:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self.errors.auth_failed()
            self.tagged(tag, "NO", "AUTHENTICATIONFAILED", "Authentication failed.")
            return
        self.user = name
        self.mailboxes = mailboxes
        self.core.max_literal = self.context.settings.max_literal
        log.info("session %s: %s logged in", self.session_id, name)
        self.tagged(tag, "OK", f"CAPABILITY {self._capabilities()}", "Logged in")

"""Logging in to the IMAP server: LOGIN and AUTHENTICATE (with SASL-IR; the exchange is
``servers.sasl_exchange``'s, the words and the state IMAP's), the verdict from the
server's guard, journaled and answered; at a user's first login the SPECIAL-USE folders
are made. A layer of :class:`~mailtalk.servers.imap.server.IMAPServerProtocol` over the
connection (:mod:`mailtalk.servers.imap.session`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Final

from mailtalk.protocols.common import Continuation
from mailtalk.protocols.imap_events import Command
from mailtalk.servers import sasl_exchange
from mailtalk.servers.guard import Verdict
from mailtalk.servers.imap.mailboxes import SPECIAL_USE
from mailtalk.servers.imap.session import IMAPSession
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, parse_astrings, tokenize
from mailtalk.servers.sasl import open_exchange

log = logging.getLogger("mailtalk.imap")

# What a malformed answer is told, but for the mechanism's own words: BAD when it is
# not base64 (RFC 9051 6.2.2), else NO as for a wrong password: the mechanism failed
# (Dovecot says NO to an empty or two-field PLAIN answer; Mailutils offers no SASL-IR).
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
        initial = None
        if len(values) == 2:  # SASL-IR: base64 or "=", an atom; Dovecot's BAD for a string
            if not isinstance(values[1], Atom):
                self.tagged(command.tag, "BAD", None, MALFORMED["base64"])
                return
            initial = values[1].value
        self._exchange = exchange
        self._auth_tag = command.tag
        self.sasl_step(exchange.start(initial))

    def _sasl_answer(self, line: str) -> None:
        assert self._exchange is not None  # a continuation is asked for only in one
        self.sasl_step(self._exchange.answer(line))

    # -- the exchange's moves (ServerSession.sasl_step) in IMAP's words ------------------

    def sasl_challenge(self, line: str) -> None:
        self._sasl_tag = self._auth_tag
        self.write(self.core.send(Continuation(line)))

    def sasl_defer(self, work: Awaitable[None]) -> None:
        self.defer_tagged(work, self._auth_tag)

    def sasl_password(self, credentials: sasl_exchange.Credentials, mechanism: str) -> None:
        tag = self._auth_tag
        if credentials.authzid and credentials.authzid != credentials.user:
            self.tagged(tag, "NO", "AUTHORIZATIONFAILED", "Cannot act as another user")
            return
        self.defer_tagged(self._verify(tag, credentials.user, credentials.password, mechanism),
                          tag)

    def sasl_decided(self, verdict: Verdict, user: str, mechanism: str) -> None:
        self._decided(self._auth_tag, verdict, user, mechanism)

    def sasl_refused(self, step: sasl_exchange.Cancelled | sasl_exchange.Malformed) -> None:
        if isinstance(step, sasl_exchange.Cancelled):
            self.tagged(self._auth_tag, "BAD", None, "Authentication cancelled")
        elif step.undecodable:
            self.tagged(self._auth_tag, "BAD", None, MALFORMED["base64"])
        else:
            self.tagged(self._auth_tag, "NO", "AUTHENTICATIONFAILED",
                        MALFORMED.get(step.kind, step.detail))

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

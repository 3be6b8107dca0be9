"""AUTH in an SMTP session (RFC 4954): the exchange is ``servers.sasl_exchange``'s, the
words and the state SMTP's; the verdict from the server's guard.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Final

from mailtalk.servers import sasl_exchange
from mailtalk.servers.guard import Verdict
from mailtalk.servers.sasl import open_exchange
from mailtalk.servers.smtp_session import SMTPSession

log = logging.getLogger("mailtalk.smtp")

# What a malformed answer is told, but for the mechanism's own words: 501 5.5.2 when
# it is not base64 (RFC 4954 4), else 535 5.7.8 as for a wrong password: the mechanism
# failed (Postfix and Exim say 535 to an empty or two-field PLAIN answer).
MALFORMED: Final = {"base64": "Cannot decode the base64 answer", "fields": "Malformed PLAIN answer"}


class SMTPAuthSession(SMTPSession):
    """AUTH: a login's exchange, checked, journaled and answered."""

    def _auth_allowed(self) -> bool:
        """AUTH only over TLS, or from loopback (where nobody can listen in) unless
        --tls-auth-only says TLS always."""
        if self.context.settings.tls_auth_only:
            return bool(self.core.tls)
        return bool(self.core.tls) or self.is_loopback()

    def _auth_command(self, args: str) -> None:
        if not self.core.greeted and self.context.personality.requires_helo:
            # AUTH is an ESMTP command: a client that has not said HELO or EHLO (again
            # after STARTTLS, RFC 3207 4.2) has not been offered it. Postfix with
            # smtpd_helo_required answers this way; HELO is enough, as for Postfix.
            self._send_key("auth_before_helo")
            return
        if not self._auth_allowed():
            self._send_key("auth_needs_tls")
            return
        if self.user:
            self._reply(503, "5.5.1 Already authenticated")
            return
        if self.transaction is not None:
            self._reply(503, "5.5.1 AUTH not allowed during a mail transaction")
            return
        mechanism, _, initial = args.strip().partition(" ")
        exchange = open_exchange(mechanism.upper(), self.context, sasl_exchange.SMTP)
        if exchange is None:
            self._reply(504, "5.5.4 Unrecognized authentication type")
            return
        self._exchange = exchange
        self.sasl_step(exchange.start(initial.strip() or None))

    def _on_auth_response(self, line: str) -> None:
        if self._exchange is None:
            self._send_key("unknown_command", command="")
            return
        self.sasl_step(self._exchange.answer(line))

    # -- the exchange's moves (ServerSession.sasl_step) in SMTP's words ------------------

    def sasl_challenge(self, line: str) -> None:
        self._reply(334, line)

    def sasl_defer(self, work: Awaitable[None]) -> None:
        self._defer(work)

    def sasl_password(self, credentials: sasl_exchange.Credentials, mechanism: str) -> None:
        self._defer(self._verify(credentials.user, credentials.password, mechanism))

    def sasl_decided(self, verdict: Verdict, user: str, mechanism: str) -> None:
        self._decided(verdict, user, mechanism)

    def sasl_refused(self, step: sasl_exchange.Cancelled | sasl_exchange.Malformed) -> None:
        if isinstance(step, sasl_exchange.Cancelled):
            self._reply(501, "5.7.0 Authentication cancelled")
        elif step.undecodable:
            self._reply(501, f"5.5.2 {MALFORMED['base64']}")
        else:
            self._reply(535, f"5.7.8 {MALFORMED.get(step.kind, step.detail)}")

    async def _verify(self, name: str, secret: str, mechanism: str) -> None:
        context = self.context
        verdict = await context.guard.check_password(context.users, name, secret, self.client_ip)
        if self._closing:
            return
        self._decided(verdict, name, mechanism)

    def _decided(self, verdict: Verdict, name: str, mechanism: str) -> None:
        """A login's verdict, journaled and answered."""
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=verdict is Verdict.OK)
        if verdict is Verdict.OK:
            self.user = name
            log.info("session %s: authenticated as %s", self.session_id, name)
            self._send_key("auth_ok")
        elif verdict is Verdict.REFUSED:
            log.info("session %s: login refused: too many failures from %s", self.session_id,
                     self.client_ip)
            self._send_key("too_many_auth_failures", client=self.client_ip)
        else:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self.errors.auth_failed()
            self._send_key("auth_failed")


# Every command this server answers, in any state: each handler answers a command out
# of sequence itself, in the personality's words (qmail takes MAIL before HELO, where

"""AUTH in an SMTP session (RFC 4954): PLAIN and LOGIN here, CRAM-MD5, SCRAM and the
token mechanisms through ``servers.sasl``; the verdict from the server's guard.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Final

from mailtalk.servers.guard import Verdict
from mailtalk.servers.sasl import server_mechanism
from mailtalk.servers.smtp_session import SMTPSession

if TYPE_CHECKING:
    from mailtalk.protocols import sasl_server

log = logging.getLogger("mailtalk.smtp")

LOGIN_USERNAME: Final = "VXNlcm5hbWU6"  # base64 "Username:"
LOGIN_PASSWORD: Final = "UGFzc3dvcmQ6"  # base64 "Password:"


class SMTPAuthSession(SMTPSession):
    """AUTH: a login's exchange, checked, journaled and answered."""

    # PLAIN/LOGIN under way: the mechanism and the answers so far. A class default, set
    # on the session when AUTH begins (an __init__ for it was a call more a connection).
    _auth: tuple[str, list[str]] | None = None

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
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            from mailtalk.protocols import sasl  # CRAM-MD5, SCRAM, tokens: loaded when used

            exchange = server_mechanism(mechanism, self.context)
            if exchange is None:
                self._reply(504, "5.5.4 Unrecognized authentication type")
                return
            self._exchange = exchange
            initial = initial.strip()
            try:
                data = sasl.decode(initial) if initial else None
            except sasl.SASLError:
                self._exchange = None
                self._reply(501, "5.5.2 Cannot decode the base64 answer")
                return
            self._sasl_step(exchange.start(data))
            return
        self._auth = (mechanism, [])
        initial = initial.strip()
        if mechanism == "PLAIN":
            if initial and initial != "=":
                self._auth_answer(initial)
            else:
                self._reply(334, "")
        elif initial:
            self._auth_answer(initial)
        else:
            self._reply(334, LOGIN_USERNAME)

    def _on_auth_response(self, line: str) -> None:
        if self._exchange is not None:
            self._exchange_answer(line)
            return
        if self._auth is None:
            self._send_key("unknown_command", command="")
            return
        if line.strip() == "*":
            self._auth = None
            self._reply(501, "5.7.0 Authentication cancelled")
            return
        self._auth_answer(line.strip())

    def _auth_answer(self, encoded: str) -> None:
        assert self._auth is not None
        mechanism, answers = self._auth
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._auth = None
            self._reply(501, "5.5.2 Cannot decode the base64 answer")
            return
        answers.append(decoded)
        if mechanism == "LOGIN" and len(answers) == 1:
            self._reply(334, LOGIN_PASSWORD)
            return
        self._auth = None
        if mechanism == "PLAIN":
            parts = decoded.split("\0")
            if len(parts) != 3:
                self._reply(501, "5.5.2 Malformed PLAIN answer")
                return
            _, name, secret = parts
        else:
            name, secret = answers
        self._defer(self._verify(name, secret, mechanism))

    def _exchange_answer(self, line: str) -> None:
        """An answer in a CRAM-MD5, SCRAM or token exchange (servers.sasl)."""
        from mailtalk.protocols import sasl

        exchange = self._exchange
        assert exchange is not None
        if line.strip() == "*":
            self._exchange = None
            self._reply(501, "5.7.0 Authentication cancelled")
            return
        try:
            data = sasl.decode(line)
        except sasl.SASLError:
            self._exchange = None
            self._reply(501, "5.5.2 Cannot decode the base64 answer")
            return
        self._sasl_step(exchange.respond(data))

    def _sasl_step(self, step: sasl_server.ServerStep) -> None:
        from mailtalk.protocols import sasl, sasl_server

        exchange = self._exchange
        assert exchange is not None
        if isinstance(step, sasl_server.Challenge):
            self._reply(334, sasl.encode(step.data))
        elif isinstance(step, sasl_server.Check):
            self._defer(self.sasl_verdict(step, self._sasl_step, self._decided))
        else:
            self._exchange = None
            if step.malformed:
                self._reply(501, f"5.5.2 {step.malformed}")
            else:
                self._decided(Verdict.OK if step.ok else Verdict.FAILED, step.user, exchange.name)

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

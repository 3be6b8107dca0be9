"""The SASL mechanisms the servers offer beyond PLAIN and LOGIN, and with what secrets.

CRAM-MD5 and SCRAM-SHA-256 need the password itself, which the servers know only for
the users this run was given (``--user``, ``--users-file``; the users file holds
hashes); XOAUTH2 and OAUTHBEARER need ``--oauth2-tokens``. Each is offered only when
its secrets exist, and, like PLAIN, only where the server allows logins at all (over
TLS, or from loopback). The exchanges themselves are sans-IO, in
:mod:`mailtalk.servers.sasl_exchange` (the lines, PLAIN and LOGIN) and
:mod:`mailtalk.protocols.sasl_server` (the other mechanisms); each server carries their
bytes in its own words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailtalk.servers.sasl_exchange import Dialect, Exchange

if TYPE_CHECKING:
    from mailtalk.protocols.sasl_server import ServerMechanism
    from mailtalk.servers.context import ServerContext


def extra_mechanisms(context: ServerContext) -> list[str]:
    """The mechanisms beyond PLAIN and LOGIN usable now, strongest first."""
    names = []
    if context.clear_passwords:
        names += ["SCRAM-SHA-256", "CRAM-MD5"]
    if context.oauth2_tokens:
        names += ["XOAUTH2", "OAUTHBEARER"]
    return names


def server_mechanism(name: str, context: ServerContext) -> ServerMechanism | None:
    """The server side of ``name`` (upper case), or None if it is not offered."""
    if name not in extra_mechanisms(context):
        return None
    # Loaded here, not with the servers: most sessions never use these exchanges.
    from mailtalk.protocols.sasl_server import BearerServer, CramMD5Server, ScramServer

    if name == "CRAM-MD5":
        return CramMD5Server(context.hostname, context.clear_password)
    if name == "SCRAM-SHA-256":
        return ScramServer(name, context.clear_password)
    return BearerServer(name, context.oauth2_token_ok)


def open_exchange(name: str, context: ServerContext, dialect: Dialect) -> Exchange | None:
    """The exchange of ``name`` (upper case) for a protocol's ``dialect``, or None if
    it is not offered: PLAIN always, LOGIN where the dialect has it, the others as
    :func:`extra_mechanisms` says."""
    if name == "PLAIN" or (name == "LOGIN" and dialect.login):
        return Exchange(name)
    mechanism = server_mechanism(name, context)
    return None if mechanism is None else Exchange(mechanism.name, mechanism)

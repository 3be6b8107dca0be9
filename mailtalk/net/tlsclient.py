"""The client's own TLS choices: SNI name, protocol versions, ciphers, client certificate.

``ClientTLS`` is what the command line said (``--sni``, ``--tls-min``/``--tls-max``,
``--ciphers``, ``--cert``/``--key``, ``--tls-dump``); ``apply`` puts it on the one
client context ``transport.make_ssl_context`` builds, so every command that connects
gets the same behaviour.

Python's ``ssl`` sets TLS 1.3 cipher suites only from OpenSSL's defaults: ``--ciphers``
(an OpenSSL cipher string, ``set_ciphers``) affects TLS 1.2 and older only.

The key's password, when the key is encrypted, lives in memory only (``key_password``
is left out of ``repr``); it is never written anywhere.
"""

from __future__ import annotations

import ssl
import warnings
from dataclasses import dataclass, field
from typing import Final

from mailtalk.language import N_, WordedError

# The --tls-min/--tls-max words and the versions they mean.
TLS_VERSIONS: Final = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

# The variable an encrypted --key's password is read from (else it is asked for).
KEY_PASSWORD_VARIABLE: Final = "MAILTALK_KEY_PASSWORD"


class ClientTLSError(WordedError):
    """A TLS option that cannot be used: its text names the option and the reason."""


@dataclass(frozen=True)
class ClientTLS:
    """The TLS settings a user can choose; the defaults change nothing."""

    sni: str | None = None  # sent as SNI (by IP too) and checked against the certificate
    min_version: str | None = None  # "1.0" .. "1.3"
    max_version: str | None = None
    ciphers: str | None = None  # an OpenSSL cipher string (TLS 1.2 and older)
    certfile: str | None = None  # PEM client certificate (may hold the key too)
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    dump: str | None = None  # write the server's chain here in PEM

    @property
    def old_protocols(self) -> bool:
        """Whether TLS 1.0 or 1.1 was asked for, which OpenSSL 3 refuses by default."""
        return self.min_version in ("1.0", "1.1") or self.max_version in ("1.0", "1.1")

    def apply(self, context: ssl.SSLContext) -> None:
        """Put these settings on a client context; ClientTLSError when one is refused."""
        if (
            self.min_version is not None
            and self.max_version is not None
            and TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]
        ):
            raise ClientTLSError(N_("--tls-min {min} is above --tls-max {max}"),
                                 min=self.min_version, max=self.max_version)
        with warnings.catch_warnings():
            # TLS 1.0/1.1 are deprecated; asking for them by name is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.min_version is not None:
                context.minimum_version = TLS_VERSIONS[self.min_version]
            if self.max_version is not None:
                context.maximum_version = TLS_VERSIONS[self.max_version]
        ciphers = self.ciphers
        if self.old_protocols and "@SECLEVEL" not in (ciphers or ""):
            # OpenSSL 3 allows TLS 1.0/1.1 only at security level 0 (they sign with SHA-1).
            ciphers = f"{ciphers or 'DEFAULT'}:@SECLEVEL=0"
        if ciphers is not None:
            try:
                context.set_ciphers(ciphers)
            except ssl.SSLError:
                raise ClientTLSError(
                    N_("--ciphers {ciphers}: OpenSSL knows no cipher in this list "
                       "(see `openssl ciphers -v`)"), ciphers=self.ciphers
                ) from None
        if self.certfile is not None:
            load_client_certificate(context, self.certfile, self.keyfile, self.key_password)


def load_client_certificate(
    context: ssl.SSLContext, certfile: str, keyfile: str | None, password: str | None
) -> None:
    """Load ``--cert``/``--key`` into ``context``; ClientTLSError says what is wrong."""
    import os

    for option, path in (("--cert", certfile), ("--key", keyfile)):
        if path is not None and not os.access(os.path.expanduser(path), os.R_OK):
            raise ClientTLSError(N_("{option} {path}: cannot be read"), option=option, path=path)

    def no_password() -> str:
        # Called by OpenSSL only for an encrypted key: without this it would prompt
        # on the terminal itself, from whatever thread is connecting.
        raise ClientTLSError(
            N_("--key {path}: the key is encrypted; set ${variable} or run on a terminal to "
               "be asked"), path=keyfile or certfile, variable=KEY_PASSWORD_VARIABLE
        )

    try:
        context.load_cert_chain(
            os.path.expanduser(certfile),
            os.path.expanduser(keyfile) if keyfile else None,
            password=password if password is not None else no_password,
        )
    except ClientTLSError:
        raise
    except ssl.SSLError as error:
        # error.reason is None for some OpenSSL errors ("[SSL] PEM lib"): the text tells
        reason = (error.reason or str(error)).replace("_", " ").lower()
        # OpenSSL says only "PEM lib" for a wrong password: the key being encrypted tells.
        if password is not None and key_is_encrypted(certfile, keyfile):
            what = N_("--cert {path}: wrong password for the encrypted key")
        elif "key values mismatch" in reason:
            what = N_("--cert {path}: the key does not belong to the certificate")
        elif not keyfile and ("no start line" in reason or "pem" in reason):
            what = N_("--cert {path}: no private key in the certificate file: give it with "
                      "--key")
        else:  # OpenSSL's reason, in its words
            what = N_("--cert {path}: not a PEM certificate and key ({reason})")
        raise ClientTLSError(what, path=certfile, reason=reason or error) from None
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ClientTLSError("--cert {path}: {reason}", path=certfile, reason=reason) from None


def key_is_encrypted(certfile: str, keyfile: str | None) -> bool:
    """Whether the client key (in ``keyfile``, else in ``certfile``) needs a password."""
    import os

    try:
        with open(os.path.expanduser(keyfile or certfile), "rb") as stream:
            text = stream.read(1024 * 1024)
    except OSError:
        return False  # load_client_certificate will say why it cannot be read
    return b"ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text

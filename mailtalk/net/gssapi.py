"""Kerberos V5 through the system's GSS-API library (MIT's libgssapi_krb5.so.2), bound
with ctypes: the security context of SASL GSSAPI (RFC 4752), seen from the client.

Why ctypes and not a Python package: the library is on every machine that has
Kerberos at all (``kinit`` needs it), and the few calls SASL needs (import a service
name, init a context with mutual authentication, wrap and unwrap one message each
way) do not justify a compiled dependency. The library is loaded only when GSSAPI is
used: ``mailtalk --help`` and every other mechanism never touch it.

The SASL framing (which token goes when, the security-layer octets) is the protocol
core's, in :mod:`mailtalk.protocols.sasl_gssapi`; this module only turns tokens into
tokens. Its errors are ``GSSAPIError``: one line, in words a user can act on ("run
kinit"), with the library's own words after them.

The ticket cache and the realm come from the usual places: ``KRB5CCNAME`` and
``KRB5_CONFIG`` (else the library's defaults, /etc/krb5.conf). Nothing here reads a
password: without a ticket GSSAPI fails, it never asks.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, Final

LIBRARY: Final = "libgssapi_krb5.so.2"

# RFC 2744 status codes: a routine error is in bits 16-23 of the major status.
_COMPLETE: Final = 0
_CONTINUE_NEEDED: Final = 1
_BAD_NAME: Final = 2
_NO_CRED: Final = 7
_CREDENTIALS_EXPIRED: Final = 11
_GSS_CODE: Final = 1
_MECH_CODE: Final = 2
_MUTUAL_FLAG: Final = 2
_SEQUENCE_FLAG: Final = 8
_INITIATE: Final = 1
# MIT's krb5 error table (krb5_err.h), as the unsigned minor status the library gives.
_PRINCIPAL_UNKNOWN: Final = 0x96C73A07  # KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN
_NO_CACHE: Final = 0x96C73AC3  # KRB5_FCC_NOFILE: no credentials cache found
_CACHE_EMPTY: Final = 0x96C73A8D  # KRB5_CC_NOTFOUND
_TICKET_EXPIRED: Final = 0x96C73A20  # KRB5KRB_AP_ERR_TKT_EXPIRED
_NO_KDC: Final = 0x96C73A9C  # KRB5_KDC_UNREACH
_NO_REALM: Final = 0x96C73A9A  # KRB5_REALM_UNKNOWN: no KDC known for the realm


class GSSAPIError(Exception):
    """GSSAPI could not go on: no library, no ticket, an unknown service, a server
    that did not prove its identity. ``str()`` is one line."""


class _Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


class _OID(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("elements", ctypes.c_void_p)]


_Status = ctypes.c_uint32
_lib: Any = None


def library(_: Callable[[str], str] = str) -> Any:
    """The loaded library, with the prototypes set (once); GSSAPIError without it,
    said by ``_`` (the session's gettext)."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(LIBRARY)  # by its soname, as the dynamic linker finds it
    except OSError:
        raise GSSAPIError(_(
            "GSSAPI needs MIT Kerberos's {library}, which is not on this system "
            "(Debian/Ubuntu: apt install libgssapi-krb5-2 krb5-user)"
        ).format(library=LIBRARY)) from None
    p, u32 = ctypes.POINTER, ctypes.c_uint32
    void_p, buf_p = ctypes.c_void_p, p(_Buffer)
    prototypes: dict[str, list[Any]] = {
        "gss_import_name": [p(u32), buf_p, p(_OID), p(void_p)],
        "gss_init_sec_context": [
            p(u32), void_p, p(void_p), void_p, p(_OID), u32, u32, void_p, buf_p,
            p(p(_OID)), buf_p, p(u32), p(u32),
        ],
        "gss_wrap": [p(u32), void_p, ctypes.c_int, u32, buf_p, p(ctypes.c_int), buf_p],
        "gss_unwrap": [p(u32), void_p, buf_p, buf_p, p(ctypes.c_int), p(u32)],
        "gss_inquire_context": [
            p(u32), void_p, p(void_p), p(void_p), p(u32), p(p(_OID)), p(u32),
            p(ctypes.c_int), p(ctypes.c_int),
        ],
        "gss_acquire_cred": [
            p(u32), void_p, u32, void_p, ctypes.c_int, p(void_p), void_p, p(u32),
        ],
        "gss_inquire_cred": [p(u32), void_p, p(void_p), p(u32), p(ctypes.c_int), void_p],
        "gss_display_name": [p(u32), void_p, buf_p, p(p(_OID))],
        "gss_display_status": [p(u32), u32, ctypes.c_int, p(_OID), p(u32), buf_p],
        "gss_release_buffer": [p(u32), buf_p],
        "gss_release_name": [p(u32), p(void_p)],
        "gss_release_cred": [p(u32), p(void_p)],
        "gss_delete_sec_context": [p(u32), p(void_p), buf_p],
    }
    for function, argtypes in prototypes.items():
        getattr(lib, function).argtypes = argtypes
        getattr(lib, function).restype = _Status
    _lib = lib
    return lib


def _oid(name: str) -> Any:
    """One of the library's exported OIDs (a ``gss_OID`` variable)."""
    return ctypes.POINTER(_OID).in_dll(library(), name)


def _status_text(major: int, minor: int) -> str:
    """The library's words for a status: Kerberos's own (the minor status) when it
    has some, else the GSS-API's, which say less ("Unspecified GSS failure")."""
    lib = library()
    words = []
    for value, kind in ((minor, _MECH_CODE),) if minor else ((major, _GSS_CODE),):
        context = ctypes.c_uint32(0)
        while True:
            said, text = ctypes.c_uint32(0), _Buffer()
            lib.gss_display_status(ctypes.byref(said), value, kind, None,
                                   ctypes.byref(context), ctypes.byref(text))
            words.append(_take(text).decode("utf-8", "replace"))
            if not context.value:
                break
    return ": ".join(w for w in words if w)


def _take(buffer: _Buffer) -> bytes:
    """The bytes of a buffer the library allocated, which is then released."""
    data = ctypes.string_at(buffer.value, buffer.length) if buffer.length else b""
    if buffer.value:
        library().gss_release_buffer(ctypes.byref(ctypes.c_uint32(0)), ctypes.byref(buffer))
    return data


def _input(data: bytes) -> tuple[_Buffer, Any]:
    """A buffer over ``data`` (and what keeps its memory alive while it is used)."""
    memory = ctypes.create_string_buffer(data, len(data))
    return _Buffer(len(data), ctypes.cast(memory, ctypes.c_void_p)), memory


def _explain(major: int, minor: int, service: str, _: Callable[[str], str] = str) -> str:
    """A failure of the first step in words a user can act on (the library's own
    words, in English, in brackets)."""
    routine = (major >> 16) & 0xFF
    said = _status_text(major, minor)
    if routine == _CREDENTIALS_EXPIRED or minor == _TICKET_EXPIRED:
        words = _("your Kerberos ticket has expired: run kinit ({said})")
    elif routine == _NO_CRED or minor in (_NO_CACHE, _CACHE_EMPTY):
        words = _("no Kerberos ticket: run kinit first ({said})")
    elif minor == _PRINCIPAL_UNKNOWN:
        words = _("the Kerberos KDC does not know the service {service}: connect by the "
                  "server's own host name, the one its service principal names ({said})")
    elif minor in (_NO_KDC, _NO_REALM):
        words = _("no Kerberos KDC answered for the service {service} ({said})")
    elif routine == _BAD_NAME:
        words = _("{service} is not a service name GSSAPI takes ({said})")
    else:
        words = _("GSSAPI failed for {service}: {said}")
    return words.format(service=service, said=said)


class KerberosContext:
    """The client's half of one GSS-API security context with ``service@host``
    (GSS_C_NT_HOSTBASED_SERVICE, RFC 2743 4.1), Kerberos V5, mutual authentication
    asked for and required. The protocol core drives it: ``step`` until
    ``established``, then ``unwrap``/``wrap`` for RFC 4752's security layer."""

    def __init__(
        self, service: str, host: str, gettext: Callable[[str], str] = str
    ) -> None:
        self._ = gettext  # the session's language, for the errors
        self.target = f"{service}@{host}"
        self.shown = f"{service}/{host}"  # as Kerberos writes the principal
        self.established = False
        self.client_principal = ""
        lib = library(gettext)
        minor = ctypes.c_uint32(0)
        buffer, _memory = _input(self.target.encode("utf-8"))
        self._name = ctypes.c_void_p()
        self._context = ctypes.c_void_p()
        major = lib.gss_import_name(ctypes.byref(minor), ctypes.byref(buffer),
                                    _oid("GSS_C_NT_HOSTBASED_SERVICE"), ctypes.byref(self._name))
        if major >> 16:
            raise GSSAPIError(_explain(major, minor.value, self.shown, gettext))

    def step(self, token: bytes | None) -> bytes:
        """The next token to send: the first one for ``None``, then the answer to the
        server's; ``established`` once the server has proved who it is."""
        _ = self._
        if self.established:
            raise GSSAPIError(_("GSSAPI: the security context is already established"))
        lib = library()
        minor, flags = ctypes.c_uint32(0), ctypes.c_uint32(0)
        given, _memory = _input(token or b"")
        out = _Buffer()
        major = lib.gss_init_sec_context(
            ctypes.byref(minor), None, ctypes.byref(self._context), self._name,
            _oid("gss_mech_krb5"), _MUTUAL_FLAG | _SEQUENCE_FLAG, 0, None,
            ctypes.byref(given) if token is not None else None, None, ctypes.byref(out),
            ctypes.byref(flags), None,
        )
        answer = _take(out)
        if major >> 16:
            if token is None:
                raise GSSAPIError(_explain(major, minor.value, self.shown, _))
            raise GSSAPIError(_("the server's GSSAPI token for {service} is not valid: {said}"
                                ).format(service=self.shown,
                                         said=_status_text(major, minor.value)))
        if major & 0xFFFF == _COMPLETE:
            if not flags.value & _MUTUAL_FLAG:
                raise GSSAPIError(_(
                    "{service} did not prove its identity (no mutual authentication)"
                ).format(service=self.shown))
            self.established = True
            self.client_principal = self._initiator()
        return answer

    def _initiator(self) -> str:
        """Whom the ticket was for (``alice@EXAMPLE.ORG``)."""
        lib = library()
        minor, name = ctypes.c_uint32(0), ctypes.c_void_p()
        major = lib.gss_inquire_context(ctypes.byref(minor), self._context, ctypes.byref(name),
                                        None, None, None, None, None, None)
        if major >> 16:
            return ""
        try:
            return _display_name(name)
        finally:
            lib.gss_release_name(ctypes.byref(minor), ctypes.byref(name))

    def wrap(self, message: bytes) -> bytes:
        """``message`` with integrity protection only (conf_req_flag false, as RFC 4752
        3.1 asks for the security-layer answer)."""
        return self._wrap_or_unwrap(message, wrap=True)

    def unwrap(self, token: bytes) -> bytes:
        return self._wrap_or_unwrap(token, wrap=False)

    def _wrap_or_unwrap(self, data: bytes, wrap: bool) -> bytes:
        lib = library()
        minor = ctypes.c_uint32(0)
        given, _memory = _input(data)
        out = _Buffer()
        if wrap:
            major = lib.gss_wrap(ctypes.byref(minor), self._context, 0, 0, ctypes.byref(given),
                                 None, ctypes.byref(out))
        else:
            major = lib.gss_unwrap(ctypes.byref(minor), self._context, ctypes.byref(given),
                                   ctypes.byref(out), None, None)
        result = _take(out)
        if major >> 16:
            _ = self._
            words = (_("GSSAPI could not wrap our answer: {said}") if wrap
                     else _("GSSAPI could not unwrap the server's security-layer offer: {said}"))
            raise GSSAPIError(words.format(said=_status_text(major, minor.value)))
        return result

    def close(self) -> None:
        """Free the library's context and name (also when the exchange failed)."""
        if _lib is None:
            return
        minor = ctypes.c_uint32(0)
        if self._context.value:
            _lib.gss_delete_sec_context(ctypes.byref(minor), ctypes.byref(self._context), None)
        if self._name.value:
            _lib.gss_release_name(ctypes.byref(minor), ctypes.byref(self._name))

    def __del__(self) -> None:
        if hasattr(self, "_context"):
            self.close()


def _display_name(name: ctypes.c_void_p) -> str:
    text = _Buffer()
    major = library().gss_display_name(ctypes.byref(ctypes.c_uint32(0)), name,
                                       ctypes.byref(text), None)
    return "" if major >> 16 else _take(text).decode("utf-8", "replace")


def ticket_principal() -> str | None:
    """Whom the default ticket cache holds a valid ticket for (``alice@EXAMPLE.ORG``),
    or None: no library, no cache, an expired ticket. Local: no KDC is asked."""
    try:
        lib = library()
    except GSSAPIError:
        return None
    minor, cred = ctypes.c_uint32(0), ctypes.c_void_p()
    major = lib.gss_acquire_cred(ctypes.byref(minor), None, 0, None, _INITIATE,
                                 ctypes.byref(cred), None, None)
    if major >> 16:
        return None
    try:
        name, lifetime = ctypes.c_void_p(), ctypes.c_uint32(0)
        major = lib.gss_inquire_cred(ctypes.byref(minor), cred, ctypes.byref(name),
                                     ctypes.byref(lifetime), None, None)
        if major >> 16 or not lifetime.value:
            return None
        try:
            return _display_name(name) or None
        finally:
            lib.gss_release_name(ctypes.byref(minor), ctypes.byref(name))
    finally:
        lib.gss_release_cred(ctypes.byref(minor), ctypes.byref(cred))

"""The GSS-API binding against the real library, where no KDC is needed: what it says
without a ticket, and without the library. (Logins with a KDC and real servers are
tests/interop/test_gssapi_real.py.)"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from mailtalk.net import gssapi


def _library_or_skip() -> None:
    try:
        ctypes.CDLL(gssapi.LIBRARY)
    except OSError:
        pytest.skip(f"{gssapi.LIBRARY} is not installed here")


def test_without_a_ticket_the_first_step_says_run_kinit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _library_or_skip()
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'empty-cache'}")
    assert gssapi.ticket_principal() is None
    context = gssapi.KerberosContext("imap", "mail.example.org")
    with pytest.raises(gssapi.GSSAPIError) as error:
        context.step(None)
    text = str(error.value)
    assert text.startswith("no Kerberos ticket: run kinit first (")
    assert str(tmp_path / "empty-cache") in text and "\n" not in text
    assert not context.established
    context.close()
    context.close()  # twice: the handles were released once


def test_without_the_library_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gssapi, "_lib", None)
    monkeypatch.setattr(gssapi, "LIBRARY", "libgssapi_krb5.so.2-not-installed")
    with pytest.raises(gssapi.GSSAPIError, match="which is not on this system"):
        gssapi.KerberosContext("smtp", "mail.example.org")
    assert gssapi.ticket_principal() is None  # auto just does not choose GSSAPI

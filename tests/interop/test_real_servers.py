"""Smoke tests of the real-server environment itself, with the standard library's clients.

If these fail, the environment (scripts/real-servers) is broken, not mailtalk.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib

import pytest

from tests.interop.conftest import RealServers

pytestmark = pytest.mark.interop

TIMEOUT = 10


def test_smtp_ehlo_advertises_starttls(real_servers: RealServers) -> None:
    with smtplib.SMTP(real_servers.host, real_servers.smtp, timeout=TIMEOUT) as smtp:
        code, _ = smtp.ehlo("client.test")
        assert code == 250
        assert smtp.has_extn("starttls")
        code, _ = smtp.starttls(context=real_servers.ssl_context())
        assert code == 220


def test_smtp_relay_is_refused(real_servers: RealServers) -> None:
    with smtplib.SMTP(real_servers.host, real_servers.smtp, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        code, _ = smtp.mail("bill@isp.test")
        assert code == 250
        code, message = smtp.rcpt("linus@torvalds.org")
        assert code == 554
        assert message == b"5.7.1 <linus@torvalds.org>: Relay access denied"
        code, _ = smtp.rcpt(real_servers.address)
        assert code == 250
        smtp.rset()


def test_submission_requires_starttls_then_offers_auth(real_servers: RealServers) -> None:
    with smtplib.SMTP(real_servers.host, real_servers.submission, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        smtp.starttls(context=real_servers.ssl_context())
        smtp.ehlo("client.test")
        assert smtp.has_extn("auth")
        smtp.login(real_servers.user, real_servers.password)


def test_smtps_implicit_tls(real_servers: RealServers) -> None:
    with smtplib.SMTP_SSL(
        real_servers.host, real_servers.smtps, timeout=TIMEOUT, context=real_servers.ssl_context()
    ) as smtp:
        code, _ = smtp.ehlo("client.test")
        assert code == 250
        assert smtp.has_extn("auth")


def test_pop3_login_and_stat(real_servers: RealServers) -> None:
    pop = poplib.POP3(real_servers.host, real_servers.pop3, timeout=TIMEOUT)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        pop.user(real_servers.user)
        pop.pass_(real_servers.password)
        count, _size = pop.stat()
        assert count >= 1
    finally:
        pop.quit()


def test_pop3s_login(real_servers: RealServers) -> None:
    pop = poplib.POP3_SSL(
        real_servers.host, real_servers.pop3s, timeout=TIMEOUT, context=real_servers.ssl_context()
    )
    try:
        pop.user(real_servers.user)
        pop.pass_(real_servers.password)
        count, _size = pop.stat()
        assert count >= 1
    finally:
        pop.quit()


def _check_imap(imap: imaplib.IMAP4, servers: RealServers) -> None:
    try:
        login_status, _ = imap.login(servers.user, servers.password)
        assert login_status == "OK"
        select_status, data = imap.select("INBOX", readonly=True)
        assert select_status == "OK"
        assert int(data[0] or b"0") >= 1
    finally:
        imap.logout()


def test_imap_login_select(real_servers: RealServers) -> None:
    _check_imap(imaplib.IMAP4(real_servers.host, real_servers.imap, timeout=TIMEOUT), real_servers)


def test_imaps_login_select(real_servers: RealServers) -> None:
    imap = imaplib.IMAP4_SSL(
        real_servers.host,
        real_servers.imaps,
        ssl_context=real_servers.ssl_context(),
        timeout=TIMEOUT,
    )
    _check_imap(imap, real_servers)

"""`mailtalk serve --tls-fault`: curl, openssl s_client and mailtalk itself must each fail
with their own words for an expired certificate, one for another name, a self-signed one,
and a server that speaks only TLS 1.0/1.1; every client trusts the server's CA, so the
fault is the only thing wrong."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.interop.clients import client_env, mailtalk_command

pytestmark = pytest.mark.interop

TIMEOUT = 30

# fault: (curl's words, s_client's words, mailtalk's words)
EXPECTED = {
    "expired": (
        "certificate has expired",
        "Verification error: certificate has expired",
        r"the certificate of localhost expired on",
    ),
    "wrong-name": (
        "no alternative certificate subject name matches target host name 'localhost'",
        "Verification error: hostname mismatch",
        "the certificate is for wrong-name.invalid, not localhost",
    ),
    "self-signed": (
        "self-signed certificate",
        "Verification error: self-signed certificate",
        "the certificate of localhost is self-signed",
    ),
    "old-protocol": (
        # OpenSSL 3 clients at their default security level refuse TLS 1.0/1.1.
        "legacy sigalg disallowed or unsupported",
        "legacy sigalg disallowed or unsupported",
        "try --tls-min 1.0",
    ),
}


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def run(command: list[str], tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env=client_env(tmp_path),
    )  # fmt: skip


@pytest.fixture(params=list(EXPECTED))
def faulty(request: pytest.FixtureRequest, mailtalk_servers: Callable[..., Any]) -> Any:
    servers = mailtalk_servers(smtp=0, smtps=0, tls_fault=request.param)
    servers.fault = request.param
    return servers


def test_curl_refuses(faulty: Any, tmp_path: Path) -> None:
    curl = need("curl")
    result = run([curl, "-sS", "--cacert", str(faulty.cafile),
                  f"smtps://localhost:{faulty.port('smtps')}"], tmp_path)  # fmt: skip
    assert result.returncode in (35, 60), result.stderr
    assert EXPECTED[faulty.fault][0] in result.stderr


def test_openssl_s_client_refuses(faulty: Any, tmp_path: Path) -> None:
    openssl = need("openssl")
    result = run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{faulty.port('smtp')}", "-starttls",
         "smtp", "-servername", "localhost", "-verify_hostname", "localhost",
         "-verify_return_error", "-CAfile", str(faulty.cafile)],
        tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert EXPECTED[faulty.fault][1] in result.stdout + result.stderr


def test_mailtalk_refuses(faulty: Any, tmp_path: Path) -> None:
    result = run(
        [*mailtalk_command(), "smtp", "--tls", f"localhost:{faulty.port('smtps')}",
         "--cafile", str(faulty.cafile)],
        tmp_path, "QUIT\n",
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert EXPECTED[faulty.fault][2] in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_old_protocol_is_reachable_when_asked_for(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    servers = mailtalk_servers(smtp=0, tls_fault="old-protocol")
    port = servers.port("smtp")
    result = run(
        [*mailtalk_command(), "smtp", f"localhost:{port}", "--starttls", "--cafile",
         str(servers.cafile), "--tls-min", "1.0"],
        tmp_path, "QUIT\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "# TLS: TLSv1.1" in result.stderr
    openssl = need("openssl")
    old = run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp",
         "-tls1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", str(servers.cafile)],
        tmp_path,
    )  # fmt: skip
    assert "Protocol  : TLSv1\n" in old.stdout, old.stdout + old.stderr
    assert "Verification: OK" in old.stdout

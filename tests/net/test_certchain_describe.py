"""net/certchain.py's description of certificates made here with ``cryptography``:
expired, wrong name, must-staple, self-signed, EC and RSA keys, a chain in order and
out of order; and net/tlsclient.py's option checks. No network."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailtalk.net.certchain import chain_json, describe_chain, describe_session_chain
from mailtalk.net.tlsclient import ClientTLS, ClientTLSError

NOW = datetime(2030, 6, 1, tzinfo=UTC)


def make(
    cn: str,
    *,
    key: object | None = None,
    issuer: tuple[x509.Certificate, object] | None = None,
    names: tuple[str, ...] = (),
    days: tuple[int, int] = (-10, 90),
    must_staple: bool = False,
) -> tuple[x509.Certificate, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    if must_staple:
        builder = builder.add_extension(
            x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False
        )
    return builder.sign(signer, hashes.SHA256()), key  # type: ignore[arg-type]


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def test_a_good_chain_has_no_problems_and_says_its_keys() -> None:
    root = make("Test Root", key=rsa.generate_private_key(65537, 2048))
    leaf = make("mail.example.org", issuer=root, names=("mail.example.org",), days=(-1, 30))
    reports = describe_chain([der(leaf[0]), der(root[0])], "mail.example.org", [der(root[0])], NOW)
    assert [r.problems for r in reports] == [(), ()]
    assert reports[0].key == "EC secp256r1 (256 bits)"
    assert reports[1].key == "RSA 2048 bits"
    assert reports[0].days_left == 30
    assert reports[0].san == ("mail.example.org",)
    assert reports[0].issuer == "CN=Test Root"
    fingerprint = leaf[0].fingerprint(hashes.SHA256()).hex().upper()
    assert reports[0].sha256.replace(":", "") == fingerprint
    assert not reports[0].must_staple


def test_expired_wrong_name_self_signed_and_must_staple() -> None:
    cert, _ = make("old.example", names=("old.example",), days=(-400, -35), must_staple=True)
    (report,) = describe_chain([der(cert)], "mail.example.org", [], NOW)
    assert report.must_staple
    assert report.days_left == -35
    problems = " | ".join(report.problems)
    assert "expired on" in problems and "(35 days ago)" in problems
    assert "not for mail.example.org: it is for old.example" in problems
    assert "self-signed, and not among the trusted CAs" in problems
    exported = chain_json([report], "sent")
    certificate = exported["certificates"][0]  # type: ignore[index]
    for key in ("subject", "san", "issuer", "not_after", "days_left", "sha256", "problems"):
        assert key in certificate
    assert certificate["ocsp_must_staple"] is True


def test_wildcard_covers_one_label_only() -> None:
    cert, _ = make("wild", names=("*.example.org",))
    assert describe_chain([der(cert)], "mx.example.org", [der(cert)], NOW)[0].problems == ()
    (report,) = describe_chain([der(cert)], "a.b.example.org", [der(cert)], NOW)
    assert any("not for a.b.example.org" in p for p in report.problems)


def test_chain_out_of_order_and_unknown_issuer() -> None:
    root = make("Root")
    other = make("Other Root")
    leaf = make("leaf.test", issuer=root, names=("leaf.test",))
    wrong, _top = describe_chain([der(leaf[0]), der(other[0])], "leaf.test", [], NOW)
    assert any("not issued by the next certificate" in p for p in wrong.problems)
    (alone,) = describe_chain([der(leaf[0])], "leaf.test", [], NOW)
    assert any("issuer CN=Root is unknown" in p for p in alone.problems)


def test_session_chain_verified_trusts_its_top() -> None:
    root = make("Root")
    leaf = make("leaf.test", issuer=root, names=("leaf.test",))
    chain = (der(leaf[0]), der(root[0]))
    reports = describe_session_chain(chain, True, "leaf.test", None)
    # made valid from NOW - 10 days, in 2030: "not yet valid" today, nothing else
    assert [all("not valid until" in p for p in r.problems) for r in reports] == [True, True]
    assert not any("self-signed" in p or "unknown" in p for r in reports for p in r.problems)


# -- net/tlsclient.py's option checks --------------------------------------------------


def context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def test_tls_min_above_max_is_refused() -> None:
    with pytest.raises(ClientTLSError, match=r"--tls-min 1.3 is above --tls-max 1.2"):
        ClientTLS(min_version="1.3", max_version="1.2").apply(context())


def test_versions_are_set_and_old_ones_lower_the_security_level() -> None:
    ctx = context()
    ClientTLS(min_version="1.2", max_version="1.2").apply(ctx)
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert ClientTLS(min_version="1.0").old_protocols
    assert not ClientTLS(min_version="1.2").old_protocols


def test_unknown_ciphers_are_refused() -> None:
    with pytest.raises(ClientTLSError, match="--ciphers NO-SUCH-CIPHER: OpenSSL knows no cipher"):
        ClientTLS(ciphers="NO-SUCH-CIPHER").apply(context())
    ClientTLS(ciphers="ECDHE+AESGCM").apply(context())  # a real one is taken


def write_pair(tmp_path: Path, password: bytes | None = None) -> tuple[Path, Path]:
    cert, key = make("client")
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "c.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return cert_path, key_path


def test_client_certificate_checks(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    ClientTLS(certfile=str(cert), keyfile=str(key)).apply(context())
    with pytest.raises(ClientTLSError, match="no private key in the certificate file"):
        ClientTLS(certfile=str(cert)).apply(context())
    other_cert, _ = write_pair(tmp_path / ".." / tmp_path.name)  # overwrites: a new pair
    _, other_key = make("other")
    mismatched = tmp_path / "other.key"
    mismatched.write_bytes(
        other_key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ClientTLSError, match="the key does not belong to the certificate"):
        ClientTLS(certfile=str(other_cert), keyfile=str(mismatched)).apply(context())
    with pytest.raises(ClientTLSError, match="cannot be read"):
        ClientTLS(certfile=str(tmp_path / "missing.pem")).apply(context())


def test_encrypted_key_needs_the_right_password(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, b"s3cret")
    with pytest.raises(ClientTLSError, match="the key is encrypted; set \\$MAILTALK_KEY_PASSWORD"):
        ClientTLS(certfile=str(cert), keyfile=str(key)).apply(context())
    with pytest.raises(ClientTLSError, match="wrong password"):
        ClientTLS(certfile=str(cert), keyfile=str(key), key_password="nope").apply(context())
    ClientTLS(certfile=str(cert), keyfile=str(key), key_password="s3cret").apply(context())
    assert "s3cret" not in repr(ClientTLS(key_password="s3cret"))

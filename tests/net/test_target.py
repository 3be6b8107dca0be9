"""URLs and HOST[:PORT] arguments: what parses, what does not, and the messages."""

from __future__ import annotations

import pytest

from mailtalk.net.target import (
    IMPLICIT_TLS_PORT,
    PLAIN_PORT,
    SCHEMES,
    Target,
    TargetError,
    parse_shortcut,
    parse_url,
    split_host_port,
)

# scheme -> (protocol, default port, TLS mode), as documented in `connect --help`.
EXPECTED_SCHEMES = {
    "smtp": ("smtp", 25, "none"),
    "smtps": ("smtp", 465, "implicit"),
    "submission": ("smtp", 587, "starttls"),
    "submissions": ("smtp", 465, "implicit"),
    "pop3": ("pop3", 110, "none"),
    "pop3s": ("pop3", 995, "implicit"),
    "imap": ("imap", 143, "none"),
    "imaps": ("imap", 993, "implicit"),
    "lmtp": ("smtp", 24, "none"),  # RFC 2033: SMTP's core with LHLO
}


def test_every_scheme_is_tested() -> None:
    assert set(SCHEMES) == set(EXPECTED_SCHEMES)


@pytest.mark.parametrize("scheme", sorted(EXPECTED_SCHEMES))
def test_scheme_default_port_and_tls(scheme: str) -> None:
    protocol, port, tls = EXPECTED_SCHEMES[scheme]
    target = parse_url(f"{scheme}://mail.example.com")
    expected = Target(protocol, "mail.example.com", port, tls, None, lmtp=scheme == "lmtp")  # type: ignore[arg-type]
    assert target == expected


@pytest.mark.parametrize("scheme", sorted(EXPECTED_SCHEMES))
def test_scheme_with_user_and_port(scheme: str) -> None:
    target = parse_url(f"{scheme}://alice@mail.example.com:2525")
    assert (target.host, target.port, target.user) == ("mail.example.com", 2525, "alice")


def test_scheme_is_case_insensitive() -> None:
    assert parse_url("IMAPS://h").tls == "implicit"


def test_user_is_percent_decoded_and_password_dropped() -> None:
    target = parse_url("imap://alice%40corp.example:hunter2@h")
    assert target.user == "alice@corp.example"
    assert "hunter2" not in target.url


def test_user_with_at_sign_takes_the_last_at() -> None:
    assert parse_url("smtp://a@b@h:26") == Target("smtp", "h", 26, "none", "a@b")


def test_empty_user_is_no_user() -> None:
    assert parse_url("smtp://@h").user is None


def test_path_after_host_is_ignored() -> None:
    assert parse_url("imap://h:1143/INBOX;UID=3").port == 1143


def test_ipv6_with_port() -> None:
    target = parse_url("smtp://[::1]:25")
    assert (target.host, target.port) == ("::1", 25)
    assert target.display == "[::1]:25"


def test_ipv6_without_port_gets_the_default() -> None:
    assert parse_url("imaps://[2001:db8::1]").port == 993


def test_bare_ipv6_in_shortcut() -> None:
    assert split_host_port("::1", 25) == ("::1", 25)
    assert parse_shortcut("smtp", "[::1]:2525", False).port == 2525


def test_ipv4_literal() -> None:
    assert parse_url("pop3://127.0.0.1:1110") == Target("pop3", "127.0.0.1", 1110, "none")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mail.example.com", "is not a URL; use e.g. smtp://mail.example.com"),
        ("http://mail.example.com", "unknown scheme 'http'; use one of: smtp, smtps"),
        ("smtp://", "no host given"),
        ("smtp://alice@", "no host given"),
        ("smtp://:25", "no host in ':25'"),
        ("smtp://h:0", "'0' is not a port number (1-65535)"),
        ("smtp://h:65536", "'65536' is not a port number (1-65535)"),
        ("smtp://h:abc", "'abc' is not a port number (1-65535)"),
        ("smtp://h:-1", "'-1' is not a port number"),
        ("smtp://[::1", "unclosed [ in '[::1'"),
        ("smtp://[::1]x", "unexpected 'x' after ]"),
        ("smtp://[]:25", "no host in '[]:25'"),
    ],
)
def test_bad_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_url(url)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_target_error_is_a_value_error() -> None:
    assert issubclass(TargetError, ValueError)


@pytest.mark.parametrize(
    ("protocol", "tls", "port"),
    [(p, tls, (IMPLICIT_TLS_PORT if tls else PLAIN_PORT)[p]) for p in ("smtp", "pop3", "imap")
     for tls in (False, True)],
)
def test_shortcut_default_ports(protocol: str, tls: bool, port: int) -> None:
    target = parse_shortcut(protocol, "h", tls)  # type: ignore[arg-type]
    assert target.port == port
    assert target.tls == ("implicit" if tls else "none")


def test_shortcut_smtp_587_means_starttls() -> None:
    assert parse_shortcut("smtp", "mail.example.com:587", False).tls == "starttls"


def test_shortcut_smtp_587_with_tls_stays_implicit() -> None:
    assert parse_shortcut("smtp", "h:587", True).tls == "implicit"


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_shortcut_587_is_only_special_for_smtp(protocol: str) -> None:
    assert parse_shortcut(protocol, "h:587", False).tls == "none"  # type: ignore[arg-type]


def test_shortcut_user() -> None:
    target = parse_shortcut("imap", "alice@127.0.0.1:1143", False)
    assert (target.user, target.host, target.port) == ("alice", "127.0.0.1", 1143)


@pytest.mark.parametrize("bad", ["", "   ", "h:99999", "h:x", "alice@"])
def test_shortcut_errors(bad: str) -> None:
    with pytest.raises(TargetError):
        parse_shortcut("smtp", bad, False)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://mail.example.com:25",
        "smtps://mail.example.com:465",
        "submission://alice@mail.example.com:587",
        "pop3://h:110",
        "pop3s://bob@h:995",
        "imap://h:143",
        "imaps://h:993",
        "smtp://[::1]:2525",
        "imaps://carol@[2001:db8::1]:993",
    ],
)
def test_url_round_trip(url: str) -> None:
    target = parse_url(url)
    assert target.url == url
    assert parse_url(target.url) == target


@pytest.mark.parametrize("url", sorted(f"{s}://u@h:1234" for s in EXPECTED_SCHEMES))
def test_url_round_trip_keeps_meaning(url: str) -> None:
    target = parse_url(url)
    again = parse_url(target.url)
    assert (again.protocol, again.host, again.port, again.user) == (
        target.protocol, target.host, target.port, target.user,
    )


def test_submission_on_other_port_round_trips_tls() -> None:
    target = parse_url("submission://h:2525")
    assert parse_url(target.url).tls == "starttls"


def test_shortcut_target_url() -> None:
    assert parse_shortcut("smtp", "h:587", False).url == "submission://h:587"
    assert parse_shortcut("pop3", "h", True).url == "pop3s://h:995"

"""qmail-style control files: parsing, matching, routing and the RCPT decision table."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailtalk.servers.policy import (
    Control,
    ControlError,
    RcptVerdict,
    RouteKind,
    decide_rcpt,
    find_user,
    init_root,
    normalize_domain,
    split_address,
)


class NameSet:
    """The users routing knows about, without hashing any password."""

    def __init__(self, *names: str) -> None:
        self._names = set(names)

    def exists(self, name: str) -> bool:
        return name in self._names

    def names(self) -> list[str]:
        return sorted(self._names)


def write_control(root: Path, **files: str) -> Control:
    control_dir = root / "control"
    control_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (control_dir / name).write_text(content, encoding="utf-8")
    return Control.load(root)


# --- split_address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Alice@Example.ORG", ("Alice", "example.org")),
        ("<Alice@Example.ORG>", ("Alice", "example.org")),
        ("  <bob@localhost>  ", ("bob", "localhost")),
        ("<>", ("", "")),
        ("", ("", "")),
        ("postmaster", ("postmaster", "")),
        ("<Postmaster>", ("Postmaster", "")),
        ('"john doe"@example.org', ("john doe", "example.org")),
        ('"a\\"b"@example.org', ('a"b', "example.org")),
        ('"a@b"@example.org', ("a@b", "example.org")),
        ("<@relay.example,@other.example:carol@Example.net>", ("carol", "example.net")),
        ("user@[127.0.0.1]", ("user", "[127.0.0.1]")),
        ("first.last+tag@sub.example.com", ("first.last+tag", "sub.example.com")),
    ],
)
def test_split_address(address: str, expected: tuple[str, str]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "@example.org",
        "alice@",
        "alice smith@example.org",
        "alice@exa mple.org",
        "alice@example..org",
        '"unbalanced@example.org',
        '"a"b"@example.org',
        '""@example.org',
        "a<b@example.org",
        "<@relay.example>",
    ],
)
def test_split_address_refuses_non_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


def test_normalize_domain() -> None:
    assert normalize_domain(" Example.ORG ") == "example.org"
    with pytest.raises(ValueError):
        normalize_domain("not a domain")


# --- loading the files ------------------------------------------------------------------


def test_missing_files_take_defaults(tmp_path: Path) -> None:
    control = Control.load(tmp_path)
    assert control.me == "localhost"
    assert control.rcpthosts == ("localhost",)
    assert control.locals == ("localhost",)
    assert control.virtualdomains == ()
    assert control.relayclients == ()


def test_me_is_the_default_for_rcpthosts_and_locals(tmp_path: Path) -> None:
    control = write_control(tmp_path, me="# this host\nMail.Example.ORG\n")
    assert control.me == "mail.example.org"
    assert control.rcpthosts == ("mail.example.org",)
    assert control.locals == ("mail.example.org",)


def test_comments_blank_lines_whitespace_and_case(tmp_path: Path) -> None:
    control = write_control(
        tmp_path,
        rcpthosts="# accepted\n\n  Example.COM  \n\t.Example.net\n# end\n",
        locals="example.com\n",
    )
    assert control.rcpthosts == ("example.com", ".example.net")
    assert control.accepts_domain("EXAMPLE.com")


def test_empty_rcpthosts_accepts_nothing(tmp_path: Path) -> None:
    control = write_control(tmp_path, rcpthosts="# nobody\n")
    assert control.rcpthosts == ()
    assert not control.accepts_domain("localhost")


@pytest.mark.parametrize(
    ("domain", "accepted"),
    [
        ("example.com", True),
        ("mail.example.com", False),  # only via the .example.net style wildcard
        ("example.net", False),  # .example.net matches subdomains, not the domain itself
        ("mx.example.net", True),
        ("a.b.example.net", True),
        ("notexample.net", False),
        ("example.org", False),
        ("EXAMPLE.COM", True),
    ],
)
def test_rcpthosts_wildcards_are_qmails(tmp_path: Path, domain: str, accepted: bool) -> None:
    control = write_control(tmp_path, rcpthosts="example.com\n.example.net\n")
    assert control.accepts_domain(domain) is accepted


def test_locals_has_no_wildcards(tmp_path: Path) -> None:
    control = write_control(tmp_path, locals="example.com\n")
    assert control.is_local_domain("Example.Com")
    assert not control.is_local_domain("sub.example.com")
    with pytest.raises(ControlError, match=r"locals:2: not a domain name: '\.example\.org'"):
        write_control(tmp_path, locals="example.com\n.example.org\n")


@pytest.mark.parametrize(
    ("filename", "content", "line", "words"),
    [
        ("rcpthosts", "example.com\n\n# c\nexa mple.org\n", 4, "not a domain name"),
        ("rcpthosts", "example.com # ours\n", 1, "comments go on their own line"),
        ("locals", "ok.example\nbad..example\n", 2, "not a domain name"),
        ("me", "one.example\ntwo.example\n", 2, "more than one host name"),
        ("me", ".example.org\n", 1, "not a domain name"),
        ("virtualdomains", "example.org alice\n", 1, "expected domain:prefix"),
        ("virtualdomains", "exa mple.org:alice\n", 1, "not a domain name"),
        ("virtualdomains", "a b@example.org:alice\n", 1, "not an address"),
        ("virtualdomains", "example.org:al ice\n", 1, "not a local-name prefix"),
        ("virtualdomains", "example.org:alice\nEXAMPLE.org:bob\n", 2, "already on line 1"),
        ("relayclients", "127.0.0.1\n10.0.0.0/33\n", 2, "CIDR"),
        ("relayclients", "256.\n", 1, "IPv4 prefix"),
        ("relayclients", '127.:allow,RELAYCLIENT=""\n', 1, "got"),
        ("relayclients", "localhost\n", 1, "IP address"),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, filename: str, content: str, line: int, words: str
) -> None:
    with pytest.raises(ControlError) as caught:
        write_control(tmp_path, **{filename: content})
    error = caught.value
    assert error.path == tmp_path / "control" / filename
    assert error.line == line
    assert str(error).startswith(f"{tmp_path / 'control' / filename}:{line}: ")
    assert words in str(error)


def test_non_utf8_file_is_a_control_error(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "rcpthosts").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ControlError, match="rcpthosts: not UTF-8"):
        Control.load(tmp_path)


# --- relayclients -----------------------------------------------------------------------


RELAYCLIENTS = """\
# relay for these
127.
10.1.
192.0.2.7
198.51.100.0/24
::1
2001:db8::/32
"""


@pytest.mark.parametrize(
    ("ip", "may_relay"),
    [
        ("127.0.0.1", True),
        ("127.200.3.4", True),
        ("10.1.255.255", True),
        ("10.2.0.1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("198.51.100.200", True),
        ("198.51.101.1", False),
        ("::1", True),
        ("[::1]", True),
        ("2001:db8:1::5", True),
        ("2001:db9::5", False),
        ("::ffff:127.0.0.1", True),  # IPv4 client seen by a dual-stack listener
        ("::ffff:192.0.2.8", False),
        ("fe80::1%eth0", False),
        ("not an ip", False),
        ("", False),
    ],
)
def test_relayclients_addresses_networks_and_prefixes(
    tmp_path: Path, ip: str, may_relay: bool
) -> None:
    control = write_control(tmp_path, relayclients=RELAYCLIENTS)
    assert control.client_may_relay(ip) is may_relay


def test_relayclients_parse_to_networks(tmp_path: Path) -> None:
    control = write_control(tmp_path, relayclients=RELAYCLIENTS)
    assert [str(network) for network in control.relayclients] == [
        "127.0.0.0/8",
        "10.1.0.0/16",
        "192.0.2.7/32",
        "198.51.100.0/24",
        "::1/128",
        "2001:db8::/32",
    ]


def test_cidr_with_host_bits_means_its_network(tmp_path: Path) -> None:
    control = write_control(tmp_path, relayclients="10.1.2.3/8\n")
    assert control.relayclients == (ipaddress.ip_network("10.0.0.0/8"),)


def test_nobody_relays_by_default_not_even_loopback(tmp_path: Path) -> None:
    for control in (Control.load(tmp_path), init_root(tmp_path, [])):
        assert not control.client_may_relay("127.0.0.1")
        assert not control.client_may_relay("::1")


# --- virtualdomains ---------------------------------------------------------------------


VIRTUALDOMAINS = """\
# qmail-send(8) examples and ours
example.org:alice
sales@example.org:bob
.fax:uucp-fax
.nowhere.mil:joe-foo-host
nowhere.mil:joe-foo
private.nowhere.mil:
"""


@pytest.mark.parametrize(
    ("local", "domain", "prefix"),
    [
        ("info", "example.org", "alice"),
        ("Sales", "EXAMPLE.ORG", "bob"),  # the exact address wins over the domain
        ("x", "a.b.fax", "uucp-fax"),
        ("info", "nowhere.mil", "joe-foo"),
        ("info", "sub.nowhere.mil", "joe-foo-host"),
        ("info", "private.nowhere.mil", None),  # an empty prefix: an exception
        ("info", "example.com", None),
        ("info", "fax", None),  # .fax matches below fax only
    ],
)
def test_virtual_prefix_lookup_order(
    tmp_path: Path, local: str, domain: str, prefix: str | None
) -> None:
    control = write_control(tmp_path, virtualdomains=VIRTUALDOMAINS)
    assert control.virtual_prefix(local, domain) == prefix


def test_catch_all_virtual_domain(tmp_path: Path) -> None:
    control = write_control(tmp_path, virtualdomains=":alias-catchall\nkept.example:\n")
    assert control.virtual_prefix("x", "anything.example") == "alias-catchall"
    assert control.virtual_prefix("x", "kept.example") is None


def test_longest_wildcard_wins(tmp_path: Path) -> None:
    control = write_control(tmp_path, virtualdomains=".example:short\n.deep.example:long\n")
    assert control.virtual_prefix("x", "a.deep.example") == "long"
    assert control.virtual_prefix("x", "a.other.example") == "short"


@pytest.mark.parametrize(
    ("address", "users", "kind", "user", "local_name"),
    [
        # qmail: info@example.org -> alice-info; our .qmail-default fallback -> alice.
        ("info@example.org", ("alice",), RouteKind.LOCAL, "alice", "alice-info"),
        ("info@example.org", ("alice", "alice-info"), RouteKind.LOCAL, "alice-info", "alice-info"),
        ("Info@Example.ORG", ("alice",), RouteKind.LOCAL, "alice", "alice-info"),
        ("sales@example.org", ("alice", "bob"), RouteKind.LOCAL, "bob", "bob-sales"),
        ("info@example.org", ("bob",), RouteKind.UNKNOWN_USER, None, "alice-info"),
        ("a-b-c@example.org", ("alice-a",), RouteKind.LOCAL, "alice-a", "alice-a-b-c"),
        ("alice@localhost", ("alice",), RouteKind.LOCAL, "alice", "alice"),
        ("Alice@LOCALHOST", ("alice",), RouteKind.LOCAL, "alice", "alice"),
        ("alice-lists@localhost", ("alice",), RouteKind.LOCAL, "alice", "alice-lists"),
        ("carol@localhost", ("alice",), RouteKind.UNKNOWN_USER, None, "carol"),
        ("alice", ("alice",), RouteKind.LOCAL, "alice", "alice"),  # no domain: at `me`
        ("someone@example.com", ("alice",), RouteKind.RELAY, None, ""),
        ("someone@mx.example.net", ("alice",), RouteKind.NOT_OURS, None, ""),
    ],
)
def test_route(
    tmp_path: Path,
    address: str,
    users: tuple[str, ...],
    kind: RouteKind,
    user: str | None,
    local_name: str,
) -> None:
    control = write_control(
        tmp_path,
        rcpthosts="localhost\nexample.org\n.example.net\n",
        virtualdomains="example.org:alice\nsales@example.org:bob\n",
    )
    route = control.route(address, NameSet(*users))
    assert (route.kind, route.user, route.local_name) == (kind, user, local_name)


def test_route_extension_and_errors(tmp_path: Path) -> None:
    control = write_control(tmp_path, virtualdomains="example.org:alice\n")
    route = control.route("info@example.org", NameSet("alice"))
    assert route.extension == "info"
    assert control.route("alice@localhost", NameSet("alice")).extension == ""
    with pytest.raises(ValueError):
        control.route("<>", NameSet("alice"))
    with pytest.raises(ValueError):
        control.route("a b@localhost", NameSet("alice"))


def test_locals_win_over_virtualdomains(tmp_path: Path) -> None:
    control = write_control(tmp_path, locals="example.org\n", virtualdomains="example.org:alice\n")
    route = control.route("bob@example.org", NameSet("alice", "bob"))
    assert (route.kind, route.user) == (RouteKind.LOCAL, "bob")


def test_find_user_prefers_the_longest_name() -> None:
    users = NameSet("a", "a-b")
    assert find_user("a-b-c", users) == "a-b"
    assert find_user("a-x", users) == "a"
    assert find_user("b-a", users) is None
    assert find_user("-a", users) is None
    assert find_user("", users) is None


# --- init_root --------------------------------------------------------------------------


def test_init_root_creates_the_files(tmp_path: Path) -> None:
    control = init_root(tmp_path, ["Example.ORG", "example.net", "example.org"])
    control_dir = tmp_path / "control"
    assert sorted(p.name for p in control_dir.iterdir()) == [
        "locals",
        "me",
        "postmaster",
        "rcpthosts",
        "relayclients",
    ]
    assert (control_dir / "me").read_text() == "localhost\n"
    assert control.rcpthosts == ("localhost", "example.org", "example.net")
    assert control.locals == ("localhost", "example.org", "example.net")
    assert control.relayclients == ()
    relayclients = (control_dir / "relayclients").read_text()
    assert all(line.startswith("#") for line in relayclients.splitlines())
    assert "CIDR" in relayclients and "127." in relayclients
    postmaster = (control_dir / "postmaster").read_text()
    assert all(line.startswith("#") for line in postmaster.splitlines())
    assert control.postmaster == ""


def test_init_root_lists_me_too(tmp_path: Path) -> None:
    control = init_root(tmp_path, ["example.org"], me="mail.example.org")
    assert control.me == "mail.example.org"
    assert control.locals == ("localhost", "mail.example.org", "example.org")


def test_init_root_never_overwrites_edits(tmp_path: Path) -> None:
    init_root(tmp_path, ["example.org"])
    control_dir = tmp_path / "control"
    (control_dir / "rcpthosts").write_text("edited.example\n")
    (control_dir / "relayclients").write_text("127.\n")
    (control_dir / "me").unlink()
    changes: list[str] = []
    control = init_root(tmp_path, ["example.net"], me="new.example", changes=changes)
    # What the user wrote stays; what the options name is added after it.
    assert (control_dir / "rcpthosts").read_text() == "edited.example\nexample.net\n"
    assert control.rcpthosts == ("edited.example", "example.net")
    assert control.client_may_relay("127.0.0.1")
    assert control.locals == ("localhost", "example.org", "example.net")
    assert control.me == "new.example"  # recreated because it was missing
    assert changes == ["control/rcpthosts: added example.net", "control/locals: added example.net"]
    assert not [p for p in control_dir.iterdir() if p.name.startswith(".")]


def test_init_root_adds_only_what_is_not_covered(tmp_path: Path) -> None:
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    (control_dir / "rcpthosts").write_text("# mine, no newline at the end\n.example.org")
    (control_dir / "locals").write_text("sub.example.org\n")
    changes: list[str] = []
    control = init_root(tmp_path, ["Sub.Example.ORG"], changes=changes)
    assert changes == []  # .example.org covers it in rcpthosts; locals has it
    assert control.rcpthosts == (".example.org",)
    init_root(tmp_path, ["example.org"], changes=changes)
    assert (control_dir / "rcpthosts").read_text() == (
        "# mine, no newline at the end\n.example.org\nexample.org\n"
    )


def test_init_root_hostname_replaces_me(tmp_path: Path) -> None:
    init_root(tmp_path, [])
    (tmp_path / "control" / "me").chmod(0o640)
    changes: list[str] = []
    control = init_root(tmp_path, [], hostname="MX.example.org", changes=changes)
    assert control.me == "mx.example.org"
    assert control.locals == ("localhost", "mx.example.org")
    assert control.accepts_domain("mx.example.org")
    assert changes[0] == "control/me: mx.example.org (was localhost)"
    assert (tmp_path / "control" / "me").stat().st_mode & 0o777 == 0o640
    changes.clear()
    again = init_root(tmp_path, [], hostname="mx.example.org", changes=changes)
    assert again.me == "mx.example.org"
    assert changes == []
    # Without --hostname a root keeps its own name, whatever the default would be.
    assert init_root(tmp_path, [], me="other.example").me == "mx.example.org"


def test_init_root_refuses_bad_domains(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a domain name"):
        init_root(tmp_path, ["exa mple.org"])


# --- decide_rcpt ------------------------------------------------------------------------


@pytest.fixture
def rcpt_control(tmp_path: Path) -> Control:
    return write_control(
        tmp_path,
        me="localhost",
        rcpthosts="localhost\nexample.com\nexample.org\n.example.net\n",
        locals="localhost\nexample.com\nlocal-only.example\n",
        virtualdomains="example.org:alice\n",
        relayclients="192.0.2.0/24\n2001:db8::/32\n",
    )


RCPT_USERS = NameSet("alice", "bob")

# (address, what it is) -> what a plain client gets; relaying changes only foreign domains.
ADDRESSES = [
    ("bob@example.com", "local known", RcptVerdict.DELIVER, "bob"),
    ("Bob@EXAMPLE.com", "local known, any case", RcptVerdict.DELIVER, "bob"),
    ("carol@example.com", "local unknown", RcptVerdict.UNKNOWN_USER, None),
    ("info@example.org", "virtual, prefix user known", RcptVerdict.DELIVER, "alice"),
    ("info@x.example.net", "rcpthosts wildcard, not local", RcptVerdict.UNKNOWN_USER, None),
    ("someone@elsewhere.example", "foreign", RcptVerdict.RELAY_DENIED, None),
    ("bob@local-only.example", "local, not in rcpthosts", RcptVerdict.RELAY_DENIED, None),
    ("bob", "no domain: at me", RcptVerdict.DELIVER, "bob"),
]
CLIENTS = [
    ("203.0.113.9", False, "stranger"),
    ("192.0.2.10", False, "relay client v4"),
    ("2001:db8::10", False, "relay client v6"),
    ("203.0.113.9", True, "authenticated"),
    ("192.0.2.10", True, "relay client, authenticated"),
]


@pytest.mark.parametrize(("address", "_what", "plain_verdict", "user"), ADDRESSES)
@pytest.mark.parametrize(("client_ip", "authenticated", "_who"), CLIENTS)
def test_decide_rcpt_table(
    rcpt_control: Control,
    address: str,
    _what: str,
    plain_verdict: RcptVerdict,
    user: str | None,
    client_ip: str,
    authenticated: bool,
    _who: str,
) -> None:
    may_relay = authenticated or client_ip != "203.0.113.9"
    expected, expected_user = plain_verdict, user
    if may_relay and address == "someone@elsewhere.example":
        expected = RcptVerdict.RELAY
    if may_relay and address == "bob@local-only.example":
        # qmail-smtpd lets a relay client through; qmail-send then delivers it locally.
        expected, expected_user = RcptVerdict.DELIVER, "bob"
    decision = decide_rcpt(rcpt_control, RCPT_USERS, address, client_ip, authenticated)
    assert decision.verdict is expected
    assert decision.user == expected_user
    assert decision.address == address


@pytest.mark.parametrize("address", ["<>", "", "a b@example.com", "bob@", "@example.com"])
@pytest.mark.parametrize("authenticated", [False, True])
def test_decide_rcpt_bad_addresses(
    rcpt_control: Control, address: str, authenticated: bool
) -> None:
    decision = decide_rcpt(rcpt_control, RCPT_USERS, address, "192.0.2.10", authenticated)
    assert decision.verdict is RcptVerdict.BAD_ADDRESS
    assert decision.reason


def test_decide_rcpt_reasons_and_domains(rcpt_control: Control) -> None:
    denied = decide_rcpt(rcpt_control, RCPT_USERS, "x@elsewhere.example", "203.0.113.9", False)
    assert denied.domain == "elsewhere.example"
    assert "rcpthosts" in denied.reason
    unknown = decide_rcpt(rcpt_control, RCPT_USERS, "carol@example.com", "203.0.113.9", False)
    assert "carol" in unknown.reason
    relayed = decide_rcpt(rcpt_control, RCPT_USERS, "x@Elsewhere.Example", "192.0.2.1", False)
    assert (relayed.verdict, relayed.domain) == (RcptVerdict.RELAY, "elsewhere.example")


def test_default_root_is_no_open_relay(tmp_path: Path) -> None:
    control = init_root(tmp_path, ["example.org"])
    users = NameSet("alice")
    for ip in ("127.0.0.1", "::1", "203.0.113.9"):
        decision = decide_rcpt(control, users, "x@gmail.example", ip, False)
        assert decision.verdict is RcptVerdict.RELAY_DENIED
    assert decide_rcpt(control, users, "alice@example.org", "::1", False).user == "alice"


# --- postmaster (RFC 5321 4.5.1) ---------------------------------------------------------

POSTMASTER_ADDRESSES = [
    "postmaster",
    "Postmaster",
    "POSTMASTER@localhost",
    "postmaster@example.com",
    "PostMaster@Example.COM",
    "postmaster@local-only.example",  # local, not in rcpthosts: still postmaster's
]


@pytest.mark.parametrize("address", POSTMASTER_ADDRESSES)
def test_postmaster_is_accepted_from_anyone_and_goes_to_the_first_user(
    rcpt_control: Control, address: str
) -> None:
    decision = decide_rcpt(rcpt_control, RCPT_USERS, address, "203.0.113.9", False)
    assert (decision.verdict, decision.user) == (RcptVerdict.DELIVER, "alice")


def test_postmaster_of_a_virtual_domain_maps_like_qmail_then_falls_back(
    rcpt_control: Control,
) -> None:
    # example.org:alice makes postmaster@example.org alice-postmaster, which reaches alice.
    virtual = decide_rcpt(rcpt_control, NameSet("bob", "alice"), "postmaster@example.org",
                          "203.0.113.9", False)
    assert (virtual.verdict, virtual.user) == (RcptVerdict.DELIVER, "alice")
    # With no alice, the prefix reaches nobody: the postmaster mailbox takes it.
    fallback = decide_rcpt(rcpt_control, NameSet("bob"), "postmaster@example.org",
                           "203.0.113.9", False)
    assert (fallback.verdict, fallback.user) == (RcptVerdict.DELIVER, "bob")


def test_postmaster_elsewhere_is_still_a_relaying_question(rcpt_control: Control) -> None:
    foreign = decide_rcpt(rcpt_control, RCPT_USERS, "postmaster@elsewhere.example",
                          "203.0.113.9", False)
    assert foreign.verdict is RcptVerdict.RELAY_DENIED
    # In rcpthosts but neither local nor virtual: nobody here is its postmaster.
    not_ours = decide_rcpt(rcpt_control, RCPT_USERS, "postmaster@x.example.net",
                           "203.0.113.9", False)
    assert not_ours.verdict is RcptVerdict.UNKNOWN_USER


def test_postmaster_mailbox_choice(tmp_path: Path) -> None:
    control = init_root(tmp_path, [])
    assert control.postmaster_mailbox(NameSet("carol", "bob")) == "bob"  # first by name
    assert control.postmaster_mailbox(NameSet("bob", "postmaster")) == "postmaster"
    assert control.postmaster_mailbox(NameSet()) == "postmaster"  # read once added
    (tmp_path / "control" / "postmaster").write_text("# the admin\nCarol\n")
    control = Control.load(tmp_path)
    assert control.postmaster == "carol"
    assert control.postmaster_mailbox(NameSet("bob", "carol")) == "carol"
    assert control.postmaster_mailbox(NameSet("bob")) == "carol"  # its Maildir waits
    (tmp_path / "control" / "postmaster").write_text("bob-admin\n")  # an extension
    assert Control.load(tmp_path).postmaster_mailbox(NameSet("bob")) == "bob"


@pytest.mark.parametrize(
    ("content", "problem"),
    [("alice\nbob\n", ":2: more than one user"), ("../etc\n", ":1: not a user name")],
)
def test_postmaster_file_errors_name_the_line(tmp_path: Path, content: str, problem: str) -> None:
    with pytest.raises(ControlError, match=problem):
        write_control(tmp_path, postmaster=content)

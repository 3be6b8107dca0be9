"""The world's map (ROOT/world.json and its text), the records file's written sections,
and world.toml: read back whole, at most 80 columns, bad data in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.practice.spec import WORLD_TOML, SpecError, load_spec
from mailtalk.practice.world import mx_records, replace_section, section_marks
from mailtalk.practice.worldmap import (
    MapAccount,
    MapError,
    MapHost,
    WorldMap,
    home_path,
    read_map,
    render_map,
    write_map,
)


def sample_map(
    port: int = 25, root: str = "/home/learner/.local/state/mailtalk/practice"
) -> WorldMap:
    big = {
        "smtp": port,
        "submission": port + 1,
        "smtps": port + 2,
        "pop3": port + 3,
        "pop3s": port + 4,
        "imap": port + 5,
        "imaps": port + 6,
    }
    return WorldMap(
        root=root,
        pid=4242,
        hosts=(
            MapHost(
                "mail.isp.test",
                ("MTA", "MDA"),
                "your ISP's mail server: relays for its "
                "users, delivers by MX lookup; alice's mailbox",
                "127.77.254.2",
                big,
                ("isp.test",),
                f"{root}/hosts/mail.isp.test",
            ),
            MapHost(
                "mx.example.net",
                ("MTA", "MDA"),
                "example.net's MX",
                "127.77.254.3",
                {k: v for k, v in big.items() if k not in ("submission", "smtps")},
                ("example.net",),
            ),
            MapHost(
                "mail.stranger.test",
                ("MTA",),
                "a stranger",
                "127.77.254.4",
                {"smtp": port},
                ("stranger.test",),
            ),
            MapHost("ns.isp.test", ("DNS",), "the DNS", "127.77.254.1", {"dns": port + 28}),
        ),
        accounts=(
            MapAccount("alice@isp.test", "alice", "wonderland", "mail.isp.test", True),
            MapAccount("bob@example.net", "bob", "builder", "mx.example.net", True),
            MapAccount("carol@stranger.test", "carol", "singing", "mail.stranger.test"),
        ),
        cafile=f"{root}/tls/ca.pem",
        journal=f"{root}/journal.jsonl",
        log=f"{root}/world.log",
        dns_records=f"{root}/hosts/ns.isp.test/dns/records",
        repl_host="mx.example.net",
        repl_service="smtp",
        block="127.77.254",
        kept=True,
        started="2026-12-06T20:00:00Z",
    )


@pytest.mark.parametrize("port", [25, 41234], ids=["standard", "free"])
def test_the_map_fits_80_columns_and_says_who_plays_what(port: int) -> None:
    text = render_map(sample_map(port), 80, home="/home/learner")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n" + text
    assert any(line.split()[:2] == ["MUA", "you"] for line in lines)
    assert any(line.split()[:3] == ["MTA", "mail.isp.test", "127.77.254.2"] for line in lines)
    assert any(
        line.split()[:3] == ["MDA", f"pop3 {port + 3}".split()[0], str(port + 3)] for line in lines
    )
    assert any(line.split()[:4] == ["DNS", "ns.isp.test", "127.77.254.1", "dns"] for line in lines)
    assert "alice / wonderland" in text and "bob / builder" in text
    assert "carol" not in text  # the stranger's account is not the learner's
    assert f"telnet 127.77.254.3 {port}" in text and f"mailtalk smtp 127.77.254.3:{port}" in text
    assert f"--resolver 127.77.254.1:{port + 28} example.net" in text
    assert "~/.local/state/mailtalk/practice/tls/ca.pem" in text


def test_the_map_reads_back_as_written(tmp_path: Path) -> None:
    world_map = sample_map(41234)
    path = tmp_path / "world.json"
    write_map(path, world_map)
    assert read_map(path) == world_map
    assert path.stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["world.json"]  # no temporary left
    data = json.loads(path.read_text())
    assert data["hosts"][1]["ports"]["pop3"] == 41237 and data["accounts"][0]["password"]


def test_a_bad_map_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    assert read_map(path) is None
    path.write_text("{not json")
    with pytest.raises(MapError, match=r"world\.json: "):
        read_map(path)
    path.write_text(json.dumps({"version": 1, "root": "/x"}))
    with pytest.raises(MapError, match="not a world map: 'pid'"):
        read_map(path)
    path.write_text(json.dumps({**sample_map().as_json(), "version": 99}))
    with pytest.raises(MapError, match="version 99"):
        read_map(path)


def test_paths_for_the_shell() -> None:
    assert home_path("/home/l/w/ca.pem", "/home/l") == "~/w/ca.pem"
    assert home_path("/home/l/my world/ca.pem", "/home/l") == "'/home/l/my world/ca.pem'"
    assert home_path("/srv/w/ca.pem", "/home/l") == "/srv/w/ca.pem"
    assert home_path("/w/ca.pem", "/") == "/w/ca.pem"


# -- the written sections of the records file ------------------------------------------

LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@given(st.lists(LINE, max_size=6), st.lists(LINE, max_size=4), st.lists(LINE, max_size=4))
def test_a_section_replaced_keeps_every_other_line(
    before: list[str], old: list[str], new: list[str]
) -> None:
    begin, end = section_marks("hosts")
    before = [line for line in before if line not in (begin, end)]
    old = [line for line in old if line not in (begin, end)]
    new = [line for line in new if line not in (begin, end)]
    text = "".join(f"{line}\n" for line in before)
    once = replace_section(text, "hosts", old)
    twice = replace_section(once, "hosts", new)
    assert twice == replace_section(text, "hosts", new)  # replaced, not added again
    assert twice.count(begin) == 1 and twice.count(end) == 1
    inside = twice.split(begin + "\n", 1)[1].split(end, 1)[0]
    assert inside.splitlines() == new
    assert twice.split(begin, 1)[0].splitlines()[: len(before)] == before


def test_the_learners_lines_after_a_section_stay() -> None:
    text = replace_section("a MX 10 b\n", "hosts", ["b A 127.77.1.2"])
    text += "mine.test A 127.0.0.9\n"
    again = replace_section(text, "hosts", ["b A 127.77.9.2"])
    assert again.splitlines()[0] == "a MX 10 b"
    assert again.splitlines()[-1] == "mine.test A 127.0.0.9"
    assert "127.77.1.2" not in again and "b A 127.77.9.2" in again


def test_mx_records_of_a_records_text() -> None:
    text = "# c\nisp.test MX 10 mail.isp.test\nx.test 60 IN MX 5 MX.X.TEST. # hm\nx A 1.2.3.4\n"
    assert mx_records(text) == [("isp.test", "mail.isp.test"), ("x.test", "mx.x.test")]


# -- world.toml -----------------------------------------------------------------------


def test_the_bundled_world() -> None:
    spec = load_spec()
    names = [host.name for host in spec.hosts]
    assert names == ["ns.isp.test", "mail.isp.test", "mx.example.net", "mail.stranger.test"]
    assert spec.dns_host.name == "ns.isp.test"
    isp = spec.host("mail.isp.test")
    assert "submission" in isp.listeners and isp.settings["tls_auth_only"] is True
    assert {(a.address, a.mine) for a in spec.accounts} >= {
        ("alice@isp.test", True),
        ("bob@example.net", True),
        ("carol@stranger.test", False),
    }
    mx = dict(mx_records(spec.records))
    assert mx["example.net"] == "mx.example.net" and mx["learner.test"] == "mail.isp.test"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("index = 3", "index = 2"), "share a name or an index"),
        (('listeners = ["smtp"]', 'listeners = ["smtp", "gopher"]'), "unknown 'gopher'"),
        (('personality = "sendmail"', 'resolver = "1.1.1.1"'), "settings.resolver"),
        (('address_prefix = "127.77"\n', ""), "missing 'address_prefix'"),
        (('repl = { host = "mx.example.net"', 'repl = { host = "nowhere.test"'), "nowhere"),
        (("index = 4", "index = 400"), "index 400 is not 1-254"),
        (('user = "alice"', 'user = "mallory"'), "seed mail for 'mallory'"),
        (('[[hosts]]\nname = "ns', '[[hosts]\nname = "ns'), "Expected ']]' at the end"),
    ],
)
def test_a_bad_world_is_one_line_naming_the_file(
    tmp_path: Path, change: tuple[str, str], says: str
) -> None:
    text = WORLD_TOML.read_text(encoding="utf-8")
    assert change[0] in text
    path = tmp_path / "world.toml"
    path.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert says in message


def test_the_map_speaks_dutch_within_80_columns() -> None:
    """The map in the learner's language: its words and the hosts' lines of world.toml."""
    import dataclasses
    import tomllib

    from mailtalk.practice.i18n import translation

    world = Path(__file__).resolve().parents[2] / "mailtalk" / "practice" / "world.toml"
    about = {host["name"]: host["about"] for host in tomllib.loads(world.read_text())["hosts"]}
    sample = sample_map(41234)
    sample = dataclasses.replace(sample, hosts=tuple(
        dataclasses.replace(host, about=about[host.name]) for host in sample.hosts))
    english = render_map(sample, 80, home="/home/learner")
    dutch = render_map(sample, 80, home="/home/learner", gettext=translation("nl").gettext)
    assert max(len(line) for line in dutch.splitlines()) <= 80, "\n" + dutch
    assert dutch.startswith("De oefenwereld in ~/")
    for words in ("rol  host", "jij", "Vanuit een ander venster:", "CA-bestand",
                  "de mailserver van je provider", "(UDP en TCP)", "alice / wonderland"):
        assert words in dutch, words
    for words in ("The practice world", "From another terminal", "your ISP's mail server"):
        assert words in english and words not in dutch

"""The protocol command reference: complete, consistent with the cores, lazily loaded."""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from types import ModuleType

import pytest

from mailtalk.client.meta import META_COMMANDS
from mailtalk.knowledge import commands
from mailtalk.knowledge.commands import (
    STATES,
    CommandHelp,
    command_help,
    commands_for,
    meta_commands,
    render_help,
)

# fmt: off
SMTP = {
    "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
    "EXPN", "ETRN", "XCLIENT", "HELP", "STARTTLS", "AUTH",
}
POP3 = {
    "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT",
    "TOP", "UIDL", "CAPA", "STLS", "UTF8",
}
IMAP = {
    "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE",
    "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS",
    "APPEND", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
    "MOVE", "UID", "IDLE", "NAMESPACE", "ENABLE", "ID", "SORT", "THREAD", "GETQUOTAROOT",
    "GETQUOTA", "SETQUOTA",
}
# fmt: on
EXPECTED = {"smtp": SMTP, "pop3": POP3, "imap": IMAP}
# every :command the REPL has is documented, and nothing else
META = {":" + name for name in META_COMMANDS}

ALL_ENTRIES = [entry for protocol in EXPECTED for entry in commands_for(protocol)]


def _id(entry: CommandHelp) -> str:
    return f"{entry.protocol}.{entry.name}"


# -- completeness ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_command_sets_are_exactly_the_listed_ones(protocol: str) -> None:
    names = [entry.name for entry in commands_for(protocol)]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED[protocol]


def test_meta_commands_are_mailtalks_own() -> None:
    assert {entry.name for entry in meta_commands()} == META


def test_the_file_has_only_known_sections() -> None:
    text = (
        importlib.resources.files("mailtalk.knowledge")
        .joinpath("commands.toml")
        .read_text(encoding="utf-8")
    )
    assert set(tomllib.loads(text)) == {"smtp", "pop3", "imap", "meta"}


# -- every entry ----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_id)
def test_every_field_is_filled_in(entry: CommandHelp) -> None:
    for field in ("syntax", "summary", "detail", "rfc", "example"):
        assert getattr(entry, field).strip(), f"{_id(entry)}: empty {field}"
    assert entry.states


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_id)
def test_states_are_those_of_the_protocol(entry: CommandHelp) -> None:
    assert set(entry.states) <= set(STATES[entry.protocol])
    assert len(entry.states) == len(set(entry.states))


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_id)
def test_syntax_starts_with_the_command(entry: CommandHelp) -> None:
    assert entry.syntax.split()[0] == entry.name


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_id)
def test_summary_is_one_short_line(entry: CommandHelp) -> None:
    assert "\n" not in entry.summary
    assert len(entry.summary) <= 90


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_id)
def test_rfc_names_an_rfc(entry: CommandHelp) -> None:
    if (entry.protocol, entry.name) == ("smtp", "XCLIENT"):
        # a Postfix extension: its reference is Postfix's README, there is no RFC
        assert entry.rfc.startswith("Postfix ")
        return
    assert entry.rfc.startswith("RFC ")


@pytest.mark.parametrize("entry", meta_commands(), ids=_id)
def test_meta_entries(entry: CommandHelp) -> None:
    assert entry.protocol == "meta"
    assert entry.syntax.split()[0] == entry.name
    for field in ("summary", "detail", "example"):
        assert getattr(entry, field).strip()
    assert entry.rfc == ""
    assert entry.states == ()


@pytest.mark.parametrize("entry", meta_commands(), ids=_id)
def test_meta_briefs_fit_the_help_list(entry: CommandHelp) -> None:
    """The brief line is what :help lists after the usage (padded to 28 columns, or
    under it), the completion menu and the man page show: one line within 80 columns."""
    assert entry.brief and "\n" not in entry.brief
    assert len(f"  {'':<28} {entry.brief}") <= 80
    assert entry.brief[0].islower() and not entry.brief.endswith(".")  # the man page adds


def test_meta_commands_take_their_words_from_the_knowledge_base() -> None:
    for name, meta in META_COMMANDS.items():
        entry = command_help("meta", name)
        assert entry is not None
        assert (meta.usage, meta.brief) == (entry.syntax, entry.brief)


def test_imap_entries_say_the_tag_is_added() -> None:
    missing = [
        e.name for e in commands_for("imap") if "adds the tag" not in " ".join(e.detail.split())
    ]
    assert missing == []


def test_imap_examples_have_no_tag() -> None:
    for entry in commands_for("imap"):
        first = entry.example.splitlines()[0]
        assert first.split()[0] in (entry.name, ":auth", ":starttls"), entry.name


def test_smtp_data_explains_dot_stuffing_and_file() -> None:
    entry = command_help("smtp", "DATA")
    assert entry is not None
    assert "dot-stuff" in entry.detail
    assert 'lone "."' in entry.detail
    assert ":file PATH" in entry.detail


@pytest.mark.parametrize(
    ("protocol", "name"),
    [
        ("smtp", "AUTH"),
        ("pop3", "AUTH"),
        ("pop3", "PASS"),
        ("imap", "AUTHENTICATE"),
        ("imap", "LOGIN"),
    ],
)
def test_login_entries_point_to_colon_auth(protocol: str, name: str) -> None:
    entry = command_help(protocol, name)
    assert entry is not None
    assert ":auth plain|login USER" in entry.detail
    assert "without echo" in entry.detail
    assert "history" in entry.detail


# -- consistency with the protocol cores -------------------------------------------------


def _core(name: str) -> ModuleType:
    """The core module; skipped only while it has not been written yet."""
    module = f"mailtalk.protocols.{name}"
    if importlib.util.find_spec(module) is None:
        pytest.importorskip(module)
    return importlib.import_module(module)


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_every_verb_of_the_core_state_table_has_help(protocol: str) -> None:
    core = _core(protocol)
    verbs = {verb for verbs in core.VALID_COMMANDS.values() for verb in verbs}
    assert verbs, "empty state table"
    missing = sorted(verb for verb in verbs if command_help(protocol, verb) is None)
    assert missing == []


def test_imap_uid_commands_map_to_the_uid_entry() -> None:
    core = _core("imap")
    uid_verbs = {verb for verbs in core.VALID_COMMANDS.values() for verb in verbs if " " in verb}
    for verb in uid_verbs:
        entry = command_help("imap", verb)
        assert entry is not None
        assert entry.name == verb.split()[0]


# -- lookups ------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["EHLO", "ehlo", "Ehlo", "  ehlo  "])
def test_lookup_is_case_insensitive(spelling: str) -> None:
    entry = command_help("smtp", spelling)
    assert entry is not None
    assert entry.name == "EHLO"
    assert command_help("SMTP", spelling) == entry


@pytest.mark.parametrize("spelling", ["uid fetch", "UID STORE", "Uid  Move", "uid"])
def test_uid_commands_give_the_uid_entry(spelling: str) -> None:
    entry = command_help("imap", spelling)
    assert entry is not None
    assert entry.name == "UID"


def test_a_full_command_line_finds_its_verb() -> None:
    entry = command_help("smtp", "mail from:<alice@example.com>")
    assert entry is not None
    assert entry.name == "MAIL"


def test_unknown_lookups() -> None:
    assert command_help("smtp", "FETCH") is None
    assert command_help("smtp", "") is None
    assert command_help("smtp", ":help") is None
    assert command_help("gopher", "QUIT") is None
    assert commands_for("gopher") == []


def test_meta_lookup_with_or_without_colon() -> None:
    entry = command_help("meta", ":auth")
    assert entry is not None
    assert entry.name == ":auth"
    assert command_help("meta", "AUTH") == entry


def test_protocol_aliases() -> None:
    assert command_help("imaps", "select") == command_help("imap", "SELECT")
    assert commands_for("pop3s") == commands_for("pop3")


def test_same_verb_in_different_protocols_differs() -> None:
    smtp, pop3 = command_help("smtp", "AUTH"), command_help("pop3", "AUTH")
    assert smtp is not None and pop3 is not None
    assert smtp.protocol == "smtp" and pop3.protocol == "pop3"
    assert smtp.detail != pop3.detail


def test_entries_are_frozen() -> None:
    entry = command_help("pop3", "RETR")
    assert entry is not None
    with pytest.raises(AttributeError):
        entry.summary = "changed"  # type: ignore[misc]


# -- rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ALL_ENTRIES + meta_commands(), ids=_id)
def test_render_help_contains_syntax_rfc_and_example(entry: CommandHelp) -> None:
    text = render_help(entry)
    assert text.splitlines()[0] == entry.syntax
    for reference in entry.rfc.split("; ") if entry.rfc else ():
        assert reference in text
    for line in entry.example.splitlines():
        assert line.strip() in text
    if entry.states:
        assert "Valid in:" in text


@pytest.mark.parametrize("entry", ALL_ENTRIES + meta_commands(), ids=_id)
def test_render_help_wraps_the_text_at_78_columns(entry: CommandHelp) -> None:
    text = render_help(entry)
    # The syntax and example lines are shown as they are; everything else is wrapped.
    verbatim = {entry.syntax} | {("  " + line).rstrip() for line in entry.example.splitlines()}
    long_lines = [line for line in text.splitlines() if len(line) > 78 and line not in verbatim]
    assert long_lines == []
    assert "\n\n\n" not in text
    assert text == text.strip()


def test_render_help_keeps_paragraphs() -> None:
    entry = command_help("smtp", "AUTH")
    assert entry is not None
    text = render_help(entry)
    assert text.count("\n\n") >= entry.detail.count("\n\n") + 2


# -- laziness -----------------------------------------------------------------------------


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    commands._load.cache_clear()
    yield
    commands._load.cache_clear()


def test_importing_does_not_parse_the_file() -> None:
    code = (
        "import sys\n"
        "import mailtalk.knowledge.commands as c\n"
        "assert 'tomllib' not in sys.modules, 'tomllib imported at import time'\n"
        "assert c._load.cache_info().currsize == 0\n"
        "assert c.command_help('smtp', 'EHLO') is not None\n"
        "assert 'tomllib' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_file_is_parsed_once(fresh_cache: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_loads = tomllib.loads

    def counting_loads(text: str) -> dict[str, object]:
        calls.append(len(text))
        return real_loads(text)

    monkeypatch.setattr(tomllib, "loads", counting_loads)
    assert calls == []
    assert command_help("imap", "FETCH") is not None
    assert commands_for("smtp")
    assert meta_commands()
    assert render_help(commands_for("pop3")[0])
    assert len(calls) == 1

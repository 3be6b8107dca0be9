"""Reading session files (.mt): directives, variables, here-blocks, includes, checks.

Everything here goes through ``parse_text`` / ``parse_file`` only: no sockets.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.script.format import (
    MAX_INCLUDE_DEPTH,
    Auth,
    Connect,
    Data,
    EndLoop,
    Expect,
    ExpectClose,
    HandshakeTLS,
    Location,
    Loop,
    Script,
    ScriptError,
    Send,
    Sleep,
    StartTLS,
    parse_file,
    parse_text,
)

CONNECT = "connect smtp://127.0.0.1:2525\n"


def parse(body: str, **options: object) -> Script:
    """``body`` after a connect line (line 1), so body lines start at line 2."""
    return parse_text(CONNECT + body, **options)  # type: ignore[arg-type]


def steps(body: str, **options: object) -> list[object]:
    return parse(body, **options).steps[1:]


def error_of(text: str, **options: object) -> str:
    with pytest.raises(ScriptError) as caught:
        parse_text(text, **options)  # type: ignore[arg-type]
    return str(caught.value)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# the docstring's own example
# ---------------------------------------------------------------------------


def test_the_module_docstring_example_parses() -> None:
    import mailtalk.script.format as module

    assert module.__doc__ is not None
    example = module.__doc__.split("\n\n", 1)[1].split("\n\n``C:``", 1)[0]
    text = "\n".join(line[4:] for line in example.splitlines())
    script = parse_text(text)
    kinds = [type(step).__name__ for step in script.steps]
    assert kinds == [
        "Connect", "Expect", "Send", "Expect", "StartTLS", "Send", "Expect", "Auth",
        "Send", "Expect", "Send", "Expect", "Data", "Expect", "Send", "Expect", "ExpectClose",
    ]  # fmt: skip
    sends = [step.line for step in script.steps if isinstance(step, Send)]
    assert "MAIL FROM:<alice@example.test>" in sends
    [data] = [step for step in script.steps if isinstance(step, Data)]
    assert data.message == b"Subject: hello\n\nHi Bob.\n"
    [auth] = [step for step in script.steps if isinstance(step, Auth)]
    assert (auth.mechanism, auth.user, auth.secret_variable) == (
        "PLAIN",
        "alice",
        "MAILTALK_PASSWORD",
    )


# ---------------------------------------------------------------------------
# every directive
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mailtalk.servers.certs import ensure_certificates

    return str(ensure_certificates(tmp_path_factory.mktemp("ca")).ca_cert)


def test_connect_and_its_options(ca_pem: str) -> None:
    script = parse_text(
        "connect smtp://mx.example.test:25\n"
        "connect imaps://mx.example.test insecure\n"
        f"connect pop3s://mx.example.test cafile={ca_pem}\n"
        f"connect submission://mx.example.test insecure cafile={ca_pem}\n"
    )
    assert script.steps == [
        Connect(Location("<script>", 1), "smtp://mx.example.test:25"),
        Connect(Location("<script>", 2), "imaps://mx.example.test", insecure=True),
        Connect(Location("<script>", 3), "pop3s://mx.example.test", cafile=ca_pem),
        Connect(Location("<script>", 4), "submission://mx.example.test", True, ca_pem),
    ]


def test_connect_cafile_is_relative_to_the_script(tmp_path: Path, ca_pem: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "ca.pem").write_bytes(Path(ca_pem).read_bytes())
    script = write(tmp_path / "dir" / "s.mt", "connect smtps://h cafile=ca.pem\n")
    [connect] = parse_file(str(script)).steps
    assert isinstance(connect, Connect)
    assert connect.cafile == str(tmp_path / "dir" / "ca.pem")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("connect", "usage: connect URL"),
        ("connect smtp://h insecure cafile=x extra", "usage: connect URL"),
        ("connect smtp://h secure", "unknown connect option 'secure'"),
        ("connect smtp://h:99999999", "not a port number"),
        ("connect smtp://[::1", "unclosed ["),
        ("connect gopher://h", ""),
    ],
)
def test_bad_connect_lines(line: str, message: str) -> None:
    text = error_of(line + "\n")
    assert text.startswith("<script>:1: ")
    assert message in text


def test_tls_directives_and_auth() -> None:
    assert steps("starttls\ntls\nauth plain alice\nauth LOGIN bob@x.test MY_SECRET\n") == [
        StartTLS(Location("<script>", 2)),
        HandshakeTLS(Location("<script>", 3)),
        Auth(Location("<script>", 4), "PLAIN", "alice"),
        Auth(Location("<script>", 5), "LOGIN", "bob@x.test", "MY_SECRET"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("starttls now", "usage: starttls"),
        ("tls 1.3", "usage: tls"),
        ("auth plain", "usage: auth MECHANISM USER [ENVVAR]"),
        ("auth plain a B C", "usage: auth"),
        ("auth otp alice", "mailtalk does scram-sha-256, scram-sha-1, cram-md5"),
        ("auth gssapi alice bob", "usage: auth gssapi [USER]"),
        ("auth external alice bob", "usage: auth external [USER]"),
        ("auth plain alice not-a-name", "is not an environment variable name"),
        ("expect-close now", "usage: expect-close"),
        ("loop 3", "usage: loop"),
        ("sleep", "usage: sleep SECONDS"),
        ("sleep soon", "not a number of seconds"),
        ("sleep -1", "0 to 3600 seconds"),
        ("sleep 3601", "0 to 3600 seconds"),
        ("sleep nan", "0 to 3600 seconds"),
        ("sleep inf", "0 to 3600 seconds"),
        ("include", "usage: include FILE"),
        ("include a b", "usage: include FILE"),
        ("data", "usage: data FILE"),
        ("data a b", "usage: data FILE"),
        ("set", "usage: set NAME VALUE"),
        ("set 1X value", "usage: set NAME VALUE"),
        ("S:", "S: needs an expectation"),
        ("S:    ", "S: needs an expectation"),
        ("S: 250 /(unclosed/", "bad pattern"),
    ],
)
def test_bad_directive_arguments_name_the_line(line: str, message: str) -> None:
    text = error_of(CONNECT + "\n" + line + "\n")
    assert text.startswith("<script>:3: "), text
    assert message in text


def test_sleep_expect_close_loop_end() -> None:
    assert steps("sleep 0.25\nsleep 0\nloop\nC: NOOP\nend\nexpect-close\n") == [
        Sleep(Location("<script>", 2), 0.25),
        Sleep(Location("<script>", 3), 0.0),
        Loop(Location("<script>", 4)),
        Send(Location("<script>", 5), "NOOP"),
        EndLoop(Location("<script>", 6)),
        ExpectClose(Location("<script>", 7)),
    ]
    assert parse("loop\nend\n").has_loop
    assert not parse("C: NOOP\n").has_loop


def test_directives_ignore_case_and_indentation() -> None:
    assert steps("  STARTTLS\n\tSleep 1\n  c: NOOP\n  s: 250\n") == [
        StartTLS(Location("<script>", 2)),
        Sleep(Location("<script>", 3), 1.0),
        Send(Location("<script>", 4), "NOOP"),
        Expect(Location("<script>", 5), steps("S: 250\n")[0].expectation),  # type: ignore[attr-defined]
    ]


def test_unknown_directive() -> None:
    text = error_of(CONNECT + "HELO there\n")
    assert text.startswith("<script>:2: unknown directive 'helo'")
    assert "C:" in text and "# for a comment" in text


# ---------------------------------------------------------------------------
# C: and S: lines
# ---------------------------------------------------------------------------


def test_send_lines_keep_everything_after_one_space() -> None:
    sends = steps("C: EHLO x\nC:NOOP\nC:   two spaces  \nC: a # not a comment\nC:\n")
    assert [step.line for step in sends] == [  # type: ignore[attr-defined]
        "EHLO x", "NOOP", "  two spaces  ", "a # not a comment", "",
    ]  # fmt: skip


def test_expect_lines_are_parsed() -> None:
    [expect] = steps("S: 554 5.7.1 *Relay access denied*\n")
    assert isinstance(expect, Expect)
    assert expect.expectation.code == "554"
    assert expect.expectation.enhanced == "5.7.1"
    assert expect.expectation.text == "*Relay access denied*"


# ---------------------------------------------------------------------------
# comments and blank lines
# ---------------------------------------------------------------------------


def test_comments_blank_lines_and_trailing_comments() -> None:
    script = parse_text(
        "# a session\n"
        "\n"
        "   # indented comment\n"
        "connect smtp://h:25   # the server\n"
        "\t\n"
        "sleep 0.5 # wait a little\n"
        "set NAME value # comment\n"
        "set HASH a#b\n"
        "C: ${NAME} ${HASH}\n"
        "loop   # repeat\n"
        "end # done\n"
        "expect-close # bye\n"
    )
    assert [type(step).__name__ for step in script.steps] == [
        "Connect", "Sleep", "Send", "Loop", "EndLoop", "ExpectClose",
    ]  # fmt: skip
    assert script.steps[0] == Connect(Location("<script>", 4), "smtp://h:25")
    assert script.steps[1] == Sleep(Location("<script>", 6), 0.5)
    assert script.steps[2] == Send(Location("<script>", 9), "value a#b")


def test_only_comments_and_set_lines_is_an_error() -> None:
    with pytest.raises(ScriptError, match="no steps"):
        parse_text("# nothing\n\nset A b\n")


def test_an_empty_file_is_an_error() -> None:
    with pytest.raises(ScriptError, match="starts with connect"):
        parse_text("# nothing to do\n")


# ---------------------------------------------------------------------------
# variables
# ---------------------------------------------------------------------------


def test_variables_precedence_var_then_set_then_environment() -> None:
    text = CONNECT + "set A from-set\nset B from-set\nC: ${A} ${B} ${C}\n"
    [send] = parse_text(
        text, variables={"A": "from-var"}, environment={"A": "env", "B": "env", "C": "env"}
    ).steps[1:]
    assert send == Send(Location("<script>", 4), "from-var from-set env")


def test_environment_used_before_set_and_set_applies_from_its_line_on() -> None:
    [first, second] = steps("C: ${X}\nset X mine\nC: ${X}\n", environment={"X": "env"})
    assert (first.line, second.line) == ("env", "mine")  # type: ignore[attr-defined]


def test_parse_file_reads_the_real_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MT_TEST_HOST", "mx.example.test")
    script = write(tmp_path / "s.mt", "connect smtp://${MT_TEST_HOST}:25\n")
    [connect] = parse_file(str(script)).steps
    assert connect == Connect(Location(str(script), 1), "smtp://mx.example.test:25")


def test_parse_text_does_not_read_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MT_TEST_ONLY_IN_ENV", "x")
    assert "undefined variable ${MT_TEST_ONLY_IN_ENV}" in error_of(
        CONNECT + "C: ${MT_TEST_ONLY_IN_ENV}\n"
    )


def test_double_dollar_is_a_dollar_and_is_not_substituted_again() -> None:
    sends = steps("set PRICE $$5\nset Y not-me\nC: ${PRICE} $$ $${Y} $x $\nC: cost $$${PRICE}\n")
    assert [step.line for step in sends] == ["$5 $ ${Y} $x $", "cost $$5"]  # type: ignore[attr-defined]


def test_set_value_may_hold_spaces_and_other_variables() -> None:
    [send] = steps("set NAME Alice Liddell\nset FROM ${NAME} <alice@x>\nC: ${FROM}\n")
    assert send.line == "Alice Liddell <alice@x>"  # type: ignore[attr-defined]


def test_set_without_value_is_empty() -> None:
    [send] = steps("set EMPTY\nC: [${EMPTY}]\n")
    assert send.line == "[]"  # type: ignore[attr-defined]


def test_variables_work_in_directives_and_expectations() -> None:
    script = parse_text(
        "connect ${URL}\nS: ${CODE} ${WORD}\nauth plain ${USER}\nsleep ${WAIT}\n",
        variables={"URL": "imap://h", "CODE": "OK", "WORD": "ready", "USER": "u", "WAIT": "0"},
    )
    assert script.steps[0] == Connect(Location("<script>", 1), "imap://h")
    expectation = script.steps[1].expectation  # type: ignore[attr-defined]
    assert (expectation.code, expectation.text) == ("OK", "ready")
    assert script.steps[2] == Auth(Location("<script>", 3), "PLAIN", "u")


@pytest.mark.parametrize(
    "line",
    ["C: MAIL FROM:<${SENDER}>", "S: 250 ${SENDER}", "sleep ${SENDER}", "set X ${SENDER}"],
)
def test_undefined_variable_names_file_line_and_remedies(line: str) -> None:
    text = error_of(CONNECT + "\n" + line + "\n", environment={"OTHER": "x"})
    assert text.startswith("<script>:3: undefined variable ${SENDER}")
    assert "--var SENDER=" in text and "export SENDER" in text


def test_undefined_variable_in_a_file_names_the_file(tmp_path: Path) -> None:
    script = write(tmp_path / "s.mt", CONNECT + "C: ${NOPE_NOT_SET_ANYWHERE}\n")
    with pytest.raises(ScriptError, match=r"s\.mt:2: undefined variable"):
        parse_file(str(script), environment={})


def test_dollar_without_braces_is_left_alone() -> None:
    [send] = steps("C: $HOME ${ not a name} $1\n")
    assert send.line == "$HOME ${ not a name} $1"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# here-blocks and data files
# ---------------------------------------------------------------------------


def test_here_block_substitutes_and_ends_with_a_newline() -> None:
    [data, after] = steps(
        "set WHO Bob\ndata <<EOF\nSubject: hi ${WHO}\n\nHi ${WHO}, $$5.\n.leading dot\n"
        "EOF\nS: 250\n"
    )
    assert isinstance(data, Data)
    assert data.where == Location("<script>", 3)
    assert data.message == b"Subject: hi Bob\n\nHi Bob, $5.\n.leading dot\n"
    assert after.where == Location("<script>", 9)  # type: ignore[attr-defined]


def test_quoted_here_block_keeps_variables_as_written() -> None:
    [data] = steps("data <<'END'\nHi ${UNDEFINED} and $$ and ${X}\nEND\n")
    assert data.message == b"Hi ${UNDEFINED} and $$ and ${X}\n"  # type: ignore[attr-defined]


def test_here_block_marker_names_and_trailing_comment() -> None:
    [a, b] = steps("data <<MSG_1   # the message\nx\nMSG_1\ndata <<eof\ny\n  eof  \n")
    assert (a.message, b.message) == (b"x\n", b"y\n")  # type: ignore[attr-defined]


def test_here_block_lines_are_not_directives() -> None:
    [data] = steps("data <<EOF\nC: not sent\nS: 500\n# not a comment\n\nconnect x\nEOF\n")
    assert data.message == b"C: not sent\nS: 500\n# not a comment\n\nconnect x\n"  # type: ignore[attr-defined]


def test_empty_here_block() -> None:
    [data] = steps("data <<EOF\nEOF\n")
    assert data.message == b"\n"  # type: ignore[attr-defined]


def test_here_block_keeps_utf8() -> None:
    [data] = steps("data <<EOF\nSubject: héllo ☃\nEOF\n")
    assert data.message == "Subject: héllo ☃\n".encode()  # type: ignore[attr-defined]


def test_unterminated_here_block_names_the_data_line() -> None:
    text = error_of(CONNECT + "C: DATA\n\ndata <<EOF\nSubject: x\n\nbody\nEOF-not\n")
    assert text.startswith("<script>:4: here-block never ends: no line 'EOF'")


def test_undefined_variable_in_a_here_block_names_its_own_line() -> None:
    text = error_of(CONNECT + "data <<EOF\nline one\nTo: ${NOBODY}\nEOF\n")
    assert text.startswith("<script>:4: undefined variable ${NOBODY}")


def test_here_block_line_numbers_continue_after_it() -> None:
    text = error_of(CONNECT + "data <<EOF\na\nb\nEOF\nbogus\n")
    assert text.startswith("<script>:6: unknown directive 'bogus'")


def test_form_feed_in_a_here_block_is_kept() -> None:
    [data] = steps("data <<EOF\npage one\x0cpage two\nEOF\n")
    assert data.message == b"page one\x0cpage two\n"  # type: ignore[attr-defined]


def test_unicode_line_separator_inside_a_send_line_stays_in_it() -> None:
    [send] = steps("C: SUBJECT a\u2028b\n")
    assert send.line == "SUBJECT a\u2028b"  # type: ignore[attr-defined]


def test_data_file_is_read_as_bytes_relative_to_the_script(tmp_path: Path) -> None:
    (tmp_path / "msgs").mkdir()
    raw = b"Subject: raw\r\n\r\n\xff\xfe not utf-8\r\n.dot\r\n"
    (tmp_path / "msgs" / "m.eml").write_bytes(raw)
    script = write(tmp_path / "s.mt", CONNECT + "data msgs/m.eml\ndata ${DIR}/msgs/m.eml\n")
    _, relative, absolute = parse_file(str(script), variables={"DIR": str(tmp_path)}).steps
    assert relative == Data(Location(str(script), 2), raw)
    assert absolute == Data(Location(str(script), 3), raw)


def test_missing_data_file(tmp_path: Path) -> None:
    script = write(tmp_path / "s.mt", CONNECT + "\ndata missing.eml\n")
    with pytest.raises(ScriptError) as caught:
        parse_file(str(script))
    assert str(caught.value) == f"{script}:3: data missing.eml: no such file"


def test_data_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    script = write(tmp_path / "s.mt", CONNECT + "data d\n")
    with pytest.raises(ScriptError, match=r"s\.mt:2: data d: "):
        parse_file(str(script))


def test_data_file_over_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mailtalk.script.format as module

    monkeypatch.setattr(module, "MAX_MESSAGE_BYTES", 10)
    (tmp_path / "big.eml").write_bytes(b"x" * 11)
    (tmp_path / "ok.eml").write_bytes(b"x" * 10)
    script = write(tmp_path / "s.mt", CONNECT + "data ok.eml\ndata big.eml\n")
    with pytest.raises(ScriptError, match=r"s\.mt:3: data big\.eml: over 10 bytes"):
        parse_file(str(script))
    with pytest.raises(ScriptError, match=r":2: message over"):
        parse_text(CONNECT + "data <<EOF\n" + "y" * 20 + "\nEOF\n")


# ---------------------------------------------------------------------------
# include
# ---------------------------------------------------------------------------


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "ehlo.mt", "C: EHLO ${NAME}\nS: 250\ninclude quit.mt\n")
    write(tmp_path / "lib" / "quit.mt", "C: QUIT\nS: 221\n")
    main = write(tmp_path / "main.mt", CONNECT + "set NAME client.test\ninclude lib/ehlo.mt\n")
    script = parse_file(str(main))
    assert script.name == str(main)
    sends = [step for step in script.steps if isinstance(step, Send)]
    assert [s.line for s in sends] == ["EHLO client.test", "QUIT"]
    assert sends[0].where == Location(str(tmp_path / "lib" / "ehlo.mt"), 1)
    assert sends[1].where == Location(str(tmp_path / "lib" / "quit.mt"), 1)


def test_set_in_an_included_file_is_seen_after_it(tmp_path: Path) -> None:
    write(tmp_path / "vars.mt", "set TO bob@example.test\n")
    main = write(tmp_path / "main.mt", CONNECT + "include vars.mt\nC: RCPT TO:<${TO}>\n")
    assert parse_file(str(main)).steps[-1].line == "RCPT TO:<bob@example.test>"  # type: ignore[attr-defined]


def test_include_of_a_missing_file_names_the_include_line(tmp_path: Path) -> None:
    main = write(tmp_path / "main.mt", CONNECT + "\ninclude nope.mt\n")
    with pytest.raises(ScriptError) as caught:
        parse_file(str(main))
    assert str(caught.value).startswith(f"{main}:3: no such file: {tmp_path / 'nope.mt'}")


def test_errors_inside_an_included_file_name_that_file(tmp_path: Path) -> None:
    write(tmp_path / "inc.mt", "C: NOOP\nbogus\n")
    main = write(tmp_path / "main.mt", CONNECT + "include inc.mt\n")
    with pytest.raises(ScriptError) as caught:
        parse_file(str(main))
    assert str(caught.value).startswith(f"{tmp_path / 'inc.mt'}:2: unknown directive 'bogus'")


def test_include_loop_is_detected(tmp_path: Path) -> None:
    a = write(tmp_path / "a.mt", CONNECT + "include b.mt\n")
    write(tmp_path / "b.mt", "C: NOOP\ninclude a.mt\n")
    with pytest.raises(ScriptError, match="include loop") as caught:
        parse_file(str(a))
    assert f"{a} -> {tmp_path / 'b.mt'} -> {a}" in str(caught.value)


def test_self_include_is_detected(tmp_path: Path) -> None:
    a = write(tmp_path / "a.mt", CONNECT + "include a.mt\n")
    with pytest.raises(ScriptError, match="include loop"):
        parse_file(str(a))


def test_include_loop_error_names_the_include_line(tmp_path: Path) -> None:
    a = write(tmp_path / "a.mt", CONNECT + "\ninclude a.mt\n")
    with pytest.raises(ScriptError) as caught:
        parse_file(str(a))
    assert str(caught.value).startswith(f"{a}:3: ")


def test_include_depth_limit(tmp_path: Path) -> None:
    depth = MAX_INCLUDE_DEPTH + 4
    for n in range(depth):
        write(tmp_path / f"f{n}.mt", f"C: NOOP {n}\ninclude f{n + 1}.mt\n")
    write(tmp_path / f"f{depth}.mt", "C: NOOP last\n")
    main = write(tmp_path / "main.mt", CONNECT + "include f0.mt\n")
    with pytest.raises(ScriptError, match="too deep"):
        parse_file(str(main))


def test_includes_a_few_levels_deep_are_fine(tmp_path: Path) -> None:
    for n in range(5):
        write(tmp_path / f"f{n}.mt", f"C: NOOP {n}\ninclude f{n + 1}.mt\n")
    write(tmp_path / "f5.mt", "C: NOOP last\n")
    main = write(tmp_path / "main.mt", CONNECT + "include f0.mt\n")
    assert len(parse_file(str(main)).steps) == 1 + 6


def test_the_same_file_may_be_included_twice(tmp_path: Path) -> None:
    write(tmp_path / "noop.mt", "C: NOOP\nS: 250\n")
    main = write(tmp_path / "main.mt", CONNECT + "include noop.mt\ninclude noop.mt\n")
    assert len(parse_file(str(main)).steps) == 5


# ---------------------------------------------------------------------------
# loops and the first step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("loop\nloop\nend\nend\n", "<script>:3: loops do not nest"),
        ("end\n", "<script>:2: end without loop"),
        ("loop\nend\nend\n", "<script>:4: end without loop"),
        ("loop\nC: NOOP\n", "<script>:2: loop without end"),
    ],
)
def test_loop_checks(body: str, message: str) -> None:
    assert error_of(CONNECT + body).startswith(message)


def test_loop_without_end_names_the_loop_line() -> None:
    assert error_of(CONNECT + "C: NOOP\nloop\nC: NOOP\n").startswith("<script>:3: ")


def test_two_loops_one_after_the_other_pass_the_check() -> None:
    assert parse("loop\nend\nloop\nend\n").has_loop


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("C: EHLO x\nconnect smtp://h\n", 1),
        ("# comment\nset A b\n\nS: 220\nconnect smtp://h\n", 4),
        ("starttls\n", 1),
        ("loop\nconnect smtp://h\nend\n", 1),
    ],
)
def test_first_step_must_be_connect(text: str, line: int) -> None:
    assert error_of(text) == f"<script>:{line}: a session file starts with connect URL"


def test_first_step_may_come_from_an_include(tmp_path: Path) -> None:
    write(tmp_path / "connect.mt", "connect smtp://h:25\n")
    main = write(tmp_path / "main.mt", "include connect.mt\nC: NOOP\n")
    assert isinstance(parse_file(str(main)).steps[0], Connect)


# ---------------------------------------------------------------------------
# files and odd input
# ---------------------------------------------------------------------------


def test_missing_script_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mt"
    with pytest.raises(ScriptError) as caught:
        parse_file(str(path))
    assert str(caught.value) == f"{path}: no such file: {path}"


def test_non_utf8_script_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.mt"
    path.write_bytes(CONNECT.encode() + "C: HELO caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScriptError) as caught:
        parse_file(str(path))
    assert str(caught.value) == f"{path}: {path} is not UTF-8 text"


def test_non_utf8_included_file_names_the_include_line(tmp_path: Path) -> None:
    (tmp_path / "inc.mt").write_bytes(b"C: \xff\n")
    main = write(tmp_path / "main.mt", CONNECT + "include inc.mt\n")
    with pytest.raises(ScriptError, match=r"main\.mt:2: .*inc\.mt is not UTF-8 text"):
        parse_file(str(main))


def test_a_directory_as_script(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="cannot read"):
        parse_file(str(tmp_path))


def test_crlf_line_ends_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "crlf.mt"
    path.write_bytes(
        b"connect smtp://h:25\r\nS: 220\r\nC: EHLO x\r\n"
        b"data <<EOF\r\nSubject: a\r\n\r\nb\r\nEOF\r\n"
    )
    script = parse_file(str(path))
    assert [type(s).__name__ for s in script.steps] == ["Connect", "Expect", "Send", "Data"]
    assert script.steps[2].line == "EHLO x"  # type: ignore[attr-defined]
    assert script.steps[3].message == b"Subject: a\n\nb\n"  # type: ignore[attr-defined]


def test_crlf_line_ends_in_text() -> None:
    script = parse_text("connect smtp://h\r\nC: NOOP\r\nS: 250\r\n")
    assert script.steps[1] == Send(Location("<script>", 2), "NOOP")


def test_nul_bytes_in_send_lines_are_kept() -> None:
    [send] = steps("C: NO\x00OP\n")
    assert send.line == "NO\x00OP"  # type: ignore[attr-defined]


@pytest.mark.parametrize("directive", ["data", "include"])
def test_nul_in_a_file_name_is_a_script_error(directive: str) -> None:
    with pytest.raises(ScriptError):
        parse_text(CONNECT + f"{directive} a\x00b\n")


def test_very_long_lines() -> None:
    long = "x" * 1_000_000
    [send, data] = steps(f"C: NOOP {long}\ndata <<EOF\n{long}\nEOF\n")
    assert send.line == f"NOOP {long}"  # type: ignore[attr-defined]
    assert data.message == (long + "\n").encode()  # type: ignore[attr-defined]


def test_stdin_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("connect pop3://h:110\nS: +OK\n"))
    script = parse_file("-")
    assert script.name == "<stdin>"
    assert script.steps[1].where == Location("<stdin>", 2)


def test_non_utf8_script_on_stdin_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO(b"connect smtp://h:25\nC: HELO caf\xe9\n")
    stdin = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(ScriptError, match="not UTF-8"):
        parse_file("-")


def test_stdin_script_includes_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "inc.mt", "C: NOOP\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("connect pop3://h:110\ninclude inc.mt\n"))
    assert parse_file("-").steps[1] == Send(Location("inc.mt", 1), "NOOP")


# ---------------------------------------------------------------------------
# Hypothesis: every text either parses or is a ScriptError
# ---------------------------------------------------------------------------

_WORDS = st.sampled_from(
    [
        "connect", "C:", "S:", "data", "set", "include", "sleep", "auth", "loop", "end",
        "starttls", "tls", "expect-close", "<<EOF", "<<'EOF'", "EOF", "${X}", "${Y}", "$$",
        "#", "smtp://h", "imap://h:1", "pop3s://[::1]:995", "plain", "login", "insecure",
        "cafile=ca.pem", "\r", "\t", "\x0c", "\u2028", "\x85", "nan", "1e9", "-1", "0.01",
        "[", "/(/", "/a+/", "*", "* OK", "2xx", "5.x.x", "+OK", "-ERR", "BAD", "x", "é",
    ]
)  # fmt: skip
_LINE = st.lists(st.one_of(_WORDS, st.text(max_size=6)), max_size=6).map(" ".join)
_TEXT = st.lists(_LINE, max_size=10).map("\n".join)
_NO_NUL = st.one_of(_TEXT, st.text()).map(lambda text: text.replace("\x00", "\\0"))


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(_NO_NUL)
def test_any_text_parses_or_raises_script_error(text: str) -> None:
    """NUL bytes are left out here: see test_nul_in_a_file_name_is_a_script_error."""
    try:
        script = parse_text(text, environment={"X": "value"})
    except ScriptError as error:
        assert str(error).startswith("<script>")
    else:
        assert not script.steps or isinstance(script.steps[0], Connect)


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.text(
            alphabet=st.characters(
                blacklist_categories=("Cs",), blacklist_characters="\x00" + _LINE_BREAKS
            )
        )
    )
)
def test_any_quoted_here_block_body_round_trips(body: list[str]) -> None:
    """What is between <<'EOF' and EOF is the message (line breaks: see the tests above)."""
    body = [line for line in body if line.strip() != "EOF"]
    text = CONNECT + "data <<'EOF'\n" + "".join(line + "\n" for line in body) + "EOF\n"
    [_, data] = parse_text(text).steps
    assert data.message == ("\n".join(body) + "\n").encode()  # type: ignore[attr-defined]

"""``mailtalk mx``, ``send`` and ``diagnose`` write where the Environment says, and take
their output decisions (JSON, rich or plain, the plain width) from it: run in-process
with ``Environment.for_test()``, nothing reaches the process's own streams."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailtalk.cli import cli
from mailtalk.environment import Environment
from tests.mail.test_send_diagnose import NO_DNS


def invoke(given: Environment, *args: str) -> int:
    result = CliRunner().invoke(cli, list(args), obj=given)
    assert result.output == "", "written past the Environment"
    return result.exit_code


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["diagnose", "sender", "--from", "x"], "mailtalk: --from 'x' is not an address"),
        (
            ["diagnose", "relay", "--from", "x", "--to", "y@z.test"],
            "mailtalk: --from 'x' is not an address",
        ),
        (["diagnose", "login", "host"], "mailtalk: 'host' is not a URL"),
        (["send", "--from", "a@b.test", "--to", "c@d.test", "--starttls", "--tls"],
         "mailtalk: --starttls and --tls exclude each other"),
        (["mx", "[192.0.2.1]"], "mailtalk: '[192.0.2.1]' is an address literal"),
    ],
)
def test_errors_go_to_the_environments_standard_error(args: list[str], error: str) -> None:
    given = Environment.for_test()
    assert invoke(given, *args) == 2
    assert given.stderr.getvalue().startswith(error)  # type: ignore[attr-defined]
    assert given.stdout.getvalue() == ""  # type: ignore[attr-defined]


def test_a_diagnosis_report_goes_to_the_environments_standard_output() -> None:
    given = Environment.for_test()
    code = invoke(
        given, "diagnose", "sender", "--from", "me@example.test", "--resolver", NO_DNS,
        "--timeout", "0.5", "--json",
    )
    assert code == 3
    assert json.loads(given.stdout.getvalue())["verdict"] == "dns_failure"  # type: ignore[attr-defined]


def mx_lesson(given: Environment) -> list[str]:
    invoke(given, "mx", "--resolver", NO_DNS, "--timeout", "0.5", "example.test")
    lines = given.stdout.getvalue().splitlines()  # type: ignore[attr-defined]
    return lines[lines.index("") + 1 :]


def test_mx_wraps_plain_text_at_the_environments_width() -> None:
    narrow = mx_lesson(Environment.for_test(variables={"COLUMNS": "40"}))
    wide = mx_lesson(Environment.for_test(variables={"COLUMNS": "120"}))
    assert max(len(line) for line in narrow) <= 40 < max(len(line) for line in wide)


def test_mx_output_mode_is_the_environments() -> None:
    """FORCE_COLOR (or a terminal) gets the rich view, a pipe the plain one, --json JSON:
    the plain view writes the headline whole, the rich one wraps it (rich itself decides
    the colours)."""
    plain = Environment.for_test()
    rich = Environment.for_test(variables={"FORCE_COLOR": "1"})
    as_json = Environment.for_test(variables={"FORCE_COLOR": "1"})
    for given, extra in ((plain, []), (rich, []), (as_json, ["--json"])):
        invoke(given, "mx", "--resolver", NO_DNS, "--timeout", "0.5", *extra, "example.test")
    assert json.loads(as_json.stdout.getvalue())["status"] == "timeout"  # type: ignore[attr-defined]
    headline = plain.stdout.getvalue().splitlines()[0]  # type: ignore[attr-defined]
    assert len(headline) > 80 and headline.endswith("(--resolver)")
    assert not rich.stdout.getvalue().splitlines()[0].endswith("(--resolver)")  # type: ignore[attr-defined]

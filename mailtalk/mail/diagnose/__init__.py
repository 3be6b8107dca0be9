"""``mailtalk diagnose``: find out why mail is refused, from the live servers' answers.

Each diagnosis gathers evidence (DNS, the server's replies, what changes with
STARTTLS or AUTH) into a typed record, then goes down an ordered list of
:class:`Rule` s, each a question about the evidence and the verdict it leads to; the
first that holds is the verdict. What a verdict says -- one sentence, the steps to
fix it for the user and for the server's admin, the exit status -- is data in
``mailtalk/knowledge/verdicts.toml``: the code only decides which one applies.
:class:`Report` is what they all print.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TextIO, TypeVar

from mailtalk.knowledge.translation import SpeaksLanguage
from mailtalk.net.tlsclient import ClientTLS

if TYPE_CHECKING:
    from mailtalk.client.options import SessionOptions
    from mailtalk.environment import Environment
    from mailtalk.exitcodes import ExitCode
    from mailtalk.net.mx import MXResult
    from mailtalk.net.target import Target

Evidence = TypeVar("Evidence")


def dns_lines(mx: MXResult, gettext: Callable[[str], str]) -> list[str]:
    """What DNS said, as the evidence of a diagnosis begins: the resolver and its answer,
    then each MX with its addresses or why it has none (in the language of ``gettext``)."""
    resolver = gettext("system") if mx.resolver == "system" else mx.resolver
    lines = [f"DNS ({resolver}): {mx.message}"]
    for host in mx.hosts:
        shown = " ".join(host.addresses) or host.error or ""
        lines.append(f"  MX {host.preference} {host.host} {shown}".rstrip())
    return lines


@dataclass(frozen=True, kw_only=True)
class ReportOptions(SpeaksLanguage):
    """What every diagnosis's options say about its report: ``--brief``, ``--json``."""

    brief: bool = False  # only the verdict and the evidence
    as_json: bool = False
    language: str = "en"  # of the report for a person (mailtalk/language.py)


@dataclass(frozen=True, kw_only=True)
class ServerOptions(ReportOptions):
    """A diagnosis that talks to a server: how to trust its certificate, how long to wait."""

    insecure: bool = False
    cafile: str | None = None
    timeout: float = 15.0
    # --sni, --tls-min/--tls-max, --ciphers, --cert/--key, --tls-dump
    tls: ClientTLS = field(default_factory=ClientTLS)
    pipe_command: tuple[str, ...] = ()  # --pipe COMMAND's words: the program is the server
    proxy_from: tuple[str, int] | None = None  # --proxy-from ADDR[:PORT]
    proxy_version: int = 1

    def session(self, target: Target, source_address: str | None = None) -> SessionOptions:
        """The session for talking to ``target`` with these options."""
        from mailtalk.client.options import SessionOptions

        return SessionOptions.for_target(
            target,
            insecure=self.insecure,
            cafile=self.cafile,
            timeout=self.timeout,
            source_address=source_address,
            tls=self.tls,
            pipe_command=self.pipe_command,
            proxy_from=self.proxy_from,
            proxy_version=self.proxy_version,
            language=self.language,
        )


@dataclass(frozen=True)
class Rule(Generic[Evidence]):
    """When ``applies`` holds for the evidence, the verdict is ``verdict`` (its table in
    verdicts.toml). Rules are tried in order: a rule may count on the ones before it
    not having held."""

    verdict: str
    applies: Callable[[Evidence], bool]


def decide(rules: Sequence[Rule[Evidence]], evidence: Evidence) -> str:
    """The verdict of the first rule that holds; the last rule of a list always holds."""
    return next(rule.verdict for rule in rules if rule.applies(evidence))


@dataclass
class Report:
    kind: str  # which diagnosis: "relay", "sender", "login"
    verdict: str  # a short name for machines: "relay_denied_auth_fixes", ...
    summary: str  # the verdict in one sentence
    evidence: list[str] = field(default_factory=list)
    fixes_user: list[str] = field(default_factory=list)
    fixes_admin: list[str] = field(default_factory=list)
    security: str | None = None  # a security finding (an open relay)
    facts: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "diagnosis": self.kind,
            "verdict": self.verdict,
            "summary": self.summary,
            "security": self.security,
            "evidence": self.evidence,
            "fixes": {"user": self.fixes_user, "admin": self.fixes_admin},
            "facts": self.facts,
        }

    def write(
        self, as_json: bool, target: TextIO, brief: bool = False,
        gettext: Callable[[str], str] = str,
    ) -> None:
        """The report: JSON, or text (its headings in the language of ``gettext``);
        ``brief``: only the verdict and the evidence, for readers who know the lesson."""
        _ = gettext
        from mailtalk.terminal import safe_strings, safe_text

        if as_json:
            # the evidence and the transcript quote the servers: no raw control in them
            target.write(json.dumps(safe_strings(self.to_json()), ensure_ascii=False) + "\n")
            return
        import textwrap

        def block(title: str, items: list[str], bullet: str) -> None:
            if not items:
                return
            target.write(f"\n{title}\n")
            for item in items:
                target.write(
                    textwrap.fill(
                        safe_text(item),
                        80,
                        initial_indent=f"  {bullet} ",
                        subsequent_indent=" " * (3 + len(bullet)),
                        break_on_hyphens=False,
                    )
                    + "\n"
                )

        def paragraph(text: str) -> None:
            target.write(
                textwrap.fill(
                    safe_text(text), 80, subsequent_indent="  ", break_on_hyphens=False
                )
                + "\n"
            )

        paragraph(_("Verdict: {summary}").format(summary=self.summary))
        if self.security:
            paragraph(_("SECURITY: {finding}").format(finding=self.security))
        block(_("Evidence"), self.evidence, "-")
        if brief:
            target.flush()
            return
        block(_("What to do, as the user"), self.fixes_user, "•")
        block(_("What to do, as the server's admin"), self.fixes_admin, "•")
        target.flush()


def conclude(
    kind: str,
    key: str,
    values: Mapping[str, object],
    evidence: list[str],
    facts: dict[str, object],
    gettext: Callable[[str], str] = str,
) -> tuple[Report, ExitCode]:
    """The report of the verdict ``key`` of the diagnosis ``kind``, worded from the
    knowledge base with ``values`` in the language of ``gettext``, and its exit status."""
    from mailtalk.knowledge.verdicts import verdict

    worded = verdict(kind, key, values, gettext)
    report = Report(
        kind,
        worded.id,
        worded.summary,
        evidence,
        worded.fixes_user,
        worded.fixes_admin,
        worded.security,
        facts,
    )
    return report, worded.exit_code


def run_report(
    diagnosis: Callable[[], tuple[Report, ExitCode]], options: ReportOptions, env: Environment
) -> int:
    """Run a diagnosis and print its report; a bad argument or a server that cannot be
    reached is one line on standard error with its exit status."""
    import click

    from mailtalk.errors import UsageError, one_line
    from mailtalk.exitcodes import ExitCode
    from mailtalk.mail.smtp_steps import SendFailed

    try:
        report, code = diagnosis()
    except UsageError as error:
        click.echo(f"mailtalk: {one_line(error, options.gettext)}", file=env.stderr)
        return ExitCode.USAGE
    except SendFailed as error:
        click.echo(f"mailtalk: {one_line(error, options.gettext)}", file=env.stderr)
        return int(error.exit_code)
    report.write(options.as_json, env.stdout, brief=options.brief, gettext=options.gettext)
    return int(code)

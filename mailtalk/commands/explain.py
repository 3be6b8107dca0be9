"""`mailtalk explain`: what a reply means."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from mailtalk.cli import cli, pass_environment
from mailtalk.commands.languageoption import lang_option

if TYPE_CHECKING:
    from mailtalk.environment import Environment


class ReplyCommand(click.Command):
    """Takes a reply as its arguments, dashes and all.

    ``-ERR [AUTH] ... has ... failed`` must not read as the short options -E, -R,
    ... -h (help!): the command's own options are taken out wherever they are,
    and everything else goes after "--", where click leaves it alone.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {"--protocol", "--command", "--banner", "--lang"}
        flags = {"--json", "-h", "--help"}
        options: list[str] = []
        words: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                words.extend(args[index + 1 :])
                break
            if arg in flags or (arg.split("=", 1)[0] in takes_value and "=" in arg):
                options.append(arg)
            elif arg in takes_value:
                options.extend(args[index : index + 2])
                index += 1
            else:
                words.append(arg)
            index += 1
        return super().parse_args(ctx, [*options, "--", *words])


@cli.command(
    cls=ReplyCommand,
    epilog="\b\nExamples:\n"
    "  mailtalk explain 550\n"
    "  mailtalk explain 5.7.1\n"
    "  mailtalk explain '554 5.7.1 <bob@example.net>: Relay access denied'\n"
    "  mailtalk explain 503 Need MAIL before RCPT\n"
    "  mailtalk explain --command AUTH 503\n"
    "  mailtalk explain --command 'RCPT TO:<bob@exim.test>' \\\n"
    "      --banner '220 mx.exim.test ESMTP Exim 4.96' 550 Unrouteable address\n"
    "  mailtalk explain -ERR [IN-USE] lock busy! Is another session active?\n"
    "  mailtalk explain 'a1 NO [AUTHENTICATIONFAILED] Authentication failed.'\n"
    "  mailtalk explain --lang nl 452 4.2.2 Mailbox full\n"
    "  grep 'said:' /var/log/mail.log | mailtalk explain --json -\n\n"
    "\b\nExit status:\n"
    "  0    every reply was explained\n"
    "  1    standard input held no reply\n"
    "  2    the argument is not a reply or a code",
)
@click.argument("reply", nargs=-1, required=True)
@click.option(
    "--protocol",
    type=click.Choice(["smtp", "pop3", "imap"]),
    help="The protocol of the reply, where the text alone does not say.",
)
@click.option(
    "--command",
    metavar="COMMAND",
    help="The command the reply answered (RCPT, MAIL, AUTH, DATA, PASS, LOGIN, greeting, "
    "'end of data'), or its whole line ('RCPT TO:<bob@example.org>'); it changes what "
    "some codes mean.",
)
@click.option(
    "--banner",
    metavar="TEXT",
    help="The server's greeting ('220 mx.example.org ESMTP Exim 4.96'): it can name the "
    "server software, whose own wordings then decide, and the host, which tells whether "
    "the server handles the address's domain itself.",
)
@lang_option("The language of the explanation", "; --json keeps its keys and categories in English")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reply.")
@pass_environment
def explain(
    env: Environment,
    reply: tuple[str, ...],
    protocol: str | None,
    command: str | None,
    banner: str | None,
    lang: str | None,
    as_json: bool,
) -> None:
    """Explain a reply: what it means, whether to retry, causes and fixes.

    REPLY is a basic code (550), an enhanced code (5.7.1), a whole SMTP reply
    (quoted, or as separate words), a POP3 +OK/-ERR line, an IMAP tagged or
    untagged response, a POP3/IMAP response code ([IN-USE], OVERQUOTA with
    --protocol), or a log or bounce line holding a reply. With "-", standard
    input is read, one reply a line (SMTP multi-line replies are joined), and
    lines that hold no reply are skipped.
    """
    from mailtalk.explain.command import ExplainOptions, run

    options = ExplainOptions(
        words=reply,
        protocol=protocol,
        command=command,
        banner=banner,
        lang=lang,
        as_json=as_json,
    )
    sys.exit(run(options, env))

"""`mailtalk completion SHELL`: print the shell completion script."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailtalk.cli import cli, pass_environment
from mailtalk.shell_completions import SHELLS

if TYPE_CHECKING:
    from mailtalk.environment import Environment


@cli.command(
    epilog="\b\nLoad it in every new shell with one line in your shell's start-up file:\n"
    '  ~/.bashrc                    eval "$(mailtalk completion bash)"\n'
    "  ~/.zshrc (after compinit)    source <(mailtalk completion zsh)\n"
    "  ~/.config/fish/config.fish   mailtalk completion fish | source\n\n"
    "\b\nOr write it once where the shell looks for completions (no mailtalk run\n"
    "at each shell start; write it again after upgrading mailtalk):\n"
    "  mailtalk completion bash \\\n      > ~/.local/share/bash-completion/completions/mailtalk\n"
    "  mailtalk completion zsh > ~/.zfunc/_mailtalk  # fpath+=(~/.zfunc); compinit\n"
    "  mailtalk completion fish > ~/.config/fish/completions/mailtalk.fish\n\n"
    "\b\nExit status:\n"
    "  0    the script was printed\n"
    "  2    SHELL is not bash, zsh or fish (or an option is wrong)",
)
@click.argument("shell", metavar="SHELL", type=click.Choice(SHELLS))
@pass_environment
def completion(env: Environment, shell: str) -> None:
    """Print the completion script for SHELL: bash, zsh or fish.

    The script completes mailtalk's commands, options, URL schemes, file names and
    host names. It is static: pressing Tab never starts mailtalk. It is the same text
    as the file of that shell in the source's completions/ folder.
    """
    # Walking the command tree imports every command's module: only here, never at
    # start-up (mailtalk --help and --version stay light).
    from mailtalk.shell_completions import script

    env.stdout.write(script(shell))
    env.stdout.flush()

"""Shell integration as an installed mailtalk gives it: `mailtalk completion SHELL`
through the real binary, loaded the way --help and the README say, and the man page
inside the wheel (share/man/man1, where pip puts it under the venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mailtalk import __version__

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {
    "bash": ROOT / "completions" / "mailtalk.bash",
    "zsh": ROOT / "completions" / "_mailtalk",
    "fish": ROOT / "completions" / "mailtalk.fish",
}
# How each shell checks a script's syntax without running it.
SYNTAX_CHECK = {"bash": ["-n"], "zsh": ["-n"], "fish": ["--no-execute"]}


def mailtalk_binary() -> str:
    """The console script pip made for this interpreter's environment."""
    beside = Path(sys.executable).parent / "mailtalk"
    path = str(beside) if beside.exists() else shutil.which("mailtalk")
    assert path, "no mailtalk console script: pip install -e '.[test]'"
    return path


def needs(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        message = f"{shell} is not installed (apt-get install {shell})"
        if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS") == "1":
            pytest.fail(message + "; scripts/real-servers install should have installed it")
        pytest.skip(message)
    return path


def mailtalk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mailtalk_binary(), *args], capture_output=True, text=True, check=False, timeout=60
    )


def in_shell(shell: str, script: str, tmp_path: Path) -> str:
    """Run script in a shell with no user configuration and mailtalk first on PATH."""
    flags = {"bash": ["--norc", "--noprofile"], "zsh": ["-f"], "fish": ["--no-config"]}[shell]
    env = {
        **os.environ,
        "PATH": f"{Path(mailtalk_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [needs(shell), *flags, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


# ------------------------------------------------------------------ mailtalk completion


@pytest.mark.parametrize("shell", list(SHIPPED))
def test_completion_prints_the_shipped_script(shell: str, tmp_path: Path) -> None:
    result = mailtalk("completion", shell)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == SHIPPED[shell].read_text(encoding="utf-8")
    printed = tmp_path / SHIPPED[shell].name
    printed.write_text(result.stdout, encoding="utf-8")
    check = subprocess.run(
        [needs(shell), *SYNTAX_CHECK[shell], str(printed)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_bashrc_line_registers_the_completion(tmp_path: Path) -> None:
    """The ~/.bashrc line of --help, then Tab on `mailtalk completion ` offers the shells."""
    out = in_shell(
        "bash",
        'eval "$(mailtalk completion bash)"\n'
        "complete -p mailtalk\n"
        "COMP_WORDS=(mailtalk completion '') COMP_CWORD=2 COMPREPLY=()\n"
        "COMP_LINE='mailtalk completion ' COMP_POINT=${#COMP_LINE}\n"
        "_mailtalk mailtalk '' completion\n"
        "printf 'reply:%s\\n' \"${COMPREPLY[@]}\"\n",
        tmp_path,
    )
    assert "complete -F _mailtalk mailtalk" in out
    assert [line for line in out.splitlines() if line.startswith("reply:")] == [
        "reply:bash",
        "reply:zsh",
        "reply:fish",
    ]


def test_zshrc_line_registers_the_completion(tmp_path: Path) -> None:
    out = in_shell(
        "zsh",
        "autoload -U compinit && compinit -u -D\n"
        "source <(mailtalk completion zsh)\n"
        "print -r -- registered:$_comps[mailtalk]\n",
        tmp_path,
    )
    assert "registered:_mailtalk" in out.splitlines()


def test_fish_config_line_registers_the_completion(tmp_path: Path) -> None:
    out = in_shell(
        "fish",
        "mailtalk completion fish | source\n"
        "complete -C 'mailtalk compl'\n"
        "complete -C 'mailtalk completion '\n",
        tmp_path,
    )
    offered = [row.split("\t")[0] for row in out.splitlines()]
    assert offered[0] == "completion"
    assert sorted(offered[1:]) == ["bash", "fish", "zsh"]  # fish sorts them itself


def test_unknown_shell_is_a_usage_error() -> None:
    result = mailtalk("completion", "tcsh")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "mailtalk: invalid value for 'SHELL': 'tcsh' is not one of 'bash', 'zsh', 'fish'"
    ]


def test_missing_shell_is_a_usage_error() -> None:
    result = mailtalk("completion")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "mailtalk: missing argument 'SHELL'; choose from: bash, zsh, fish "
        "(try 'mailtalk completion --help')"
    ]


def test_help_gives_the_start_up_lines_and_exit_statuses() -> None:
    result = mailtalk("completion", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert 'eval "$(mailtalk completion bash)"' in text
    assert "source <(mailtalk completion zsh)" in text
    assert "mailtalk completion fish | source" in text
    for startup_file in ("~/.bashrc", "~/.zshrc", "~/.config/fish/config.fish"):
        assert startup_file in text
    assert "Exit status:" in text
    assert "0    the script was printed" in text
    assert "2    SHELL is not bash, zsh or fish" in text


# ------------------------------------------------------------------ the man page in the wheel


def test_wheel_installs_the_man_page(tmp_path: Path) -> None:
    """pip installs a wheel's <name>.data/data/X into the environment's prefix as X, so
    share/man/man1/mailtalk.1 lands in VENV/share/man/man1 (man finds it from VENV/bin)."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("mailtalk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        page = f"mailtalk-{__version__}.data/data/share/man/man1/mailtalk.1"
        assert page in names, [name for name in names if ".data/" in name]
        assert archive.read(page) == (ROOT / "man" / "mailtalk.1").read_bytes()
        assert "mailtalk/shell_completions.py" in names

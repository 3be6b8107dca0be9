"""``mailtalk practice`` through the real binary: --keep, --status [--json], --stop and
--reset as a learner (or a script) runs them, and the world with its REPL in a terminal."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.practice.command import process_gone
from mailtalk.practice.world import MARKER, is_running
from tests.interop.clients import client_env, mailtalk_command

pexpect = pytest.importorskip("pexpect")

from tests.client.repl.test_repl_faults import _default_signals  # noqa: E402
from tests.interop.test_repl_real import Term, term_env, terminals  # noqa: E402

NOT_RUNNING = 3


def run(env: dict[str, str], *args: str, stdin: str = "", timeout: float = 60) -> Any:
    return subprocess.run(
        [*mailtalk_command(), "practice", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return client_env(tmp_path)


@pytest.fixture
def kept(env: dict[str, str]) -> Iterator[list[Path]]:
    """Roots a test leaves a world running at: stopped at the end, whatever happened."""
    roots: list[Path] = []
    yield roots
    for root in roots:
        if is_running(root):
            run(env, "--root", str(root), "--stop")


def refused(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def banner(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=10) as sock:
        return sock.recv(200).decode()


def test_status_when_nothing_runs(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    result = run(env, "--root", str(root), "--status")
    assert result.returncode == NOT_RUNNING
    assert result.stdout == (
        f"No practice world runs at {root} (mailtalk practice --keep starts one).\n"
    )
    assert result.stderr == ""
    result = run(env, "--root", str(root), "--status", "--json")
    assert result.returncode == NOT_RUNNING
    assert json.loads(result.stdout) == {"running": False, "root": str(root)}
    assert not root.exists()  # asking made nothing


def test_keep_status_stop(env: dict[str, str], kept: list[Path]) -> None:
    """The default root ($XDG_STATE_HOME/mailtalk/practice), kept running for another
    terminal, asked for its map, used, stopped."""
    root = Path(env["XDG_STATE_HOME"]) / "mailtalk" / "practice"
    kept.append(root)
    started = run(env, "--keep")
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("The practice world at ~/.state/mailtalk/practice (pid ")
    assert "MTA  mail.isp.test" in started.stdout

    status = run(env, "--status", "--json")
    assert status.returncode == 0, status.stderr
    world = json.loads(status.stdout)
    assert world["running"] is True and world["kept"] is True and world["root"] == str(root)
    os.kill(world["pid"], 0)  # a process of its own, still there after --keep returned
    hosts = {host["name"]: host for host in world["hosts"]}
    mx = hosts["mx.example.net"]
    assert banner(mx["address"], mx["ports"]["smtp"]).startswith("220 mx.example.net ")
    assert {a["login"]: a["password"] for a in world["accounts"]}["bob"] == "builder"
    assert world["roles"]["MDA"] == ["mail.isp.test", "mx.example.net"]
    assert world["roles"]["MUA"][0].startswith("you")
    isp = hosts["mail.isp.test"]
    with smtplib.SMTP(isp["address"], isp["ports"]["submission"], timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=world["cafile"]))
        smtp.login("alice", "wonderland")
        smtp.sendmail("alice@isp.test", ["bob@example.net"], b"Subject: kept\r\n\r\nhi\r\n")
    assert Path(world["cafile"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    text = run(env, "--status")
    assert text.returncode == 0 and "MDA" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80

    again = run(env, "--keep")
    assert again.returncode == 0 and "already runs" in again.stderr

    stopped = run(env, "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"Stopped the practice world at {root} (pid {world['pid']}).\n"
    assert run(env, "--status").returncode == NOT_RUNNING
    assert refused(mx["address"], mx["ports"]["smtp"])
    assert process_gone(world["pid"])
    nothing = run(env, "--stop")
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout
    log = Path(world["log"]).read_text(encoding="utf-8")
    assert "authenticated as alice" in log and "delivered" in log  # the servers' log
    for secret in ("wonderland", "AGFsaWNlAHdvbmRlcmxhbmQ", "d29uZGVybGFuZA"):
        assert secret not in log


def test_pipe_mode_talks_to_the_kept_world_and_leaves_it(
    env: dict[str, str], tmp_path: Path, kept: list[Path]
) -> None:
    root = tmp_path / "world"
    kept.append(root)
    assert run(env, "--root", str(root), "--keep").returncode == 0
    session = run(env, "--root", str(root), stdin="EHLO me\nQUIT\n")
    assert session.returncode == 0, session.stderr
    assert "S: 250-mx.example.net greets me" in session.stdout
    assert "The practice world at" not in session.stdout  # the map went to stderr
    assert "The practice world at" in session.stderr
    assert is_running(root)


def test_pipe_mode_starts_a_world_for_the_session_alone(
    env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "world"
    session = run(env, "--root", str(root), stdin="EHLO me\nRCPT TO:<bob@example.net>\nQUIT\n")
    assert session.returncode == 1  # the RCPT before MAIL was refused
    assert "S: 503 5.5.1 Bad sequence of commands" in session.stdout
    assert "The practice world at" in session.stderr
    assert not is_running(root)


def test_reset(env: dict[str, str], tmp_path: Path, kept: list[Path]) -> None:
    root = tmp_path / "world"
    kept.append(root)
    assert run(env, "--root", str(root), "--keep").returncode == 0
    busy = run(env, "--root", str(root), "--reset")
    assert busy.returncode == 1 and "stop it first" in busy.stderr
    assert run(env, "--root", str(root), "--stop").returncode == 0
    inbox = root / "hosts" / "mx.example.net" / "mail" / "bob" / "Maildir" / "new"
    seed = sorted(path.name for path in inbox.iterdir())
    (inbox / "left-over").write_text("Subject: old\n\nold\n")
    (root / "hosts" / "mail.isp.test" / "control" / "rcpthosts").write_text("broken!\n")

    fresh = run(env, "--root", str(root), "--reset", "--keep")
    assert fresh.returncode == 0, fresh.stderr
    assert not (inbox / "left-over").exists()
    assert len(list(inbox.iterdir())) == len(seed)
    assert "isp.test" in (root / "hosts" / "mail.isp.test" / "control" / "rcpthosts").read_text()
    assert (root / MARKER).is_file()


def test_reset_refuses_a_folder_that_is_no_practice_world(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious\n")
    result = run(env, "--root", str(folder), "--reset")
    assert result.returncode == 2
    assert result.stderr == (
        f"mailtalk: {folder} is no practice world (no {MARKER} in it): not wiping it\n"
    )
    assert (folder / "thesis.txt").read_text() == "precious\n"
    started = run(env, "--root", str(folder), "--keep")
    assert started.returncode == 2 and "choose another --root" in started.stderr


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["--status", "--stop"], 2, "--status and --stop do not go together"),
        (["--json"], 2, "--json goes with --status or --keep"),
        (["--reset", "--status"], 2, "--reset does not go with --status"),
        (["--lesson", "99"], 2, "no lesson '99'; the lessons are"),
        (["--list", "--glossary"], 2, "--list and --glossary do not go together"),
        (["--lang", "fr"], 2, "'fr' is not one of 'en', 'nl'"),
    ],
)
def test_options_that_do_not_go(
    env: dict[str, str], tmp_path: Path, args: list[str], status: int, says: str
) -> None:
    result = run(env, "--root", str(tmp_path / "w"), *args)
    assert result.returncode == status
    assert says in result.stderr and "Traceback" not in result.stderr


def test_list_names_the_lessons_in_the_language_asked(
    env: dict[str, str], tmp_path: Path
) -> None:
    from mailtalk.practice.lessons import load_lessons

    english = run(env, "--root", str(tmp_path / "w"), "--list", "--lang", "en")
    assert english.returncode == 0, english.stderr
    for lesson in load_lessons():
        assert lesson.prose["en"].title in english.stdout
    dutch = run(env, "--root", str(tmp_path / "w"), "--list", "--lang", "nl")
    assert "SMTP met de hand" in dutch.stdout and "SMTP by hand" not in dutch.stdout


def test_glossary_in_both_languages(env: dict[str, str], tmp_path: Path) -> None:
    english = run(env, "--glossary", "--lang", "en")
    dutch = run(env, "--glossary", "--lang", "nl")
    assert english.returncode == dutch.returncode == 0
    assert "MUA: Mail User Agent: the mail program" in english.stdout
    assert "MUA: Mail User Agent: het mailprogramma" in dutch.stdout
    assert max(len(line) for line in dutch.stdout.splitlines()) <= 80


# -- in a terminal ----------------------------------------------------------------------


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Term]]:
    environment = term_env(tmp_path / "state")
    environment["HOME"] = str(tmp_path)
    with terminals() as started:

        def start(*args: str) -> Term:
            return started([*mailtalk_command(), "practice", *args], environment, 50, 80,
                           timeout=20, preexec_fn=_default_signals)

        yield start


def test_practice_prints_the_map_and_opens_the_prompt_and_quit_stops_the_world(
    terminal: Callable[..., Term], tmp_path: Path
) -> None:
    root = tmp_path / "world"
    term = terminal("--root", str(root))
    term.expect(r"The practice world at ~/world \(pid \d+\)")
    term.expect(r"MUA +you")
    term.expect(r"MTA +mail\.isp\.test +127\.77\.\d+\.2 ")
    term.expect(r"alice@isp\.test +alice / wonderland")
    term.expect(r"220 mx\.example\.net ")
    term.expect_prompt("smtp", timeout=20)
    assert is_running(root)
    world = json.loads((root / "world.json").read_text())
    mx = next(host for host in world["hosts"] if host["name"] == "mx.example.net")
    term.command("EHLO me", r"250-mx\.example\.net greets me", "smtp")
    term.sendline(":quit")
    assert term.wait_exit() == 0
    assert not is_running(root)
    for host in world["hosts"]:
        for service, port in host["ports"].items():
            if service != "dns":
                assert refused(host["address"], port), (host["name"], service)
    assert refused(mx["address"], mx["ports"]["smtp"])


def test_stop_from_another_terminal_ends_the_session(
    terminal: Callable[..., Term], tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "world"
    term = terminal("--root", str(root))
    term.expect_prompt("smtp", timeout=20)
    stopped = run(env, "--root", str(root), "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert term.wait_exit() == 128 + 15
    assert not is_running(root)


# -- the coach, as a new user meets it ---------------------------------------------------


def test_a_new_user_does_smtp_by_hand_with_the_coach_and_switches_to_dutch(
    terminal: Callable[..., Term], tmp_path: Path
) -> None:
    term = terminal("--root", str(tmp_path / "world"), "--lesson", "2", "--lang", "en")
    term.expect(r"Lesson 2: SMTP by hand")
    term.expect(r"Step 1 of 7:")
    term.expect_prompt("smtp", timeout=20)
    term.sendline("HELO learner.test")
    term.expect(r"250 mx\.example\.net greets learner\.test")
    term.expect(r"✓ done: Say who you are")
    term.expect(r"Step 3 of 7:")
    # the greeting's step, ticked as the session began or with the HELO
    assert "✓ done: Connect to mx.example.net" in term.screen.text
    term.expect_prompt("smtp")
    term.sendline(":hint")
    term.expect(r"Hint 1 of 2:")
    term.expect(r"alice@isp\.test")
    term.expect_prompt("smtp")
    term.sendline(":lang nl")
    term.expect(r"Les 2: SMTP met de hand")
    term.expect(r"Stap 3 van 7:")
    term.expect_prompt("smtp")
    term.sendline(":help")  # the REPL's own words follow the coach's language
    term.expect(r"opdrachten van mailtalk \(nooit naar de server gestuurd\):")
    term.expect(r"oefenopdrachten:")
    term.expect_prompt("smtp")
    term.sendline("RCPT TO:<bob@example.net>")  # out of order: a 503, and the coach says why
    term.expect(r"503 ")
    term.expect(r"de opdrachten hebben een vaste volgorde")
    term.expect_prompt("smtp")
    for line, reply in (("MAIL FROM:<alice@isp.test>", r"250 2\.1\.0"),
                        ("RCPT TO:<bob@example.net>", r"250 2\.1\.5"),
                        ("DATA", r"354 ")):
        term.sendline(line)
        term.expect(reply)
    term.expect(r"Stap 6 van 7:")
    for line in ("Subject: hallo", "", "Dag Bob.", "."):
        term.sendline(line)
    term.expect(r"250 2\.0\.0 ")
    term.expect(r"Stap 7 van 7:")
    term.expect_prompt("smtp")
    term.sendline("QUIT")
    term.expect(r"Les 2 is klaar\. :lesson 3 begint de volgende\.")
    term.sendline(":quit")
    assert term.wait_exit() == 0
    progress = json.loads((tmp_path / "state" / "mailtalk" / "practice.json").read_text())
    assert progress["language"] == "nl"
    assert progress["lessons"]["02-smtp-by-hand"]["done"] is True
    assert progress["lessons"]["02-smtp-by-hand"]["hints"] == {"mail-from": 1}


def test_a_step_done_from_another_terminal_ticks_without_a_keypress(
    terminal: Callable[..., Term], tmp_path: Path
) -> None:
    root = tmp_path / "world"
    term = terminal("--root", str(root), "--lesson", "3")
    term.expect_prompt("smtp", timeout=20)
    world = json.loads((root / "world.json").read_text())
    mx = next(host for host in world["hosts"] if host["name"] == "mx.example.net")
    import smtplib

    with smtplib.SMTP(mx["address"], mx["ports"]["smtp"], timeout=10) as client:
        client.helo("other.terminal")
        assert client.rcpt("bob@example.net")[0] == 503
    term.expect(r"✓ done: Say HELO, then give a recipient", timeout=10)
    term.sendline(":quit")
    assert term.wait_exit() == 0


def lesson_shell(env: dict[str, str], root: Path, script: str, lesson: str = "") -> Any:
    """``script`` in bash, from another directory, after ``eval "$(mailtalk practice
    --vars)"``: as a learner runs a lesson's files in a second terminal."""
    bin_dir = Path(mailtalk_command()[0]).parent
    head = f'eval "$(mailtalk practice --root {root} --vars {lesson})" && cd / && '
    return subprocess.run(
        ["bash", "-c", head + script], capture_output=True, text=True, timeout=120,
        env={**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
             "MAILTALK_PASSWORD": "wonderland", "NETRC": "/nonexistent"},
    )


def test_vars_lets_a_session_file_reach_a_kept_world(
    env: dict[str, str], kept: list[Path], tmp_path: Path
) -> None:
    root = tmp_path / "world"
    started = run(env, "--root", str(root), "--keep")
    assert started.returncode == 0, started.stderr
    kept.append(root)
    exported = run(env, "--root", str(root), "--vars")
    assert exported.returncode == 0, exported.stderr
    assert "export MX_EXAMPLE_NET_SMTP=127.77." in exported.stdout
    assert "export LESSON=/" in exported.stdout and "export LESSONS=/" in exported.stdout
    # from another directory, by ${LESSON}: no path of a source checkout
    played = lesson_shell(env, root, 'mailtalk run "$LESSON/solution.mt"', "--lesson 2")
    assert played.returncode == 0, played.stdout + played.stderr
    assert "PASS" in played.stdout and "/02-smtp-by-hand/solution.mt" in played.stdout
    none = run(env, "--root", str(tmp_path / "nothing"), "--vars")
    assert none.returncode == 3 and "no practice world runs" in none.stderr


def test_check_piped_in_is_the_coachs(
    env: dict[str, str], kept: list[Path], tmp_path: Path
) -> None:
    root = tmp_path / "world"
    assert run(env, "--root", str(root), "--keep").returncode == 0
    kept.append(root)
    checked = run(env, "--root", str(root), "--lesson", "3", stdin=":check\n:hint\n")
    assert checked.returncode == 0, checked.stderr
    notes = [line for line in checked.stderr.splitlines() if line.startswith("# ")]
    assert "# Lesson 3: 503: commands out of order" in notes
    assert "# Not yet: the servers have not seen this step done." in notes
    assert "# The answer:" in notes  # the step has one hint: the answer
    assert "unknown command" not in checked.stderr
    assert checked.stdout.startswith("S: 220 mx.example.net ")  # stdout: the session alone


def test_a_solution_run_with_no_prompt_open_counts(
    env: dict[str, str], kept: list[Path], tmp_path: Path
) -> None:
    """The README's way: a kept world, the lesson begun, its solution run from another
    terminal by ${LESSON} (wherever mailtalk is installed), then :check piped in."""
    root = tmp_path / "world"
    assert run(env, "--root", str(root), "--keep").returncode == 0
    kept.append(root)
    begun = run(env, "--root", str(root), "--lesson", "2")  # no input: begins, no more
    assert begun.returncode == 0, begun.stderr
    assert "# Step 1 of 7:" in begun.stderr
    played = lesson_shell(env, root, 'echo "$LESSON"; mailtalk run "$LESSON/solution.mt"')
    assert played.returncode == 0, played.stdout + played.stderr
    folder, *_ = played.stdout.splitlines()
    assert folder.endswith("/mailtalk/practice/lessons/02-smtp-by-hand")
    assert "PASS" in played.stdout
    checked = run(env, "--root", str(root), stdin=":check\n")
    assert checked.returncode == 0, checked.stderr
    assert "# ✓ done: End the session politely: QUIT" in checked.stderr
    assert "# Lesson 2 is done. :lesson 3 starts the next one." in checked.stderr
    progress = json.loads((Path(env["XDG_STATE_HOME"]) / "mailtalk" / "practice.json")
                          .read_text())
    assert progress["lessons"]["02-smtp-by-hand"]["done"] is True
    # asked again: on to the next lesson, the one done neither reopened nor begun anew
    again = run(env, "--root", str(root), stdin=":check\n")
    assert again.returncode == 0, again.stderr
    assert "# Lesson 3: " in again.stderr and "Lesson 2" not in again.stderr, again.stderr
    dutch = run(env, "--root", str(root), "--lang", "nl", stdin=":check\n")
    assert "# Les 3: " in dutch.stderr and "Les 2" not in dutch.stderr, dutch.stderr
    progress = json.loads((Path(env["XDG_STATE_HOME"]) / "mailtalk" / "practice.json")
                          .read_text())
    assert progress["lessons"]["02-smtp-by-hand"]["done"] is True
    assert progress["current"] == "03-need-mail-first"


def test_a_lesson_done_in_files_with_no_prompt_open_counts_when_one_opens(
    env: dict[str, str], kept: list[Path], tmp_path: Path, terminal: Callable[..., Term]
) -> None:
    """Lesson 7's solution edits control files between sessions: opening the prompt
    afterwards must not make the lesson's setup anew over those edits."""
    env = {**env, "XDG_STATE_HOME": str(tmp_path / "state")}  # the terminal's
    root = tmp_path / "world"
    assert run(env, "--root", str(root), "--keep").returncode == 0
    kept.append(root)
    assert run(env, "--root", str(root), "--lesson", "7").returncode == 0
    played = lesson_shell(env, root, 'LESSON="$LESSON" bash "$LESSON/solution.sh"')
    assert played.returncode == 0, played.stdout + played.stderr
    rcpthosts = root / "hosts" / "mx.example.net" / "control" / "rcpthosts"
    assert "example.org" in rcpthosts.read_text()
    term = terminal("--root", str(root))
    term.expect(r"Lesson 7 is done\.")
    term.expect_prompt("smtp", timeout=20)
    term.sendline(":quit")
    assert term.wait_exit() == 0
    assert "example.org" in rcpthosts.read_text()


def test_the_map_speaks_the_language_asked(env: dict[str, str], kept: list[Path],
                                           tmp_path: Path) -> None:
    root = tmp_path / "world"
    assert run(env, "--root", str(root), "--keep").returncode == 0
    kept.append(root)
    dutch = run({**env, "LANG": "nl_NL.UTF-8"}, "--root", str(root), "--status")
    assert "De oefenwereld in" in dutch.stdout and "Vanuit een ander venster:" in dutch.stdout
    # 80 columns, but for lines holding the (long, temporary) root's path
    assert max(len(line) for line in dutch.stdout.splitlines() if str(tmp_path) not in line) <= 80
    english = run({**env, "LANG": "en_US.UTF-8"}, "--root", str(root), "--status")
    assert "The practice world at" in english.stdout


def test_stop_speaks_the_language_chosen(env: dict[str, str], kept: list[Path],
                                         tmp_path: Path) -> None:
    """--stop says what it did in Dutch when Dutch is chosen (--lang nl, or the
    locale), as the map does; in English otherwise."""
    root = tmp_path / "world"
    assert run(env, "--root", str(root), "--keep").returncode == 0
    kept.append(root)
    pid = json.loads(run(env, "--root", str(root), "--status", "--json").stdout)["pid"]
    stopped = run(env, "--root", str(root), "--lang", "nl", "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"De oefenwereld in {root} (pid {pid}) is gestopt.\n"
    nothing = run({**env, "LANG": "nl_NL.UTF-8"}, "--root", str(root), "--stop")
    assert nothing.stdout == f"Er draait geen oefenwereld in {root}: er is niets te stoppen.\n"
    english = run({**env, "LANG": "en_US.UTF-8"}, "--root", str(root), "--stop")
    assert english.stdout == f"No practice world runs at {root}: nothing to stop.\n"

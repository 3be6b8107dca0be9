"""The REPL's layout helpers on their own: the toolbar fitted to a width, and notes
wrapped between words with a hanging indent."""

from __future__ import annotations

import pytest

pytest.importorskip("prompt_toolkit")

from mailtalk.client.repl.toolbar import toolbar_fragments
from mailtalk.net.target import parse_url
from mailtalk.terminal import wrap_words
from tests.client.repl.cores import imap_selected, say, smtp_ready


def text(fragments: list[tuple[str, str]]) -> str:
    return "".join(piece for _, piece in fragments)


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100, 140, 200])
def test_toolbar_fits_and_cuts_only_between_words(width: int) -> None:
    core = smtp_ready("PIPELINING")
    say(core, "MAIL FROM:<a@b.test>", b"250 ok\r\n")
    say(core, "RCPT TO:<c@d.test>", b"250 ok\r\n")
    say(core, "DATA", b"354 go\r\n")
    target = parse_url("smtp://mx.example.test")
    bar = text(toolbar_fragments(target, core, False, width))  # type: ignore[arg-type]
    assert len(bar) <= width - 1, bar
    full = core.next_hint()
    if " next: " in bar:
        hint = bar.split(" next: ", 1)[1].strip()
        kept = hint.removesuffix("…")
        assert full.startswith(kept), bar
        assert kept == full or full[len(kept)] == " ", bar
    wide = text(toolbar_fragments(target, core, False, 300))  # type: ignore[arg-type]
    assert "  not authenticated  state: data  next: a lone . ends the message" in wide


def test_toolbar_shortens_labels_before_the_hint() -> None:
    core = imap_selected()
    target = parse_url("imap://alice@imap.example.test")
    full = text(toolbar_fragments(target, core, False, None))  # type: ignore[arg-type]
    fitted = text(toolbar_fragments(target, core, False, len(full) - 1))  # type: ignore[arg-type]
    assert "state: selected" in full and "  auth  selected  next: " in fitted
    assert fitted.rstrip().endswith(core.next_hint())


def test_wrap_words_hangs_and_keeps_its_tail_whole() -> None:
    words = "one two three four five six seven eight nine ten eleven twelve thirteen"
    lines = wrap_words(words, 36, "  ↳ ", "    ", max_lines=2, tail="(:explain for more)")
    assert lines == ["  ↳ one two three four five six", "    seven …  (:explain for more)"]
    lines = wrap_words(words, 120, "  ↳ ", "    ", max_lines=2, tail="(:explain for more)")
    assert lines == [f"  ↳ {words}  (:explain for more)"]
    assert wrap_words("short", 80, "# ", "  ") == ["# short"]
    assert wrap_words("a b", 80, "  ↳ ", "    ", 2, "(more)") == ["  ↳ a b  (more)"]


def test_wrap_words_never_breaks_what_is_copied() -> None:
    """A SHA-256 fingerprint (one long word) and a command at the end of a note stay
    whole on their own line, wider than the width if need be: broken, neither pastes."""
    fingerprint = ":".join(["AB"] * 32)
    lines = wrap_words(f"SHA-256: {fingerprint}", 40, "# ", "#   ")
    assert lines == ["# SHA-256:", f"#   {fingerprint}"]
    command = "mailtalk run /home/alice/sessions/a-rather-long-name.session"
    lines = wrap_words(f"wrote the file: replay it with {command}", 40, "# ", "#   ")
    assert lines[-1] == f"#   {command}"

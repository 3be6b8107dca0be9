"""The learned reading: its file, its features, and where it may decide."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailtalk.knowledge import learned
from mailtalk.knowledge.catalogue import CATEGORIES
from mailtalk.knowledge.explain import explain

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "scripts" / "train-reply-model"


def _trainer():  # type: ignore[no-untyped-def]
    loader = SourceFileLoader("train_reply_model", str(TRAINER))
    spec = importlib.util.spec_from_loader("train_reply_model", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_model_was_trained_on_the_labelled_replies_as_they_are() -> None:
    # a label changed or a blind set added without training again fails here:
    # run scripts/train-reply-model
    trainer = _trainer()
    rows = trainer.read(trainer.labelled_files())
    header, _ = learned.read_header((ROOT / "mailtalk/knowledge/reply_model.bin").read_bytes())
    assert header["trained_on"] == {"replies": len(rows), "sha256": trainer.digest(rows)}
    assert tuple(header["classes"]) == CATEGORIES


def test_the_check_of_the_trainer_says_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(TRAINER), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1),
        st.lists(st.tuples(st.integers(0, len(CATEGORIES) - 1), st.floats(-30, 30)), max_size=5),
        max_size=20,
    ),
    st.lists(st.floats(-5, 5), min_size=len(CATEGORIES), max_size=len(CATEGORIES)),
)
def test_the_file_format_keeps_every_weight_to_a_thousandth(
    weights: dict[str, list[tuple[int, float]]], bias: list[float]
) -> None:
    data = learned.encode(CATEGORIES, tuple(bias), weights, {"replies": 0})
    model = learned.decode(data)
    assert model.classes == CATEGORIES
    for name, pairs in weights.items():
        got = model.weights_of(name)
        assert [number for number, _ in got] == [number for number, _ in pairs]
        for (_, weight), (_, kept) in zip(pairs, got, strict=True):
            assert abs(weight - kept) <= learned.STEP / 2 + 1e-9
    assert model.weights_of("\0never seen") == []


def test_a_file_that_is_not_a_model_is_said_so() -> None:
    try:
        learned.decode(b'{"weights": {}}')
    except ValueError as error:
        assert "not a mailtalk reply model" in str(error)
    else:
        raise AssertionError("decoded")


@given(st.lists(st.sampled_from(sorted(learned.model().numbers)[:2000]), max_size=30))
def test_a_guess_is_a_category_with_a_probability(names: list[str]) -> None:
    chances = learned.probabilities(names)
    assert abs(sum(chances) - 1) < 1e-9
    guess = learned.guess(names)
    assert guess.category in CATEGORIES
    assert 0 < guess.probability <= 1
    assert set(guess.evidence) <= set(names)


def test_features_mask_what_differs_from_reply_to_reply() -> None:
    one = explain("550 5.1.1 <alice@example.org>: mailbox unavailable on mx1.example.org")
    other = explain("550 5.1.1 <bob@example.net>: mailbox unavailable on mail.example.com")
    assert one.category == other.category
    names = learned.features("_a_ mailbox unavailable on _h_", "smtp", "550", "5.1.1", None, "RCPT")
    assert "w:mailbox" in names and "b:mailbox unavailable" in names
    assert {"c:smtp550", "e:5.1.1", "e3:1.1", "cmd:RCPT", "cc:RCPT550"} <= set(names)
    assert not any("alice" in name or "example" in name for name in names)


def test_features_are_described_in_words() -> None:
    assert learned.describe("w:quota") == ("the word “{value}”", "quota")
    assert learned.describe("b:_a_ unknown") == ("the words “{value}”", "<address> unknown")
    assert learned.describe("c:smtp452") == ("code {value}", "452")
    assert learned.describe("p:smtp") is None
    assert learned.describe("w:_a_") is None


def test_a_reply_no_rule_knows_is_read_and_says_from_what() -> None:
    explanation = explain("-ERR DELE argument must be greater than 0")
    assert explanation.category == "syntax_error"
    matched = explanation.to_json()["matched"]
    assert matched["rule"] == "learned"
    assert 0.5 < matched["certainty"] <= 1
    assert {"w:argument", "b:dele argument"} & set(matched["weighed"])
    from mailtalk.explain.view import plain

    assert "no known wording: read from" in " ".join(plain(explanation).split())
    dutch = explain("-ERR DELE argument must be greater than 0", language="nl")
    # the strongest features change as the model is retrained; the words stay
    said = " ".join(plain(dutch).split())
    assert "geen bekende formulering: gelezen uit het woord" in said
    assert "het woord “argument”" in said or "de woorden “dele argument”" in said


def test_a_programs_own_wording_is_never_read_again() -> None:
    # Exim's and Postfix's own words, and a wording read for the situation, decide
    for reply, banner in (
        ("503 AUTH command used when not advertised", None),
        ("550 relay not permitted", "220 mx.exim.test ESMTP Exim 4.96"),
    ):
        matched = explain(reply, banner=banner).to_json()["matched"]
        assert matched["rule"] == "wording", (reply, matched)


def test_a_refused_login_stays_about_the_credentials() -> None:
    # the command first (issue 14): after PASS or LOGIN, words of a failure are a login's
    assert explain("-ERR account disabled", command="PASS").category == "auth_failed"
    assert explain("a1 NO failed: permission denied", command="LOGIN").category == "auth_failed"


def test_a_bare_code_is_read_by_the_rules_alone() -> None:
    for code in ("550", "452 4.2.2", "-ERR", "a1 NO"):
        assert explain(code).to_json()["matched"]["rule"] != "learned", code


def test_the_model_file_is_small_and_not_json() -> None:
    data = (ROOT / "mailtalk/knowledge/reply_model.bin").read_bytes()
    assert data.startswith(learned.MAGIC)
    assert len(data) < 2_000_000
    header, _ = learned.read_header(data)
    json.dumps(header)  # the header alone is JSON


def test_accented_words_are_read_as_their_letters() -> None:
    # "sélectionnez" read as [a-z] runs was "lectionnez": a word no reply and no
    # family had; with the accents off it is the word, and its family counts
    accented = learned.features("identifiants refusés", "imap", None, None, None, "LOGIN")
    plain = learned.features("identifiants refuses", "imap", None, None, None, "LOGIN")
    assert accented == plain
    assert {"w:identifiants", "w:refuses", "k:credentials"} <= set(accented)
    german = learned.features(
        "kennwort ungültig, größe überschritten", "pop3", None, None, None, None
    )
    assert {"w:ungultig", "w:grosse", "w:uberschritten", "k:quota", "k:malformed"} <= set(german)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_folding_leaves_ascii_alone(text: str) -> None:
    assert learned.fold_letters(text) == text


def test_every_family_word_is_a_whole_token_with_its_accents_off() -> None:
    # a family word the tokens can never be (an accent, a capital, a hyphen, one
    # letter) would weigh nothing, silently
    families = learned.word_families()
    assert len(families) > 500
    for word in families:
        assert learned._TOKEN.fullmatch(word) and learned.fold_letters(word) == word, word

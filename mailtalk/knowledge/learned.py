"""A reading learned from labelled replies, for the wordings no rule was written for.

The rules of ``decide.py`` know the wordings someone read: a program's own words, the
response codes, the key terms. On replies of servers nobody read before they were
right about three times in four (``tests/knowledge/blind/README.md``: each blind set
scored before it was tuned on). What they miss is mostly a new wording of a known
thing. This module weighs what every reply has, as the rules do (the command
answered, the protocol, the basic, enhanced and response codes, the words), with
weights learned from the labelled replies in ``tests/knowledge`` (the corpus and the
blind sets, less those a second blind labeller put in another category: thousands of
replies of about a hundred programs and providers, labelled by a dozen people).
Scored the same way, on each blind set with that set left out of
the training, it is right more often than the rules were on first sight, and most
often when it is sure; ``decide.py`` takes its reading only then (see there).

The weights are data, ``reply_model.bin`` (its format: see ``MAGIC``), written by
``scripts/train-reply-model`` from the labelled replies (multinomial logistic
regression, pure Python); the file records a digest of what it was trained on, and
a test fails when the labelled replies change without the model being trained
again. The reading says which of its features weighed most, so an explanation can
say why.
"""

from __future__ import annotations

import array
import functools
import itertools
import json
import math
import os
import re
import sys
from typing import Any, Final, NamedTuple

MODEL_FILE: Final = "reply_model.bin"

# the tokens of the masked words (decide.words_of): words of two letters or more,
# placeholders (_a_, _h_, _ip_), and enhanced codes quoted in the text
_TOKEN: Final = re.compile(r"[a-z_]{2,}|[0-9]\.[0-9]{1,3}\.[0-9]{1,3}")


def features(
    words: str,
    protocol: str | None,
    code: str | None,
    enhanced: str | None,
    response_code: str | None,
    command: str | None,
) -> list[str]:
    """The features of one reply: its words and word pairs, the protocol, the basic
    code (whole and its first digits), the enhanced code (whole, class, subject,
    detail), the response code, the command answered and the command with the code,
    and the families of its words (``word_families.toml``). The trainer and
    :func:`guess` use this one function, so they never drift apart."""
    tokens = _TOKEN.findall(words if words.isascii() else fold_letters(words))
    found = {"w:" + token for token in tokens}
    families = word_families()
    for token in tokens:
        found.update(families.get(token, ()))
    found.update("b:" + first + " " + second for first, second in itertools.pairwise(tokens))
    where = protocol or "?"
    found.add("p:" + where)
    code = code or ""
    if code:
        found.add("c:" + where + code)
    if code[:1].isdigit():
        found.update(("c1:" + code[0], "c2:" + code[:2]))
    if enhanced:
        parts = enhanced.split(".")
        found.update(
            (
                "e:" + enhanced,
                "e1:" + parts[0],
                "e2:" + ".".join(parts[1:2]),
                "e3:" + ".".join(parts[1:]),
            )
        )
    if response_code:
        found.add("rc:" + response_code.upper())
    if command:
        found.update(("cmd:" + command, "cc:" + command + code))
    return sorted(found)


# letters that do not come apart into a base letter and a mark (NFKD)
_WHOLE_LETTERS: Final = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d"}
)


def fold_letters(words: str) -> str:
    """The words with their letters' accents taken off ("refusés" -> "refuses",
    "ungültig" -> "ungultig"), as ``word_families.toml`` writes them: the tokens are
    ASCII letters, and without this a French or German reply fell apart into pieces
    ("sélectionnez" into "lectionnez") that no labelled reply and no family had."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", words.translate(_WHOLE_LETTERS))
    return "".join(letter for letter in decomposed if not unicodedata.combining(letter))


@functools.cache
def word_families() -> dict[str, tuple[str, ...]]:
    """Each word of ``word_families.toml`` -> the features of its families
    ("k:storage"): a word never labelled still weighs through its family."""
    from mailtalk.knowledge import parsed, read_data

    data = parsed("word_families.toml", "all", lambda: read_data("word_families.toml"))
    families: dict[str, list[str]] = {}
    for name, family in data.items():
        for word in (*family["words"], *family.get("other_languages", ())):
            families.setdefault(word, []).append("k:" + name)
    return {word: tuple(names) for word, names in families.items()}


class Model(NamedTuple):
    """The weights, as the file keeps them: feature ``names[i]`` weighs
    ``weights[j] * STEP`` for class ``classes_of[j]``, for j in ``starts[i]`` up to
    ``starts[i + 1]``; and a bias per class."""

    classes: tuple[str, ...]
    bias: tuple[float, ...]
    numbers: dict[str, int]  # feature name -> its number
    starts: array.array[int]
    classes_of: array.array[int]
    weights: array.array[int]

    def weights_of(self, name: str) -> list[tuple[int, float]]:
        """(class number, weight) for one feature; none for a feature never seen."""
        number = self.numbers.get(name)
        if number is None:
            return []
        span = range(self.starts[number], self.starts[number + 1])
        return [(self.classes_of[j], self.weights[j] * STEP) for j in span]


# The file: a first line naming the format, a JSON line (classes, bias, sizes, what
# it was trained on), the feature names one per line, then three little-endian
# arrays (where each feature's weights start, int32; their classes, uint8; the
# weights in thousandths, int16). Read in a few milliseconds, where the same model
# as JSON took tens: `mailtalk explain` reads it on every run that meets a wording.
MAGIC: Final = b"mailtalk reply model 1\n"
STEP: Final = 0.001


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of a model file's bytes, and where the names start."""
    if not data.startswith(MAGIC):
        raise ValueError(f"{MODEL_FILE}: not a mailtalk reply model")
    end = data.index(b"\n", len(MAGIC))
    return json.loads(data[len(MAGIC) : end]), end + 1


def decode(data: bytes) -> Model:
    """A model from the bytes of its file (see MAGIC)."""
    header, at = read_header(data)
    names_end = at + header["names_bytes"]
    names = data[at:names_end].decode("utf-8").split("\n")
    arrays = []
    for code, count in (("i", len(names) + 1), ("B", header["pairs"]), ("h", header["pairs"])):
        values = array.array(code)
        size = values.itemsize * count
        values.frombytes(data[names_end : names_end + size])
        if sys.byteorder != "little":
            values.byteswap()
        names_end += size
        arrays.append(values)
    index = {name: number for number, name in enumerate(names)}
    return Model(tuple(header["classes"]), tuple(header["bias"]), index, *arrays)


def encode(
    classes: tuple[str, ...],
    bias: tuple[float, ...],
    weights: dict[str, list[tuple[int, float]]],
    trained_on: dict[str, Any],
) -> bytes:
    """The bytes of a model file; weights rounded to thousandths (see MAGIC)."""
    names = sorted(weights)
    starts, classes_of, values = array.array("i", [0]), array.array("B"), array.array("h")
    for name in names:
        for number, weight in weights[name]:
            classes_of.append(number)
            values.append(max(-32768, min(32767, round(weight / STEP))))
        starts.append(len(classes_of))
    text = "\n".join(names).encode("utf-8")
    header = {
        "classes": list(classes),
        "bias": [round(value, 4) for value in bias],
        "names_bytes": len(text),
        "pairs": len(classes_of),
        "trained_on": trained_on,
    }
    if sys.byteorder != "little":
        for values_array in (starts, classes_of, values):
            values_array.byteswap()
    line = json.dumps(header, separators=(",", ":")).encode()
    return b"".join(
        (MAGIC, line, b"\n", text, starts.tobytes(), classes_of.tobytes(), values.tobytes())
    )


@functools.cache
def model() -> Model:
    """The weights of ``reply_model.bin``, read once."""
    with open(os.path.join(os.path.dirname(__file__), MODEL_FILE), "rb") as file:
        return decode(file.read())


class Guess(NamedTuple):
    """The learned reading: the category, how sure (a probability), and the features
    that weighed most for it, strongest first (``"w:quota"``, ``"c:smtp452"``)."""

    category: str
    probability: float
    evidence: tuple[str, ...]


def probabilities(names: list[str], weights: Model | None = None) -> list[float]:
    """The probability of each class (in ``model().classes`` order) for these features."""
    current = weights or model()
    scores = list(current.bias)
    for name in names:
        for index, weight in current.weights_of(name):
            scores[index] += weight
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


def guess(names: list[str]) -> Guess:
    """The likeliest category for these features, and why."""
    current = model()
    chances = probabilities(names, current)
    best = max(range(len(chances)), key=chances.__getitem__)
    weighed = []
    for name in names:
        for index, weight in current.weights_of(name):
            # a family is not in the reply's words; its words say it better
            if index == best and weight > 0 and not name.startswith("k:"):
                weighed.append((weight, name))
    evidence = tuple(name for _weight, name in sorted(weighed, reverse=True)[:3])
    return Guess(current.classes[best], chances[best], evidence)


# What a feature is, in words: a template with {value}, translated with the view's
# words (locale/*/view.po).
_SAID: Final = {
    "w": "the word “{value}”",
    "b": "the words “{value}”",
    "c": "code {value}",
    "e": "enhanced code {value}",
    "rc": "response code [{value}]",
    "cmd": "after {value}",
}
_PLACEHOLDERS: Final = {"_a_": "<address>", "_h_": "<host>", "_ip_": "<IP address>"}


def describe(feature: str) -> tuple[str, str] | None:
    """A feature as a template and its value (``"w:quota"`` -> ('the word “{value}”',
    'quota')); None for those that say nothing to a reader (the protocol, a code's
    first digits, a lone address)."""
    kind, _, value = feature.partition(":")
    said = _SAID.get(kind)
    if said is None or value in _PLACEHOLDERS:
        return None
    if kind == "c":
        value = re.sub(r"^(\?|smtp|pop3|imap)", "", value)
    if kind == "b":
        value = " ".join(_PLACEHOLDERS.get(word, word) for word in value.split())
    return said, value

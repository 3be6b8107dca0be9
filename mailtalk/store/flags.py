"""IMAP flags, and how a Maildir file's name carries them.

A message file is ``BASE`` in new/ and ``BASE:INFO`` in cur/. The base is the
message's stable identity (its POP3 UIDL, its key in the mailbox index); the
info is ``2,`` followed by flag letters in ASCII order:

    D \\Draft   F \\Flagged   P $Forwarded   R \\Answered   S \\Seen   T \\Deleted

(P is RFC 5788's keyword for what Maildir calls "passed"). Other info letters,
such as Dovecot's lowercase keyword letters, are kept as found. Keywords other
than $Forwarded have no letter: they live in the index's K fields
(:mod:`mailtalk.store.index`), not in ``dovecot-keywords``, so they are not
limited to 26; a folder holds at most :data:`MAX_KEYWORDS` of them, each at most
:data:`MAX_KEYWORD_LENGTH` characters (:func:`check_keywords`). \\Recent is no
letter either: see :mod:`mailtalk.store.mailbox`. Stdlib only.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable

from mailtalk.store.errors import MailboxError

SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, RECENT = (
    "\\Seen",
    "\\Answered",
    "\\Flagged",
    "\\Deleted",
    "\\Draft",
    "\\Recent",
)
FORWARDED = "$Forwarded"

SYSTEM_FLAGS = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, RECENT})
# What a client may store for good (SELECT's PERMANENTFLAGS): \* = any keyword.
PERMANENT_FLAGS = (ANSWERED, FLAGGED, DELETED, SEEN, DRAFT, "\\*")

_FLAG_LETTERS = {DRAFT: "D", FLAGGED: "F", FORWARDED: "P", ANSWERED: "R", SEEN: "S", DELETED: "T"}
_LETTER_FLAGS = {letter: flag for flag, letter in _FLAG_LETTERS.items()}
# The flags a file's name carries; the other flags of a message are index keywords.
FILENAME_FLAGS = frozenset(_FLAG_LETTERS)
# Flags are matched case-insensitively (clients send "\seen"); keywords keep their case.
_CANONICAL_FLAGS = {flag.lower(): flag for flag in (*SYSTEM_FLAGS, FORWARDED)}
# RFC 3501 atom-specials (besides SP and CTLs, which the range check excludes).
_ATOM_SPECIALS = frozenset('(){%*"\\]')

# A keyword is a label, not a place for data: at most this long (Dovecot's
# mail_max_keyword_length) ...
MAX_KEYWORD_LENGTH = 50
# ... and at most this many distinct ones in a folder. Every message lists its own in
# the folder's index and SELECT announces them all, so without a cap one STORE of
# 10,000 keywords grew an index to 14 MB and the server by 600 MB.
MAX_KEYWORDS = 256


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """``flags`` as stored: system flags spelt canonically, \\Recent dropped, keywords checked.

    \\Recent cannot be set or cleared by a client (RFC 3501 6.4.6), so it is
    ignored. An unknown backslash flag or a keyword that is not an IMAP atom
    raises ValueError (an IMAP server answers BAD).
    """
    result = set()
    for flag in flags:
        canonical = _CANONICAL_FLAGS.get(flag.lower())
        if canonical is not None:
            if canonical != RECENT:
                result.add(canonical)
        elif flag.startswith("\\"):
            raise ValueError(f"not a system flag: {flag!r}")
        elif not flag or any(
            ord(char) <= 0x20 or ord(char) >= 0x7F or char in _ATOM_SPECIALS for char in flag
        ):
            raise ValueError(f"not a valid keyword: {flag!r}")
        else:
            result.add(flag)
    return frozenset(result)


def check_keywords(keywords: Collection[str], present: Collection[str]) -> None:
    """Refuse to add ``keywords`` to a folder whose messages hold ``present``.

    MailboxError CANNOT for a keyword longer than :data:`MAX_KEYWORD_LENGTH`, LIMIT
    if the folder would then hold more than :data:`MAX_KEYWORDS` distinct keywords
    (those it holds already stay usable).
    """
    for keyword in keywords:
        if len(keyword) > MAX_KEYWORD_LENGTH:
            raise MailboxError(
                "CANNOT", f"a keyword may be at most {MAX_KEYWORD_LENGTH} characters long"
            )
    new = [keyword for keyword in keywords if keyword not in present]
    if new and len(present) + len(new) > MAX_KEYWORDS:
        raise MailboxError(
            "LIMIT",
            f"a mailbox may hold at most {MAX_KEYWORDS} different keywords; "
            f"this one has {len(present)}",
        )


def flags_to_info(flags: Iterable[str], other_letters: str = "") -> str:
    """The Maildir info for ``flags``: ``2,`` + their letters in ASCII order.

    Keywords other than $Forwarded have no letter and are left out;
    ``other_letters`` (letters this module does not interpret) are kept.
    """
    letters = {_FLAG_LETTERS[flag] for flag in flags if flag in _FLAG_LETTERS}
    letters.update(other_letters)
    return "2," + "".join(sorted(letters))


def info_to_flags(info: str) -> frozenset[str]:
    """The flags in Maildir info ``2,LETTERS``; unknown letters and other info are ignored."""
    if not info.startswith("2,"):
        return frozenset()
    return frozenset(_LETTER_FLAGS[letter] for letter in info[2:] if letter in _LETTER_FLAGS)


@functools.lru_cache(maxsize=1024)
def cached_info_flags(info: str) -> frozenset[str]:
    """:func:`info_to_flags`, remembered: a folder's files share a handful of infos."""
    return info_to_flags(info)


def other_info_letters(info: str) -> str:
    """The letters of ``info`` that carry no flag known here, to keep them as found."""
    if not info.startswith("2,"):
        return ""
    return "".join(letter for letter in info[2:] if letter not in _LETTER_FLAGS)


def split_filename(filename: str) -> tuple[str, str]:
    """``base:info`` -> (base, info); a name in new/ has no info."""
    base, _, info = filename.partition(":")
    return base, info

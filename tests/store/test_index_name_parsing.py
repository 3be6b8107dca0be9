"""The cold index's fast reading of unique_name()'s form agrees with the general parsers.

``LockedIndex._index_new_files`` reads a name of the form ``<sec>.M<usec>P<pid>Q<n>.<host>``
(with or without Dovecot's ``,S=,W=``) with one regular expression; any other name goes
through ``_delivery_order`` and ``sizes_from_name``. Both must give the same delivery order
and sizes for every name, canonical or not.
"""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from mailtalk.store.index import (
    _CANONICAL_NAME,
    NamedColumns,
    _delivery_order,
    _message_files,
    _named_in_full,
)
from mailtalk.store.sizes import sizes_from_name
from mailtalk.store.uidlist import Index

digits = st.text("0123456789", min_size=1, max_size=12)
host = st.text(st.sampled_from("abcz.-_,0123456789M\\057Q"), max_size=12)
fields = st.lists(st.sampled_from(["S=12", "W=14", "S=14", "W=12", "S=x", "W=", "Z=3"]), max_size=3)


@given(digits, digits, digits, digits, host, fields)
def test_fast_reading_agrees(
    sec: str, usec: str, pid: str, seq: str, host: str, extra: list[str]
) -> None:
    base = f"{sec}.M{usec}P{pid}Q{seq}.{host}" + "".join("," + f for f in extra)
    fast = _CANONICAL_NAME.fullmatch(base)
    if fast is None:
        return  # the general parsers read it
    assert (int(fast[1]), int(fast[2]), int(fast[3]), base) == _delivery_order(base, 0)
    named = None
    if fast[4] is not None and int(fast[5]) >= int(fast[4]):
        named = int(fast[4]), int(fast[5])
    assert named == sizes_from_name(base)


def test_the_names_the_store_writes_are_read_fast() -> None:
    assert _CANONICAL_NAME.fullmatch("1712345600.M123P45Q6.mail.example.org,S=1200,W=1236")
    assert _CANONICAL_NAME.fullmatch("1712345600.M123P45Q6.host")


# Names of unique_name()'s form with sizes, in new/ as delivered, in cur/ with a Maildir
# info; their times (seconds and microseconds) drawn apart, then some made to tie; a few
# names not in that form.
@st.composite
def two_listings(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    times = draw(st.lists(st.integers(0, 3_000_000), unique=True, max_size=24))
    names: list[str] = []
    for number, when in enumerate(times):
        if draw(st.integers(0, 29)) != 17 or not number:  # else the time of the name before
            seconds, microseconds = divmod(when, 1_000_000)
        size = draw(st.sampled_from([10, 12]))
        usec = draw(st.sampled_from(["{}", "{:06}"])).format(microseconds)
        name = (f"{1712345600 + seconds}.M{usec}"
                f"P{draw(st.sampled_from(['1', '30']))}Q{number}.host,S={size},W={size + 1}")
        if draw(st.integers(0, 39)) == 17:
            name = draw(st.sampled_from([".tmpfile", "abc,S=1,W=2", "1.M1P2Q3.h", "1,S=2,W=1"]))
        names.append(name)
    split = draw(st.integers(0, len(names)))
    infos = st.sampled_from([":2,", ":2,S", ":2,FRS", ""])
    return names[:split], [name + draw(infos) for name in names[split:]]


@given(two_listings())
def test_the_named_columns_agree_with_the_dict_of_files(
    listings: tuple[list[str], list[str]]
) -> None:
    """A rebuilt index's columns made straight from the two name lists are what the
    dict of files and its delivery order give, or None (and the dict's path decides)."""
    new, cur_names = listings
    named = NamedColumns.from_names(new, cur_names)
    files, in_new = _message_files(new, cur_names)
    expected = _named_in_full(list(files)) if files else None
    if named is None:
        return
    assert expected is not None
    bases, sizes, rfc822_sizes = expected
    assert named.bases == bases
    assert (list(named.sizes), list(named.rfc822_sizes)) == (sizes, rfc822_sizes)
    assert named.filenames == [files[base][1] for base in bases]
    assert list(named.in_cur) == [files[base][0] == "cur" for base in bases]
    assert {named.bases[p] for p in named.new_positions()} == in_new


def test_the_named_columns_are_made_for_delivered_names() -> None:
    """The cold path is taken for what mailtalk and Dovecot deliver, ties aside."""
    new = ["1712345601.M5P1Q2.host,S=10,W=12"]
    cur = ["1712345600.M7P1Q1.host,S=10,W=12:2,S", "1712345600.M12P1Q0.host,S=3,W=3:2,"]
    named = NamedColumns.from_names(new, cur)
    assert named is not None
    assert named.bases == ["1712345600.M7P1Q1.host,S=10,W=12", "1712345600.M12P1Q0.host,S=3,W=3",
                           "1712345601.M5P1Q2.host,S=10,W=12"]
    assert named.filenames == [cur[0], cur[1], new[0]]
    assert list(named.in_cur) == [1, 1, 0]
    tie = ["1712345600.M7P1Q9.other,S=10,W=12"]
    assert NamedColumns.from_names(tie, cur) is None  # the same microsecond: the general path


def _indexed(bases: list[str]) -> Index:
    """An index of ``bases``, UIDs 1, 2, ... in that order."""
    index = Index(1, len(bases) + 1, 1)
    index.uids = array("I", range(1, len(bases) + 1))
    index.bases = list(bases)
    index.sizes = array("q", [10] * len(bases))
    index.rfc822_sizes = array("q", [12] * len(bases))
    return index


@given(two_listings(),
       st.sampled_from(["none", "flags", "gone", "new", "both", "both and gone", "dot"]))
def test_the_files_of_an_indexed_folder_agree_with_the_dict_of_files(
    listings: tuple[list[str], list[str]], change: str
) -> None:
    """A folder reopened: its files as columns in the index's order are what the dict of
    files gives, or None when they are not one file for each indexed message."""
    new, cur = listings
    files, _ = _message_files(new, cur)
    index = _indexed(list(files))
    new, cur = list(new), list(cur)
    if change == "flags" and cur:
        cur[0] = cur[0].partition(":")[0] + ":2,T"  # renamed by a flag change
    elif change == "gone" and files:
        (new if new else cur).pop()
    elif change == "new":
        new.append("1712345699.M1P1Q1.elsewhere,S=1,W=1")
    elif change.startswith("both") and new:
        cur.append(new[0] + ":2,")  # copied into cur/, not moved (yet)
        if change == "both and gone":
            (cur if len(cur) > 1 else new).pop(0)  # as many files as messages
    elif change == "dot":
        new.append(".tmpfile")
    named = NamedColumns.as_indexed(index, new, cur)
    files, in_new = _message_files(new, cur)
    one_each = (set(files) == set(index.bases) and len(new) + len(cur) == len(files)
                and not any(name.startswith(".") for name in new + cur))
    if named is None:
        assert not one_each
        return
    assert one_each
    assert named.bases is index.bases
    assert named.filenames == [files[base][1] for base in index.bases]
    assert list(named.in_cur) == [files[base][0] == "cur" for base in index.bases]
    assert {index.bases[p] for p in named.new_positions()} == in_new

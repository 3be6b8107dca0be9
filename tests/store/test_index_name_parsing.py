"""The cold index's fast reading of unique_name()'s form agrees with the general parsers.

``LockedIndex._index_new_files`` reads a name of the form ``<sec>.M<usec>P<pid>Q<n>.<host>``
(with or without Dovecot's ``,S=,W=``) with one regular expression; any other name goes
through ``_delivery_order`` and ``sizes_from_name``. Both must give the same delivery order
and sizes for every name, canonical or not.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailtalk.store.index import _CANONICAL_NAME, _delivery_order
from mailtalk.store.sizes import sizes_from_name

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

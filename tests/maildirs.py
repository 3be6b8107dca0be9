"""Reading the Maildirs mailtalk's servers deliver into, in the tests."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# <sec>.M<usec>P<pid>Q<n>.<host>: mailtalk's delivery names (store.maildir.unique_name)
DELIVERY_NAME = re.compile(r"(\d+)\.M(\d+)P\d+Q(\d+)\.")


def in_delivery_order(paths: Iterable[Path]) -> list[Path]:
    """``paths`` (files one mailtalk server delivered) oldest first, by the numbers of
    their names. Not by mtime (two deliveries in one clock tick have the same one) nor
    by the name as text (the microseconds are not zero-padded: M99999 sorts after
    M100001, which made tests fail now and then once delivery got faster). A folder
    with other programs' names (a client's local Maildir) goes by mtime, then name."""

    files = list(paths)
    found = [DELIVERY_NAME.match(path.name) for path in files]
    if not all(found):  # another program's folder (a client's local Maildir)
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
    numbers = {
        path: tuple(int(n) for n in match.groups())
        for path, match in zip(files, found, strict=True)
        if match
    }
    return sorted(files, key=numbers.__getitem__)

"""Fixtures of the store tests: a mail store in a temporary root, and its user alice."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailtalk.store import MailStore, UserMailboxes


@pytest.fixture
def store(tmp_path: Path) -> MailStore:
    return MailStore(tmp_path)


@pytest.fixture
def alice(store: MailStore) -> UserMailboxes:
    return store.user_mailboxes("alice")

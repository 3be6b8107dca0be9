"""REQUIRETLS (RFC 8689) refusals: the wordings the RFC defines and servers send."""

from __future__ import annotations

import pytest

from mailtalk.knowledge import codes
from mailtalk.knowledge.explain import explain

REQUIRETLS_REPLIES = [
    # RFC 8689 section 5: the next hop did not offer REQUIRETLS
    ("550 5.7.30 REQUIRETLS support required", "requiretls-support-required", "5.7.30"),
    ("450 4.7.30 REQUIRETLS support required", "requiretls-support-required", "4.7.30"),
    # Exim 4.92's experimental REQUIRETLS, in the bounce it writes
    ("530 5.7.4 REQUIRETLS support required", "exim-requiretls-support-required", "5.7.4"),
    # MAIL FROM:<...> REQUIRETLS on a session without TLS (RFC 8689 4.1)
    ("530 5.7.10 REQUIRETLS requires TLS connection", "requiretls-needs-tls-session", "5.7.10"),
    ("530 5.7.10 REQUIRETLS requires a TLS-protected session",
     "requiretls-needs-tls-session", "5.7.10"),
]


@pytest.mark.parametrize(("reply", "entry", "enhanced"), REQUIRETLS_REPLIES)
def test_requiretls_refusals_are_explained_as_such(reply: str, entry: str, enhanced: str) -> None:
    explanation = explain(reply)
    assert explanation.matched is not None and explanation.matched.id == entry
    assert explanation.category == "tls_required"
    assert explanation.enhanced_code == enhanced
    assert any("REQUIRETLS" in cause for cause in explanation.causes)
    assert explanation.transient is reply.startswith("4")


def test_the_generic_tls_entry_still_reads_a_plain_starttls_demand() -> None:
    """The REQUIRETLS entries sit before the generic one and take nothing of its."""
    explanation = explain("530 5.7.0 Must issue a STARTTLS command first")
    assert explanation.matched is not None and explanation.matched.id == "starttls-first"


def test_the_enhanced_codes_rfc_8689_uses() -> None:
    required = codes.enhanced_code("5.7.30")
    assert required is not None and required.title == "REQUIRETLS support required"
    needed = codes.enhanced_code("5.7.10")
    assert needed is not None and "RFC 8689" in needed.reference
    assert "REQUIRETLS" in needed.description

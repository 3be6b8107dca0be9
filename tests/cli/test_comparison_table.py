"""The README's comparison with swaks, curl, s_client, Mailpit, smtp4dev and GreenMail
(issue 16, "Done when"): no row where a peer has ✔ and mailtalk ✘ except the web inbox
UI, and every ✔ of mailtalk backed by a test against a real peer.

The tests that back each row live here, in ``BACKING``, so the README stays readable
in 80 columns. A row that is not done yet (the feature is being built, or nobody
builds it, or it works but no test drives it with a real peer) is in ``PENDING`` with
the reason: the lead removes it when the feature lands, and this test says so when a
pending row has become done. No xfail: a list that must shrink.

A real peer is a test under ``tests/interop/`` (Postfix, Dovecot, Exim, swaks, curl,
...), or one of ``REAL_PROGRAMS_ELSEWHERE`` (a real shell, groff, dig)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Compared with swaks, curl, s_client, Mailpit, smtp4dev, GreenMail"
MAILTALK = "mailtalk"
CELLS = {"✔", "✘", "–"}

# Rows where a peer may have ✔ and mailtalk ✘ for good.
ACCEPTED_EXCEPTIONS = {
    "web inbox UI": "mailtalk imap, or any mail client, reads mailtalk serve's mailboxes",
}

# Rows not done yet, with why; the lead empties this as features land.
PENDING: dict[str, str] = {}

# Tests outside tests/interop that still drive a real program.
REAL_PROGRAMS_ELSEWHERE = {
    "tests/cli/test_shell_integration.py::test_bashrc_line_registers_the_completion": "bash",
    "tests/cli/test_shell_integration.py::test_zshrc_line_registers_the_completion": "zsh",
    "tests/cli/test_man.py::test_renders_without_warnings": "groff",
    "tests/servers/test_dns_server.py::test_dig_interop": "dig",
}

INTEROP = "tests/interop/"
BACKING: dict[str, list[str]] = {
    "DSN parameters accepted": [
        f"{INTEROP}test_serve_dsn_postfix_real.py::"
        "test_postfix_passes_notify_and_envid_on_to_mailtalk_serve"
    ],
    "DSN reports generated": [
        "tests/interop/test_dsn_real.py::"
        "test_postfix_refusal_comes_back_as_a_dsn_like_postfixs_own",
        f"{INTEROP}test_serve_lmtp.py::"
        "test_postfix_delivers_by_lmtp_unix_and_serve_sends_the_success_dsn",
    ],
    "PRDR": [
        "tests/interop/test_send_prdr_real.py::"
        "test_exim_answers_each_recipient_and_one_refusal_is_reported_alone",
    ],
    "PIPELINING": [
        "tests/interop/test_send_pipeline_real.py::test_exim_logs_the_client_pipelined",
        "tests/interop/test_send_pipeline_real.py::"
        "test_postfix_pipelined_replies_matched_in_order_and_delivered",
    ],
    "HTTP API": [
        "tests/interop/test_http_api_node.py::"
        "test_node_fetch_adds_a_user_waits_reads_deletes_and_sets_a_fault",
    ],
    "wait for a message": [
        "tests/interop/test_http_api_node.py::"
        "test_node_fetch_adds_a_user_waits_reads_deletes_and_sets_a_fault",
    ],
    # Clients
    "SMTP client": [
        f"{INTEROP}test_repl_real.py::test_smtp_session_with_starttls_and_dot_stuffing",
        f"{INTEROP}test_send_stop_points_real.py::test_postfix_drop_after_dot_delivers_the_message",
    ],
    "POP3 client": [
        f"{INTEROP}test_repl_real.py::test_pop3_session_reads_and_deletes_a_fresh_message"
    ],
    "IMAP client": [f"{INTEROP}test_repl_real.py::test_imap_session_with_fetch_and_append_literal"],
    "LMTP client": [f"{INTEROP}test_lmtp_real.py::test_send_by_lmtp_delivers_into_the_maildir"],
    "typed by hand (REPL)": [
        f"{INTEROP}test_repl_real.py::test_smtp_session_with_starttls_and_dot_stuffing"
    ],
    "STARTTLS on SMTP": [f"{INTEROP}test_pipe_real.py::test_smtp_starttls_option"],
    "STLS on POP3": [f"{INTEROP}test_repl_real.py::test_pop3_stls_typed_raw"],
    "STARTTLS on IMAP": [f"{INTEROP}test_repl_real.py::test_imap_starttls_typed_raw"],
    "implicit TLS": [
        f"{INTEROP}test_repl_real.py::test_smtps_url_is_implicit_tls",
        f"{INTEROP}test_repl_real.py::test_pop3s_implicit_tls",
        f"{INTEROP}test_repl_real.py::test_imaps_implicit_tls",
    ],
    "AUTH PLAIN": [f"{INTEROP}test_repl_real.py::test_meta_auth_plain_asks_without_echo"],
    "AUTH LOGIN": [
        f"{INTEROP}test_client_meta_real.py::test_pop3_auth_on_dovecot_asks_capa_before_the_password"
    ],
    "AUTH CRAM-MD5": [
        f"{INTEROP}test_sasl_real.py::test_meta_auth_with_dovecot",
        f"{INTEROP}test_sasl_real.py::test_send_auth_mechanism_with_postfix",
    ],
    "AUTH DIGEST-MD5": [
        f"{INTEROP}test_sasl_real.py::test_digest_md5_with_dovecot",
        f"{INTEROP}test_sasl_real.py::test_send_digest_md5_and_ntlm_with_postfix_cyrus_sasl",
    ],
    "AUTH NTLM": [
        f"{INTEROP}test_sasl_real.py::test_send_digest_md5_and_ntlm_with_postfix_cyrus_sasl",
        f"{INTEROP}test_sasl_real.py::test_wrong_password_is_refused_by_cyrus",
    ],
    "AUTH EXTERNAL": [
        f"{INTEROP}test_sasl_real.py::test_external_with_dovecot",
        f"{INTEROP}test_sasl_real.py::test_session_file_auth_external_with_dovecot",
        f"{INTEROP}test_sasl_real.py::test_send_external_with_exim",
    ],
    "AUTH GSSAPI": [
        f"{INTEROP}test_gssapi_real.py::test_meta_auth_gssapi_with_dovecot",
        f"{INTEROP}test_gssapi_real.py::test_session_file_auth_gssapi_with_dovecot",
        f"{INTEROP}test_gssapi_real.py::test_send_gssapi_with_postfix_cyrus",
    ],
    "AUTH XOAUTH2": [
        f"{INTEROP}test_oauth2_real.py::test_pipe_auth_token_with_dovecot",
        f"{INTEROP}test_oauth2_real.py::test_repl_auth_token_with_dovecot",
        f"{INTEROP}test_oauth2_real.py::test_send_token_with_postfix_and_dovecot",
    ],
    "AUTH OAUTHBEARER": [
        f"{INTEROP}test_oauth2_real.py::test_pipe_auth_token_with_dovecot",
        f"{INTEROP}test_oauth2_real.py::test_diagnose_login_with_dovecot",
        f"{INTEROP}test_oauth2_real.py::test_send_token_with_postfix_and_dovecot",
    ],
    "AUTH SCRAM-SHA-1/256": [
        f"{INTEROP}test_sasl_real.py::test_meta_auth_with_dovecot",
        f"{INTEROP}test_sasl_real.py::test_wrong_password_is_refused_by_scram",
    ],
    "CHUNKING (BDAT)": [
        f"{INTEROP}test_send_extensions_real.py::test_postfix_chunking_and_size",
        f"{INTEROP}test_client_meta_real.py::test_bdat_to_exim",
    ],
    "DSN (NOTIFY, RET, ENVID)": [
        f"{INTEROP}test_send_extensions_real.py::test_postfix_dsn_success_quotes_envid_and_orcpt"
    ],
    "SMTPUTF8": [f"{INTEROP}test_send_extensions_real.py::test_postfix_smtputf8_sender"],
    "8BITMIME": [
        f"{INTEROP}test_send_8bitmime_real.py::test_exim_logs_body_8bitmime_and_stores_the_bytes",
        f"{INTEROP}test_send_8bitmime_real.py::"
        "test_postfix_accepts_body_8bitmime_and_delivers_the_bytes",
    ],
    "talk to a program (pipe)": [
        f"{INTEROP}test_transports_real.py::test_pipe_talks_to_exim_bh_as_to_a_socket"
    ],
    "Unix-domain socket": [
        f"{INTEROP}test_transports_real.py::test_unix_socket_to_postfix_delivers"
    ],
    "PROXY header": [
        f"{INTEROP}test_transports_real.py::test_proxy_header_makes_postfix_see_the_client_given"
    ],
    "XCLIENT": [
        f"{INTEROP}test_send_plumbing_real.py::test_xclient_makes_postfix_see_the_client_given"
    ],
    "TLS: SNI": [f"{INTEROP}test_tls_client_real.py::test_sni_sent_by_ip_reaches_the_server"],
    "TLS: min/max version": [
        f"{INTEROP}test_tls_client_real.py::test_tls_max_and_ciphers_reach_postfix"
    ],
    "TLS: ciphers": [f"{INTEROP}test_tls_client_real.py::test_tls_max_and_ciphers_reach_postfix"],
    "TLS: client certificate": [
        f"{INTEROP}test_tls_client_real.py::test_client_certificate_with_encrypted_key_reaches_postfix"
    ],
    "TLS: CA file, insecure": [
        f"{INTEROP}test_repl_real.py::test_unverifiable_certificate_is_one_line_naming_cafile_and_insecure",
        f"{INTEROP}test_repl_real.py::test_insecure_connects_and_says_not_verified",
    ],
    "TLS: show the chain": [
        f"{INTEROP}test_tls_client_real.py::test_cert_in_the_repl_shows_the_whole_chain"
    ],
    "TLS: dump the chain, PEM": [
        f"{INTEROP}test_tls_client_real.py::test_tls_dump_is_the_peers_certificate"
    ],
    "quit after a stage": [
        f"{INTEROP}test_send_stop_points_real.py::test_postfix_quit_after_rcpt_delivers_nothing"
    ],
    "drop after a stage": [
        f"{INTEROP}test_send_stop_points_real.py::test_postfix_drop_after_data_is_a_lost_connection_and_delivers_nothing"
    ],
    "per-host config file": [f"{INTEROP}test_config_file_real.py::test_send_by_alias_into_postfix"],
    "session files, checked": [
        f"{INTEROP}test_run_real.py::test_submission_starttls_auth_delivers_to_alice"
    ],
    "explained replies": [f"{INTEROP}test_explain_real.py::test_postfix_port_25_auth_not_enabled"],
    "completion in the REPL": [
        f"{INTEROP}test_repl_real.py::test_completion_follows_the_smtp_state"
    ],
    "shell completion": [
        "tests/cli/test_shell_integration.py::test_bashrc_line_registers_the_completion",
        "tests/cli/test_shell_integration.py::test_zshrc_line_registers_the_completion",
    ],
    "man page": ["tests/cli/test_man.py::test_renders_without_warnings"],
    "SIZE": [
        f"{INTEROP}test_send_extensions_real.py::test_postfix_chunking_and_size",
        f"{INTEROP}test_send_extensions_real.py::test_postfix_size_over_the_limit_is_refused_before_mail",
    ],
    # Test servers
    "SMTP server": [f"{INTEROP}test_serve_clients.py::test_swaks_plain"],
    "POP3 server": [f"{INTEROP}test_pop3_clients.py::test_fetchmail_plain"],
    "IMAP server": [f"{INTEROP}test_imap_clients.py::test_mbsync_two_way"],
    "LMTP server": [
        f"{INTEROP}test_serve_lmtp.py::test_postfix_lmtp_client_delivers_through_the_transport_map",
        f"{INTEROP}test_serve_lmtp.py::"
        "test_swaks_lmtp_gets_a_reply_per_recipient_and_one_over_quota_alone",
    ],
    "LMTP on a Unix socket": [
        f"{INTEROP}test_serve_lmtp.py::test_swaks_lmtp_over_the_unix_socket",
        f"{INTEROP}test_serve_lmtp.py::"
        "test_postfix_delivers_by_lmtp_unix_and_serve_sends_the_success_dsn",
    ],
    "SMTP STARTTLS": [f"{INTEROP}test_serve_clients.py::test_swaks_starttls_verified"],
    "SMTP implicit TLS": [f"{INTEROP}test_serve_clients.py::test_swaks_implicit_tls"],
    "POP3 STLS": [f"{INTEROP}test_pop3_clients.py::test_fetchmail_stls"],
    "POP3 implicit TLS": [f"{INTEROP}test_pop3_clients.py::test_fetchmail_pop3s"],
    "IMAP STARTTLS": [
        f"{INTEROP}test_journal_clients.py::test_curl_imap_starttls",
        f"{INTEROP}test_imap_clients.py::test_imapclient_starttls_search_bodystructure_idle",
    ],
    "IMAP implicit TLS": [
        f"{INTEROP}test_imap_clients.py::test_getmail_imap_ssl_retriever_all_folders"
    ],
    "AUTH PLAIN, LOGIN": [
        f"{INTEROP}test_serve_clients.py::test_swaks_auth_relays_to_a_foreign_domain"
    ],
    "server AUTH CRAM-MD5": [
        f"{INTEROP}test_serve_sasl_clients.py::test_swaks_cram_md5",
        f"{INTEROP}test_serve_sasl_clients.py::test_curl_cram_md5",
    ],
    "AUTH SCRAM-SHA-256": [f"{INTEROP}test_serve_sasl_clients.py::test_msmtp_scram_sha_256"],
    "server AUTH XOAUTH2": [f"{INTEROP}test_serve_sasl_clients.py::test_imaplib_xoauth2"],
    "server AUTH OAUTHBEARER": [f"{INTEROP}test_serve_sasl_clients.py::test_curl_oauth2_bearer"],
    "fault injection": [f"{INTEROP}test_serve_clients.py::test_serve_fault_second_rcpt_swaks"],
    "rate limits": [
        f"{INTEROP}test_fault_rules_real.py::test_swaks_over_the_rate_gets_421_until_the_window_passes"
    ],
    "greylisting": [
        f"{INTEROP}test_fault_rules_real.py::test_postfix_is_greylisted_then_delivers_after_a_restart"
    ],
    "slow replies (trickle)": [
        f"{INTEROP}test_fault_rules_real.py::test_curl_times_out_on_a_trickled_reply"
    ],
    "TLS faults": [
        f"{INTEROP}test_tls_faults.py::test_curl_refuses",
        f"{INTEROP}test_tls_faults.py::test_openssl_s_client_refuses",
    ],
    "DNS server": ["tests/servers/test_dns_server.py::test_dig_interop"],
    "server CHUNKING (BDAT)": [
        f"{INTEROP}test_serve_extensions_real.py::test_exim_sends_bdat_to_mailtalk_serve_and_the_message_arrives_byte_identical"
    ],
    "server SMTPUTF8": [f"{INTEROP}test_serve_clients.py::test_smtplib_smtputf8_and_8bitmime"],
    "server SIZE": [
        f"{INTEROP}test_serve_extensions_real.py::"
        "test_exim_declares_size_and_the_message_over_serves_max_size_bounces_at_mail"
    ],
    "server 8BITMIME": [
        f"{INTEROP}test_serve_clients.py::test_smtplib_8bitmime_body_with_ascii_addresses"
    ],
    "IMAP QUOTA": [f"{INTEROP}test_imap_quota_special_use.py::test_quota_with_imapclient"],
    "IMAP SPECIAL-USE": [
        f"{INTEROP}test_imap_quota_special_use.py::test_special_use_folders_with_imapclient"
    ],
    "IMAP CREATE-SPECIAL-USE": [
        f"{INTEROP}test_imap_create_special_use.py::"
        "test_imapclient_creates_an_archive_that_keeps_its_use"
    ],
    "IMAP CONDSTORE": [
        f"{INTEROP}test_imap_sort_thread_condstore.py::test_imapclient_sort_thread_and_condstore"
    ],
    "IMAP SORT": [
        f"{INTEROP}test_imap_sort_thread_condstore.py::test_imapclient_sort_thread_and_condstore",
        f"{INTEROP}test_imap_sort_thread_condstore.py::test_sort_and_thread_answer_as_dovecot_does",
    ],
    "IMAP THREAD": [
        f"{INTEROP}test_imap_sort_thread_condstore.py::test_imapclient_sort_thread_and_condstore",
        f"{INTEROP}test_imap_sort_thread_condstore.py::test_sort_and_thread_answer_as_dovecot_does",
    ],
    "IMAP ESEARCH": [f"{INTEROP}test_imap_quota_special_use.py::test_esearch_with_curl"],
    "IMAP IDLE": [
        f"{INTEROP}test_imap_clients.py::test_imapclient_starttls_search_bodystructure_idle"
    ],
    "IMAP MOVE, UIDPLUS": [
        f"{INTEROP}test_imapclient_livetest.py::test_imapclient_livetest",
        f"{INTEROP}test_imap_clients.py::test_imaplib_full_session",
    ],
    "relay, onward delivery": [
        f"{INTEROP}test_dsn_real.py::test_relayed_onward_into_postfixs_maildir",
        f"{INTEROP}test_dsn_real.py::test_postfix_refusal_comes_back_as_a_dsn_like_postfixs_own",
    ],
    "event journal": [f"{INTEROP}test_journal_clients.py::test_swaks_starttls_auth"],
}
# A feature named in both tables (SIZE, AUTH CRAM-MD5, ...) is "server FEATURE" in the
# servers' table, so every row has one key.
PEER_COLUMNS = {
    "clients": ["swaks", "curl", "s_client"],
    "servers": ["Mailpit", "smtp4dev", "GreenMail"],
}


def _key(table: str, feature: str, seen: set[str]) -> str:
    return f"server {feature}" if table == "servers" and feature in seen else feature


@cache
def rows() -> dict[str, dict[str, str]]:
    """Every row of the section's two tables: key -> {column: ✔/✘/–}."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        else:
            current = None
    assert len(tables) == 2, f"expected the clients' and the servers' table, found {len(tables)}"
    result: dict[str, dict[str, str]] = {}
    for name, table in zip(["clients", "servers"], tables, strict=True):
        header, *body = table
        assert header[1:] == [MAILTALK, *PEER_COLUMNS[name]], header
        for cells in body:
            assert len(cells) == len(header), f"{cells[0]!r}: {len(cells)} cells"
            values = {}
            for column, cell in zip(header[1:], cells[1:], strict=True):
                mark = cell.split()[0] if cell else ""  # "✔ 3": a footnote follows
                assert mark in CELLS, f"{cells[0]!r}, {column}: {cell!r}"
                values[column] = mark
            key = _key(name, cells[0], set(result))
            assert key not in result, f"row {cells[0]!r} twice in the {name}' table"
            result[key] = values
    return result


def _gap(values: dict[str, str]) -> bool:
    return values[MAILTALK] != "✔" and any(values[c] == "✔" for c in values if c != MAILTALK)


@cache
def _functions(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return frozenset(
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def _is_real_peer_test(test_id: str) -> bool:
    return test_id.startswith("tests/interop/") or test_id in REAL_PROGRAMS_ELSEWHERE


def test_the_tables_parse_and_name_their_peers() -> None:
    assert len(rows()) > 60
    assert {"SMTP client", "SMTP server", "web inbox UI"} <= set(rows())


def test_every_named_test_exists() -> None:
    missing = []
    for row, tests in BACKING.items():
        for test_id in tests:
            path, _, function = test_id.partition("::")
            if not (ROOT / path).is_file() or function not in _functions(path):
                missing.append(f"{row}: {test_id}")
    assert not missing, "tests named in BACKING that do not exist:\n" + "\n".join(missing)


def test_every_mailtalk_tick_is_backed_by_a_real_peer_test() -> None:
    unbacked = [
        row
        for row, values in rows().items()
        if values[MAILTALK] == "✔"
        and row not in PENDING
        and not any(_is_real_peer_test(t) for t in BACKING.get(row, []))
    ]
    assert not unbacked, (
        "mailtalk ✔ with no real-peer test in BACKING (add one, or list the row in "
        f"PENDING with the reason): {unbacked}"
    )


def test_no_row_where_a_peer_does_it_and_mailtalk_does_not() -> None:
    gaps = [
        row
        for row, values in rows().items()
        if _gap(values) and row not in ACCEPTED_EXCEPTIONS and row not in PENDING
    ]
    assert not gaps, f"a peer has ✔ and mailtalk ✘, and the row is not pending: {gaps}"


def test_every_mailtalk_cross_is_pending_or_accepted() -> None:
    undecided = [
        row
        for row, values in rows().items()
        if values[MAILTALK] != "✔" and row not in ACCEPTED_EXCEPTIONS and row not in PENDING
    ]
    assert not undecided, f"mailtalk ✘ with no reason in PENDING: {undecided}"


def test_pending_rows_are_still_pending() -> None:
    """When a feature lands (mailtalk ✔ and a real-peer test in BACKING), its row
    leaves PENDING; a row that left the README leaves it too."""
    done = [
        row
        for row in PENDING
        if row in rows()
        and rows()[row][MAILTALK] == "✔"
        and any(_is_real_peer_test(t) for t in BACKING.get(row, []))
    ]
    gone = [row for row in PENDING if row not in rows()]
    assert not done, f"done now: remove from PENDING: {done}"
    assert not gone, f"PENDING names rows the README does not have: {gone}"


def test_backing_names_only_rows_of_the_tables() -> None:
    stray = [row for row in BACKING if row not in rows()]
    assert not stray, f"BACKING names rows the README does not have: {stray}"


def test_accepted_exceptions_are_the_web_inbox_ui_only() -> None:
    """The issue accepts one exception; widening it is the lead's decision, here."""
    assert set(ACCEPTED_EXCEPTIONS) == {"web inbox UI"}
    assert _gap(rows()["web inbox UI"])


def test_pending_reasons_are_said() -> None:
    # a loop, not a parametrized test: an empty PENDING must pass, not skip
    unsaid = [row for row, why in PENDING.items() if len(why) <= 20]
    assert not unsaid, f"say why, and who builds it if anyone: {unsaid}"

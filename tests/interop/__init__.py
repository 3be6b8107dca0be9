"""Interop tests against real Postfix and Dovecot started by scripts/real-servers."""

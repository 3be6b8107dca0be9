"""Exit statuses, documented in the README and the man page (like swaks's)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # a command got a failure reply (pipe mode), or an unexpected error
    USAGE = 2  # bad arguments or options (click's own status)
    CONNECT = 3  # could not connect: DNS, refused, unreachable, connect timeout
    TLS = 4  # TLS handshake or certificate verification failed
    PROTOCOL = 5  # the server broke the protocol, closed unexpectedly, or a reply timed out
    AUTH = 6  # mailtalk run: an auth directive failed
    OPEN_RELAY = 7  # mailtalk diagnose relay: the server relays for anyone
    INTERRUPTED = 130  # Ctrl-C outside the REPL
    PIPE_CLOSED = 141  # standard output closed early (| head), like a tool killed by SIGPIPE


EXIT_CODE_HELP = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "a command got a failure reply (pipe mode), or an unexpected error",
    ExitCode.USAGE: "bad arguments, options or URL (e.g. a --cafile with no certificate)",
    ExitCode.CONNECT: "could not connect (DNS, refused, unreachable, connect timeout)",
    ExitCode.TLS: "TLS handshake or certificate verification failed",
    ExitCode.PROTOCOL: "the server broke the protocol, hung up, or did not answer in time",
    ExitCode.AUTH: "authentication failed (mailtalk run, send)",
    ExitCode.OPEN_RELAY: "the server is an open relay (mailtalk diagnose relay)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C",
    ExitCode.PIPE_CLOSED: "standard output was closed early (e.g. | head); nothing is printed",
}

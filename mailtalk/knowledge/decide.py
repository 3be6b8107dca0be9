"""Decide what kind of problem a reply reports, and which evidence decided it.

``explain.py`` turns the decision into prose; this module only weighs the evidence, in
the order its docstring gives (repeated on :func:`decide_category`): a program's own
wording, a response code, a general wording, an enhanced code, the key terms of
``terms.toml``, the command and the state, then the broad codes. The data is read by
``catalogue.py``; nothing here is prose.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from mailtalk.knowledge.catalogue import (
    CODE_FILES,
    PATTERN_FILES,
    Category,
    Context,
    Pattern,
    Reading,
    ResponseCode,
    Software,
    Term,
    category_of_basic,
    category_of_enhanced,
    code_means,
    contexts,
    deferred_codes,
    enhanced_is_exact,
    patterns,
    regex,
    response_codes,
    software_of_banner,
    software_of_origin,
    term_regex,
    terms,
)
from mailtalk.knowledge.learned import Guess
from mailtalk.knowledge.replies import IMAP_COMMANDS, ParsedReply

_POSITIVE_STATUS: Final = {"+OK", "OK", "PREAUTH", "+"}


# --- matching -----------------------------------------------------------------


def normalise_command(command: str | None) -> str | None:
    """``"rcpt to:<x>"`` -> ``"RCPT"``; ``"UID FETCH ..."`` -> ``"FETCH"``; the
    pseudo-commands "greeting" and "end of data" stay as they are."""
    if not command:
        return None
    text = command.strip()
    if text.lower() in ("greeting", "end of data", "auth response"):
        return text.lower() if text.lower() != "auth response" else "AUTH response"
    words = text.split()
    if not words:
        return None
    if len(words) > 1 and any(c.isdigit() for c in words[0]):
        words = words[1:]  # an IMAP tag: "a001 LOGIN ..."
    verb = words[0].upper().split(":")[0]
    if verb == "UID" and len(words) > 1:
        verb = words[1].upper()
    return verb


# Commands only one protocol has: a reply to one of them is that protocol's, whatever
# its words look like ("Mailbox doesn't exist" after SELECT is a folder, not a user).
# IMAP's are the commands its replies can name (replies.IMAP_COMMANDS), less those
# another protocol has too.
_ONLY_IN: Final = {
    **dict.fromkeys(
        ("HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "ETRN",
         "end of data"),
        "smtp",
    ),
    **dict.fromkeys(("USER", "PASS", "APOP", "STAT", "RETR", "DELE", "TOP", "UIDL", "STLS",
                     "CAPA"), "pop3"),
    **dict.fromkeys(IMAP_COMMANDS - {"NOOP", "LIST", "STARTTLS"}, "imap"),
}


def protocol_of_command(command: str | None) -> str | None:
    """The protocol a command belongs to, when only one has it (``SELECT``: imap)."""
    verb = normalise_command(command)
    return _ONLY_IN.get(verb) if verb else None


def _applies(
    pattern: Pattern, parsed: ParsedReply, command: str | None, server: str | None = None
) -> bool:
    if pattern.commands and command not in pattern.commands:
        return False
    if server is not None and pattern.origin:
        programs = software_of_origin(pattern.origin)
        if programs and server not in programs:
            return False  # another program's wording
    if not pattern.codes:
        return True
    return (parsed.code or "").upper() in pattern.codes


def match_pattern(
    parsed: ParsedReply,
    protocols: tuple[str, ...],
    command: str | None = None,
    server: str | None = None,
    general: bool | None = None,
) -> Pattern | None:
    """The first wording pattern that matches the reply, over the files of
    ``protocols`` (and the generic SMTP keywords for POP3 and IMAP). ``server`` is
    the key of the program the greeting names: other programs' wordings are out.
    ``general``: True for only the wordings that name no program, False for only
    those that do, None for both."""
    # one line: the words of a multi-line reply match across its line breaks; of a log
    # line, only what the server said
    subject = parsed.said
    lowered = subject.lower()
    open_to = code_means().get((parsed.code or "").upper())
    for protocol in protocols:
        for name in PATTERN_FILES[protocol]:
            for pattern in patterns(name):
                if pattern.literal and pattern.literal not in lowered:
                    continue
                if general is not None and general == bool(pattern.origin):
                    continue
                if open_to is not None and not pattern.origin and pattern.category not in open_to:
                    continue  # a general wording the code rules out (501 is no policy block)
                if _applies(pattern, parsed, command, server) and regex(pattern).search(subject):
                    return pattern
    if "smtp" not in protocols:
        # the words after the status: "BAD Command requires authentication" is no
        # "bad command"
        words = " ".join(parsed.text.split()) if parsed.text else subject
        for pattern in patterns("replies_smtp.toml"):
            if (
                pattern.generic
                and general is not False
                and _applies(pattern, parsed, command, server)
                and regex(pattern).search(words)
            ):
                return pattern
    return None


def context_for(parsed: ParsedReply, command: str | None) -> tuple[Context | None, list[Context]]:
    """The context entry for this code after ``command``, and all entries for the code."""
    if parsed.protocol is None or parsed.code is None:
        return None, []
    code = parsed.code.upper()
    entries = [c for c in contexts() if c.protocol == parsed.protocol and c.code == code]
    if command is None:
        return None, entries
    for entry in entries:
        if command in entry.commands:
            return entry, entries
    return None, entries


# "<bob@example.org>" in a command line or a reply
_ADDRESS: Final = re.compile(r"<[^<>@\s]*@([A-Za-z0-9.-]+)>")
_SMTP_GREETING_HOST: Final = re.compile(r"^\s*220[ -]([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)\b")


def _handles_domain(banner: str | None, *texts: str | None) -> bool | None:
    """True when the SMTP greeting names a host in the address's domain
    (``220 mx.exim.test`` and ``<bob@exim.test>``); None otherwise: a server
    named otherwise may still be the domain's MX."""
    host = _SMTP_GREETING_HOST.match(banner or "")
    if host is None:
        return None
    for text in texts:
        address = _ADDRESS.search(text or "")
        if address is not None:
            name, domain = host[1].lower().rstrip("."), address[1].lower().rstrip(".")
            return True if name == domain or name.endswith("." + domain) else None
    return None


# --- deciding -----------------------------------------------------------------


def situation(
    parsed: ParsedReply, command: str | None, banner: str | None, local: bool | None
) -> tuple[str | None, Software | None, bool | None]:
    """Where the reply was met, as far as it is known: the command it answered
    (normalised: ``"RCPT"``), the program the greeting names, and whether the server
    handles the address's domain itself."""
    verb = normalise_command(command) or normalise_command(parsed.command)
    server = software_of_banner(banner)
    if local is None and parsed.protocol in (None, "smtp") and verb in (None, "RCPT"):
        # the readings are about a recipient's domain: RCPT's address, or the reply's
        local = _handles_domain(banner, command, parsed.subject)
    return verb, server, local


# a response code anywhere in the text ("-ERR Mailbox locked [IN-USE]")
_BRACKETED: Final = re.compile(r"\[([A-Z][A-Z0-9/-]*)(?:[\s\]])")


def response_code_of(parsed: ParsedReply) -> ResponseCode | None:
    """The entry of the reply's POP3 or IMAP response code (``[IN-USE]``), if listed:
    the one the grammar puts after the status, else a listed one anywhere in the line."""
    protocols = (parsed.protocol,) if parsed.protocol else ("imap", "pop3")
    names = [parsed.response_code] if parsed.response_code else []
    if not names and parsed.protocol in (None, "pop3", "imap") and "[" in parsed.text:
        names = _BRACKETED.findall(parsed.text)
    for name in names:
        for protocol in protocols:
            if protocol in CODE_FILES:
                entry = response_codes(protocol).get(name.upper())
                if entry is not None:
                    return entry
    return None


# What the key terms read: the words, without what differs from reply to reply.
_MASKS: Final = (
    (re.compile(r"<[^<>\s]*>|[^\s<>()\[\]'\":;,]+@[a-z0-9.-]+"), " _a_ "),  # addresses
    (
        re.compile(r"\[?\b\d{1,3}(?:\.\d{1,3}){3}\b\]?|\[?[0-9a-f]*:[0-9a-f:]+:[0-9a-f]+\]?"),
        " _ip_ ",
    ),
    (re.compile(r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b"), " _h_ "),  # host names
    (re.compile(r"\b\d+\b"), " 0 "),  # numbers, not the digits of words (base64)
    (re.compile(r"[\"\u201c\u201d\u00ab\u00bb`]|(?<![a-z])'|'(?![a-z])"), " "),  # quoting
)


def words_of(parsed: ParsedReply) -> str:
    """The reply's words for the key terms: lower case, on one line, with addresses,
    IP addresses, host names, numbers and quoting replaced by placeholders, so that
    "<quota@example.org>" says nothing about quotas."""
    text = " ".join((parsed.text or parsed.subject).split()).lower()
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())


def learned_features(
    parsed: ParsedReply, command: str | None, response: ResponseCode | None
) -> list[str]:
    """What the learned reading weighs (``learned.features``) for this reply, answering
    ``command`` (normalised): the trainer reads the labelled replies through this too."""
    from mailtalk.knowledge import learned

    named = parsed.response_code or (response.name if response is not None else None)
    return learned.features(
        words_of(parsed), parsed.protocol, parsed.code, parsed.enhanced_code, named, command
    )


def match_term(parsed: ParsedReply, protocol: str | None, command: str | None) -> Term | None:
    """The first key term of ``terms.toml`` the reply's words hold, for its protocol
    (for a reply of unknown protocol, any), its code and the command it answered."""
    words = words_of(parsed)
    if not words:
        return None
    code = (parsed.code or "").upper()
    open_to = code_means().get(code)
    for term in terms():
        if protocol is not None and term.protocols and protocol not in term.protocols:
            continue
        if open_to is not None and term.category not in open_to:
            continue
        if term.codes and not code.startswith(term.codes):
            continue
        if term.commands and command not in term.commands:
            continue
        if command in term.not_after:
            continue
        if term_regex(term.match).search(words) and not (
            term.unless and term_regex(term.unless).search(words)
        ):
            return term
    return None


class Decision(NamedTuple):
    """The category and the evidence that decided it: ``rule`` is one of "success",
    "wording", "response-code", "enhanced-code", "term", "command", "basic-code",
    "status", "learned", "none"; ``evidence`` names which (the wording's or term's id,
    the code, the command, the learned reading's strongest features)."""

    category: str
    rule: str
    evidence: str
    pattern: Pattern | None = None
    readings: tuple[Reading, ...] = ()
    term: Term | None = None
    guess: Guess | None = None  # rule "learned": the reading that decided


_LOGIN_COMMANDS: Final = frozenset(
    {"PASS", "APOP", "LOGIN", "AUTHENTICATE", "AUTH", "AUTH response"}
)


# Words that say no more than "it failed" ("-ERR Login failed, sorry"): a reply made
# of them says nothing the command does not.
_SAYS_FAILED: Final = frozenset(
    {
        "failed", "failure", "fail", "error", "errors", "denied", "invalid", "refused",
        "rejected", "reject", "incorrect", "wrong", "bad", "not", "sorry", "the", "your",
        "you", "for", "and", "try", "again", "please", "login", "logon", "log", "password",
        "passwords", "user", "username", "authentication", "authenticate", "authenticated",
        "auth", "credentials", "credential", "access", "permission", "message", "mail",
        "transaction", "command", "request", "requested", "action", "taken", "account",
        "accounts", "anonymous", "plain", "cram", "scram", "digest", "gssapi", "ntlm",
        "oauth", "xoauth", "sasl", "mechanism", "possible", "enabled", "disabled",
        "activated", "active", "required", "code", "totp", "token", "one", "time",
        "temporary", "yet", "must", "change", "changed", "imap", "pop", "service", "this",
        "that", "with", "has", "have",
    }
)
_WORD: Final = re.compile(r"[a-z]{3,}")


def _says_little(parsed: ParsedReply) -> bool:
    """The reply's words say no more than that it failed: the command answered may
    then say what ("-ERR nope" after PASS). Words that say something else ("-ERR
    unable to fork") are not to be read as a refused password."""
    return len(set(_WORD.findall(words_of(parsed))) - _SAYS_FAILED) <= 1


def _by_state(
    parsed: ParsedReply, command: str | None, local: bool | None, context: Context | None
) -> Decision | None:
    """What the command answered settles when nothing more specific did: a listed
    context (503 after RCPT), a failed login, an RCPT refused by a server that is
    not the domain's MX."""
    # a refused login is what a failure after PASS, LOGIN or AUTH says when its words
    # say no more; words that say something else ("-ERR unable to fork") are no password
    login = command in _LOGIN_COMMANDS
    # what a server refuses at the end of DATA is the content, and after HELO the
    # client's name: filters, header rules, reverse DNS; not when the enhanced code
    # says the message's format, X.6 ("554 5.6.0 Message has no header/body separator")
    media = (parsed.enhanced_code or "").split(".")[1:2] == ["6"]
    if (
        context is not None
        and context.category is not None
        and (context.category != "auth_failed" or _says_little(parsed))
        and not (media and context.category == "spam_or_policy_block")
    ):
        return Decision(context.category, "command", command or "")
    if command is None:
        return None
    # a refusal of the credentials, not of the command's syntax (500-504, BAD)
    refused = parsed.code in ("-ERR", "NO") or (parsed.basic or 0) >= 505
    if refused and login and _says_little(parsed):
        return Decision("auth_failed", "command", command)
    if command == "RCPT" and local is False and (parsed.basic or 0) >= 500:
        return Decision("relay_denied", "command", command)
    permanent_55x = 550 <= (parsed.basic or 0) < 560
    if command in ("end of data", "HELO", "EHLO") and permanent_55x and not media:
        return Decision("spam_or_policy_block", "command", command)
    return None


# the words of a syntax refusal that say the address, not the command, was wrong
_NAMES_AN_ADDRESS: Final = re.compile(
    r"^(?!.*(syntax: |usage|use mail from|parameters or arguments))"
    r".*(\b(address|sender|local ?part|domain)\W+(?:\w+\W+){0,3}?"
    r"(malformed|invalid|bad|syntax|missing|too long|illegal|ridiculous)"
    r"|\b(malformed|invalid|bad|illegal|missing)\W+(?:\w+\W+){0,2}?"
    r"(address|sender|local ?part|domain))"
)
# What a recipient's category means when the reply answered MAIL FROM: the sender's;
# and a name that does not resolve, when it answered the greeting or HELO: the
# client's own (its reverse DNS or its HELO name), which is a policy check.
_AFTER_COMMAND: Final = {
    "MAIL": {
        "dns_or_routing": "sender_domain",
        "unknown_user": "sender_rejected",
    },
    # at the greeting there is no sender yet: "451 4.1.8 Possibly forged hostname for
    # 192.0.2.1" is about the client's own name
    "greeting": {"dns_or_routing": "spam_or_policy_block", "sender_domain": "spam_or_policy_block"},
    "HELO": {"dns_or_routing": "spam_or_policy_block", "sender_domain": "spam_or_policy_block"},
    "EHLO": {"dns_or_routing": "spam_or_policy_block", "sender_domain": "spam_or_policy_block"},
}


def _tls_first(parsed: ParsedReply) -> Term | None:
    """The key term that says a login needs TLS first, if the words hold it: a refused
    login that says so ("LOGIN failed: Plain text password authentication is
    disallowed. Please try enabling SSL or TLS") is about TLS, not the password."""
    words = words_of(parsed)
    for term in terms():
        if (
            term.category == "tls_required"
            and term_regex(term.match).search(words)
            and not (term.unless and term_regex(term.unless).search(words))
        ):
            return term
    return None


def decide_category(
    parsed: ParsedReply,
    command: str | None,
    server: Software | None,
    local: bool | None,
    response: ResponseCode | None,
    context: Context | None,
) -> Decision:
    """The category and the evidence that decided it, read for the command answered
    (``_AFTER_COMMAND``): after MAIL FROM, a domain that does not resolve is the
    sender's, and an address refused is the sender's (the words are often the same
    as for a recipient)."""
    decision = _decide_by_evidence(parsed, command, server, local, response, context)
    decision = _second_opinion(decision, parsed, command, response)
    protocol = parsed.protocol or protocol_of_command(command)
    if decision.category == "auth_required" and protocol in ("pop3", "imap"):
        # POP3 and IMAP have no "authentication required" of their own: a command
        # before the login is out of order ("-ERR client not authenticated" after
        # STAT), as CATEGORIES.md's close call says and the learned reading may not
        return Decision("sequence_error", "command", command or "")
    if decision.category == "auth_failed" and decision.rule in ("wording", "command"):
        tls = _tls_first(parsed)
        if tls is not None:
            return Decision("tls_required", "term", tls.id, term=tls)
    instead = _AFTER_COMMAND.get(command or "", {}).get(decision.category)
    if (
        command == "MAIL"
        and decision.category == "syntax_error"
        and _NAMES_AN_ADDRESS.search(words_of(parsed))
    ):
        instead = "sender_rejected"  # "501 bad address: missing or malformed local part"
    if instead is not None:
        # the wording's cause is about a recipient: the category's causes say it
        return Decision(instead, "command", command or "")
    return decision


# Rules that say little: the learned reading may take over from them when it leans
# one way (more likely than not); from the others only when it is sure. Both
# thresholds were chosen on the blind sets, each scored with the rules as they were
# before it was collected and the model trained without it
# (tests/knowledge/blind/README.md). On T to W (800 replies, dumped at each set's
# frozen commit) a leaning from 0.5 rather than 0.4 was right more often in T, V and W
# and the same in U.
_WEAK_RULES: Final = frozenset({"none", "basic-code", "status"})
_SURE: Final = 0.7
_LEANS: Final = 0.5
# a general wording was written by someone who read that wording, and a key term from
# several: only a reading that is very sure goes against them (P, Q and R scored the
# same from 0.8 up; on T, U and V a term overruled from 0.7 was right as often as not)
_SURE_OVER_WORDING: Final = 0.9
# a response code ("[IN-USE]") is what the server chose to say, but servers choose it
# loosely ("-ERR [IN-USE] Too many POP connections for this account" is a rate limit,
# as Dovecot's mail_max_userip_connections says it): only a very sure reading of the
# words goes against it, never a leaning (on T, U and V: right 6 times of 7). The
# same holds for the other knowledge the reading lacks (``_known``) but a program's
# own wording: an exact enhanced code (5.1.2 in "550 5.1.2 sorry, you must specify a
# domain" is a syntax error, not routing), a key term written for some commands, a
# refused login ("-ERR Invalid authentication method" after AUTH): on T to W a very
# sure reading against them was right 6 times of 6.
_CONSIDERED_RULES: Final = frozenset({"term", "response-code"})


def _known(decision: Decision, parsed: ParsedReply, command: str | None) -> bool:
    """Whether the rules' decision rests on knowledge the learned reading lacks: a
    program's own words, a wording read for the situation (the server handles the
    domain or not), a wording or key term written for some commands or codes, an
    enhanced code that says exactly what happened (5.1.1), or a refused login."""
    pattern, term = decision.pattern, decision.term
    if pattern is not None and (pattern.origin or pattern.local or pattern.remote):
        return True
    if (pattern is not None and (pattern.commands or pattern.codes)) or (
        term is not None and term.commands
    ):
        return True
    enhanced = parsed.enhanced_code
    if decision.rule == "enhanced-code" and enhanced and enhanced_is_exact(enhanced):
        return True
    # the command first (issue 14): what a login command is refused with is about the
    # credentials, or about TLS, unless the words say otherwise
    return decision.category in ("auth_failed", "tls_required") and command in _LOGIN_COMMANDS


def _second_opinion(
    decision: Decision, parsed: ParsedReply, command: str | None, response: ResponseCode | None
) -> Decision:
    """The learned reading (``learned.py``) in place of the rules' decision, when the
    rules had little to go on or the reading is sure; a success stays a success, and a
    reply without words (a bare code) is read by the rules alone."""
    if decision.category == "ok" or not parsed.text:
        return decision
    from mailtalk.knowledge import learned

    known = _known(decision, parsed, command)
    if known and decision.pattern is not None:
        return decision  # a wording read for this program, command or situation
    guess = learned.guess(learned_features(parsed, command, response))
    if guess.category in (decision.category, "ok") or (known and guess.category == "other"):
        return decision  # "other" says less than what the rules know ("account disabled")
    weak = not known and (
        decision.rule in _WEAK_RULES
        or (decision.category == "other" and decision.rule != "response-code")
    )
    considered = known or decision.pattern is not None or decision.rule in _CONSIDERED_RULES
    sure = _SURE_OVER_WORDING if considered else _SURE
    if guess.probability > sure or (weak and guess.probability > _LEANS):
        return Decision(guess.category, "learned", ", ".join(guess.evidence), guess=guess)
    return decision


def _failure_category_of_enhanced(enhanced: str, unimplemented: bool) -> str | None:
    """What the enhanced code of a refusal says, if anything: a code of success in a
    refusal ("550 5.1.5 Recipient address has no domain", X.1.5 being "destination
    address valid") says nothing, nor does a security class on a command the server
    does not implement ("502 5.7.0")."""
    by_code = category_of_enhanced(enhanced)
    if by_code == "ok" or (unimplemented and enhanced.split(".")[1:2] == ["7"]):
        return None
    return by_code


# What a 221 (closing the channel) that no QUIT asked for says when its words give the
# reason: a server that hangs up on an idle client with "221 Idle timeout, bye bye"
# (set Z15) has not completed anything for it; the timeout term reads it.
_CLOSING_REASONS: Final = frozenset({"timeout"})


def _closed_for_a_reason(parsed: ParsedReply, command: str | None) -> Decision | None:
    if parsed.basic != 221 or command == "QUIT" or not parsed.text:
        return None
    term = match_term(parsed, "smtp", None)
    if term is not None and term.id in _CLOSING_REASONS:
        return Decision(term.category, "term", term.id, term=term)
    return None


def _decide_by_evidence(
    parsed: ParsedReply,
    command: str | None,
    server: Software | None,
    local: bool | None,
    response: ResponseCode | None,
    context: Context | None,
) -> Decision:
    """The category, first hit wins, in the order of the module docstring; and the
    evidence that decided it."""
    basic, enhanced = parsed.basic, parsed.enhanced_code
    status = (parsed.code or "").upper()
    # 1. success and intermediate replies; a BYE is what LOGOUT asks for (RFC 9051 6.1.3)
    if (basic is not None and basic < 400) or status in _POSITIVE_STATUS:
        closed = _closed_for_a_reason(parsed, command)
        if closed is not None:
            return closed
        return Decision("ok", "success", status)
    if status == "BYE" and command == "LOGOUT":
        return Decision("ok", "command", command)
    protocols = (parsed.protocol,) if parsed.protocol else ("smtp", "pop3", "imap")
    program = server.key if server else None

    def wording(general: bool) -> Decision | None:
        pattern = match_pattern(parsed, protocols, command, program, general)
        if pattern is None:
            return None
        readings = _readings(pattern, local)
        return Decision(readings[0].category, "wording", pattern.id, pattern, readings)

    # 2. a program's or provider's own wording, read for the situation
    found = wording(general=False) if parsed.text else None
    if found is not None:
        return found
    deferred = deferred_codes()[0]
    # a refusal's response code that, on an OK, is information ("NO [NOMODSEQ] cannot
    # SEARCH MODSEQ"): it does not make the refusal a success
    if response is not None and response.category == "ok":
        response = None
    # 3. a response code that says what happened
    if response is not None and response.name not in deferred:
        return Decision(response.category, "response-code", response.name)
    # 4. a general wording
    found = wording(general=True) if parsed.text else None
    if found is not None:
        return found
    # a command the server does not implement ("502 5.7.0 ...") is no policy block,
    # whatever the security class of its enhanced code says (but "500 5.7.26" is
    # vSMTP's DMARC refusal)
    unimplemented = basic == 502
    # 5. an enhanced code that says what happened
    if enhanced is not None and enhanced_is_exact(enhanced):
        by_code = _failure_category_of_enhanced(enhanced, unimplemented)
        if by_code is not None:
            return Decision(by_code, "enhanced-code", enhanced)
    # 6. the key terms
    if parsed.text:
        protocol = parsed.protocol or (response.protocol if response else None)
        term = match_term(parsed, protocol, command)
        if term is not None:
            return Decision(term.category, "term", term.id, term=term)
    # 7. a broad response code, where it says more than "other"
    if response is not None and response.category != "other":
        return Decision(response.category, "response-code", response.name)
    # 7. the command answered, where that settles it
    by_state = _by_state(parsed, command, local, context)
    if by_state is not None:
        return by_state
    # 8. the enhanced code, 9. the basic code
    # a 530 or 535 says more than a broad enhanced code (535 5.7.0 is a refused login)
    if basic in (530, 534, 535, 538):
        by_basic = category_of_basic(basic)
        if by_basic is not None:
            return Decision(by_basic, "basic-code", str(basic))
    if enhanced is not None:
        by_code = _failure_category_of_enhanced(enhanced, unimplemented)
        if by_code is not None:
            return Decision(by_code, "enhanced-code", enhanced)
    if basic is not None:
        by_code = category_of_basic(basic)
        if by_code is not None:
            return Decision(by_code, "basic-code", str(basic))
    # 10. the POP3/IMAP status
    by_status = {"BAD": "syntax_error", "BYE": "other"}.get(status)
    if by_status is not None:
        return Decision(by_status, "status", status)
    if response is not None:
        return Decision(response.category, "response-code", response.name)
    return Decision("other", "none", "")


def _readings(pattern: Pattern, local: bool | None) -> tuple[Reading, ...]:
    """The wording's readings, the likelier first."""
    default = Reading(pattern.category, pattern.cause)
    if local is True and pattern.local is not None:
        first = pattern.local
    elif local is False and pattern.remote is not None:
        first = pattern.remote
    else:
        first = default
    result = [first]
    for other in (default, pattern.local, pattern.remote):
        if other is not None and other not in result:
            result.append(other)
    return tuple(result)


def decide_transient(
    parsed: ParsedReply, response: ResponseCode | None, pattern: Pattern | None, cat: Category
) -> bool | None:
    """Whether retrying later can work: None when nothing says."""
    basic, enhanced = parsed.basic, parsed.enhanced_code
    # For SMTP the first digit is what every client acts on (RFC 5321 4.2.1).
    if basic is not None:
        return {4: True, 5: False}.get(basic // 100)
    if enhanced is not None and parsed.protocol == "smtp":
        return {"4": True, "5": False}.get(enhanced[0])
    if response is not None and response.transient is not None:
        return response.transient
    if pattern is not None and pattern.transient is not None:
        return pattern.transient
    return cat.transient

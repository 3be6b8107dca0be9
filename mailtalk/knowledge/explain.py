"""Explain a reply: what it means, whether to retry, who acts, causes and fixes.

The knowledge is data, read by ``catalogue.py`` (categories, wordings, response
codes, contexts, programs) and ``codes.py`` (the SMTP code tables); this module
decides what that data says about one reply and assembles one
:class:`Explanation`. Files are read on first use and only for the protocol at
hand: explaining an SMTP reply never parses the IMAP tables.

Besides the reply, an explanation can know the command it answered (``503``
after RCPT is not ``503`` after AUTH), the server's greeting (which names the
server software: ``software.toml``) and whether the server handles the
address's domain itself (is its MX). Wordings are matched only where they hold:

- a wording tied to commands (``commands``) only after those commands;
- a program's own wording (its ``origin`` names a program of ``software.toml``)
  not when the greeting names another program;
- the general SMTP keyword entries (``generic``) lend POP3 and IMAP replies
  their category and cause, never their SMTP advice (fixes).

Deciding the category, first hit wins (the ``rule`` of :class:`Decision`, which
``--json`` reports in "matched"):

1. success and intermediate replies are ``ok``;
2. a program's or provider's own wording (``origin``); a wording that means two
   things (Exim's "Unrouteable address": no such user, or no route to the domain)
   has a reading for a server that handles the domain itself (``local``) and may
   have one for a server that does not (``remote``);
3. a POP3/IMAP response code that says what happened, wherever it stands in the
   line (``[IN-USE]``, ``[OVERQUOTA]``; not the broad ones of ``categories.toml``
   [defer], such as ``[AUTH]`` and ``[SYS/TEMP]``, which carry any cause);
4. a general wording (no ``origin``);
5. an enhanced code whose detail says what happened (``5.1.1``; not ``5.7.1``);
6. the key terms of ``terms.toml``, read in the words with addresses, hosts and
   numbers taken out;
7. a broad response code;
8. the command the reply answered and the state (503 after RCPT; anything refused
   after PASS, LOGIN or AUTH; RCPT refused by a server that is not the MX);
9. the enhanced code by its subject, 10. the basic code (``550``), then its first
   two digits, 11. the POP3/IMAP status (``BAD`` is a syntax error, ``BYE`` the
   service going away).

Some codes leave only some categories open to the general wordings and terms
(``categories.toml`` [code_means]: a 501 is no policy block). Last, the command reads
the category again: after MAIL FROM a recipient's reading is the sender's.

What the one-line explanation leads with (:attr:`Explanation.lead`), most
specific first: a program's or provider's own wording; the response code; what
the code means after the command (when that agrees with the category); a
general wording; what the code means after the command otherwise; the
category's first cause (each category has its text per protocol).

Fixes: a wording's or a response code's own fix replaces the category's fixes
for that reader (user or admin); they would say the same in other words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from mailtalk.knowledge import codes
from mailtalk.knowledge.catalogue import (
    Category,
    Context,
    Pattern,
    Reading,
    ResponseCode,
    Term,
    category,
    status_meanings,
)
from mailtalk.knowledge.decide import (
    context_for,
    decide_category,
    decide_transient,
    protocol_of_command,
    response_code_of,
    situation,
)
from mailtalk.knowledge.replies import ParsedReply, Protocol, parse


@dataclass
class Explanation:
    """Everything ``mailtalk explain`` says about one reply."""

    reply: str
    protocol: str | None
    code: str | None
    enhanced_code: str | None
    response_code: str | None
    category: str
    title: str
    transient: bool | None
    summary: str
    side: str
    meaning: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    fixes_user: list[str] = field(default_factory=list)
    fixes_admin: list[str] = field(default_factory=list)
    command: str | None = None
    context: str | None = None
    other_contexts: list[tuple[str, str]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    contradiction: str | None = None
    matched: Pattern | None = None
    rule: str = ""  # the evidence that decided the category (see Decision)
    evidence: str = ""  # which one: the term's id, the code, the command
    term: Term | None = None
    # rule "learned": how sure the learned reading was, and what weighed most for it
    certainty: float | None = None
    weighed: tuple[str, ...] = ()
    known: bool = True
    lead: str = ""  # what the one-line explanation says after the title
    software: str | None = None  # the server program its greeting names
    language: str = "en"  # the language of the prose (see translation.py)

    def words(self, text: str) -> str:
        """One of the words put around the knowledge, in the explanation's language."""
        if self.language == "en":
            return text
        from mailtalk.knowledge.translation import translation

        return translation(self.language).gettext(text)

    @property
    def retry(self) -> str:
        """Whether retrying helps, in words."""
        if self.category == "ok":
            return self.words("success")
        if self.transient is None:
            return self.words("see below")
        return self.words(
            "temporary: retrying later can work"
            if self.transient
            else "permanent: do not retry unchanged"
        )

    def headline(self) -> str:
        parts = [p for p in (self.code, self.enhanced_code) if p]
        if self.response_code:
            parts.append(f"[{self.response_code}]")
        label = " ".join(parts) or self.reply[:40]
        return f"{label} — {self.title}"

    def one_line(self) -> str:
        """The REPL's hint under a failure reply."""
        word = self.words({True: "temporary", False: "permanent", None: ""}[self.transient])
        first = self.lead or (self.causes[0] if self.causes else self.summary)
        lead = f"{self.title} ({word})" if word else self.title
        return f"{lead}: {first}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "reply": self.reply,
            "protocol": self.protocol,
            "code": self.code,
            "enhanced_code": self.enhanced_code,
            "response_code": self.response_code,
            "category": self.category,
            "title": self.title,
            "transient": self.transient,
            "summary": self.summary,
            "side": self.side,
            "meaning": self.meaning,
            "causes": self.causes,
            "fixes": {"user": self.fixes_user, "admin": self.fixes_admin},
            "command": self.command,
            "context": self.context,
            "contexts": [{"after": c, "meaning": m} for c, m in self.other_contexts],
            "references": self.references,
            "contradiction": self.contradiction,
            "software": self.software,
            "matched": {"rule": self.rule, "id": self.evidence or None},
        }
        if self.matched is not None:
            data["matched"].update(origin=self.matched.origin or None, source=self.matched.source)
        elif self.term is not None:
            data["matched"]["taught_by"] = self.term.taught_by
        elif self.certainty is not None:
            data["matched"].update(certainty=round(self.certainty, 2), weighed=list(self.weighed))
        return data


# --- assembling the prose -----------------------------------------------------


class _Findings(NamedTuple):
    """What the data says about one reply in its situation, before the prose."""

    parsed: ParsedReply
    response: ResponseCode | None
    context: Context | None
    name: str  # the category
    pattern: Pattern | None  # the wording that decided it
    readings: tuple[Reading, ...]  # the wording's readings, the likelier first
    protocol: str | None  # the reply's, or the one its wording or response code is of
    cat: Category  # the category's text for that protocol
    command: str | None = None  # the command the reply answered, normalised
    term: Term | None = None  # the key term that decided, if one did
    server: str | None = None  # the program the greeting names ("Exim")

    @property
    def same_response(self) -> bool:
        """The response code means what the reply was found to mean."""
        return self.response is not None and self.response.category == self.name

    @property
    def wording_cause(self) -> str:
        """The cause the wording's likelier reading gives; "" when no wording matched."""
        return self.readings[0].cause if self.readings else ""

    @property
    def wording_says_all(self) -> bool:
        """The category is "other", which says nothing the wording's own entry does
        not say better: the wording's cause is the summary, the category adds nothing."""
        return self.name == "other" and bool(self.wording_cause)

    @property
    def wording_cause_alone(self) -> bool:
        """The wording's cause is the only likely one: its entry says so (``alone``:
        "nested MAIL command" is no missing step, "Command line too long" no bare
        LF), or the wording says all."""
        if self.wording_says_all:
            return True
        return self.pattern is not None and self.pattern.alone and bool(self.wording_cause)


def _title(found: _Findings) -> str:
    parsed = found.parsed
    title = found.cat.title
    if found.name == "other" and parsed.basic is not None and not parsed.text:
        # a bare 550 names no cause; say what the code itself says
        title = {4: "not done for now", 5: "refused"}.get(parsed.basic // 100, title)
        title += ": the reply's text would say why"
    return title


def _code_meanings(found: _Findings) -> tuple[list[str], list[str], str]:
    """What the codes and the status say by themselves, their references, and the
    summary: a bare code's own meaning rather than its category's."""
    parsed, response = found.parsed, found.response
    basic, enhanced = parsed.basic, parsed.enhanced_code
    meaning: list[str] = []
    references: list[str] = []
    summary = found.cat.summary
    if basic is not None:
        entry = codes.basic_code(basic)
        if entry is not None:
            meaning.append(f"{basic}: {entry.meaning}")
            references.append(entry.rfc)
            if not parsed.text and not enhanced:
                summary = entry.meaning
        else:
            try:
                first, second = codes.digit_meaning(basic)
                meaning.append(f"{basic} is not a standard code; its digits say: {first} {second}")
                references.append("RFC 5321, section 4.2.1")
            except ValueError:
                meaning.append(f"{basic} is not an SMTP reply code.")
    if enhanced is not None:
        enhanced_entry = codes.enhanced_code(enhanced)
        if enhanced_entry is not None:
            label = enhanced_entry.title or "(no sample text)"
            meaning.append(f"{enhanced}: {label}. {enhanced_entry.description}")
            references.append(f"{enhanced_entry.reference} (IANA SMTP Enhanced Status Codes)")
            if basic is None and not parsed.text:
                summary = f"{label}: {enhanced_entry.description}"
    if response is not None:
        meaning.append(f"[{response.name}]: {response.meaning}")
        references.append(response.rfc)
        if not parsed.text and parsed.code is None:
            summary = response.meaning
    status = (parsed.code or "").upper()
    if status and basic is None:
        meaning.append(status_meanings().get((found.protocol or "", status), ""))
    if found.context is not None:
        references.append(found.context.rfc)
    return meaning, references, summary


# How a cause names the command it is about ("MAIL FROM", "RCPT TO", "PASS")
_COMMAND_NAMES: Final = {
    "MAIL": "MAIL FROM",
    "RCPT": "RCPT",
    "DATA": "DATA",
    "end of data": "DATA",
    "AUTH": "AUTH",
    "AUTH response": "AUTH",
    "STARTTLS": "STARTTLS",
    "STLS": "STLS",
    "USER": "USER",
    "PASS": "PASS",
    "APOP": "APOP",
    "LOGIN": "LOGIN",
    "AUTHENTICATE": "AUTHENTICATE",
    "SELECT": "SELECT",
    "EXAMINE": "EXAMINE",
    "APPEND": "APPEND",
    "HELO": "HELO",
    "EHLO": "EHLO",
}


def _for_situation(
    causes: tuple[str, ...], command: str | None, server: str | None
) -> list[str]:
    """The category's causes, those about the command the reply answered first, then
    those that name the server's program (its greeting says which); the order of the
    data otherwise: most likely first."""
    name = _COMMAND_NAMES.get(command or "")
    return sorted(
        causes,
        key=lambda cause: (
            name is None or name not in cause,
            server is None or server not in cause,
        ),
    )


def _causes_and_fixes(found: _Findings) -> tuple[list[str], list[str], list[str]]:
    """Causes, fixes for the user and fixes for the admin, most specific first: the
    wording's, the response code's, the category's. A wording's or a code's own fix
    replaces the category's fixes for that reader: they would say the same."""
    pattern, response, cat = found.pattern, found.response, found.cat
    causes: list[str] = []
    fixes_user: list[str] = []
    fixes_admin: list[str] = []
    if found.term is not None and found.term.cause:
        causes.append(found.term.cause)
    if pattern is not None:
        # a cause that only restates the category's in short ("a step before it is
        # missing or failed") is not listed again before them
        if not pattern.restates_category or found.wording_cause_alone:
            causes.extend(reading.cause for reading in found.readings)
        # The general SMTP keyword entries give POP3 and IMAP replies their category
        # and cause, not their SMTP advice ("MAIL FROM needs angle brackets" for a BAD).
        if pattern.protocol == found.protocol or not pattern.generic:
            fixes_user.append(pattern.fix_user)
            fixes_admin.append(pattern.fix_admin)
    if response is not None and found.same_response:
        causes.extend(response.causes)
        # the code's fixes only where the wording gave none: they say the same
        if not any(fixes_user):
            fixes_user.extend(response.fixes_user)
        if not any(fixes_admin):
            fixes_admin.extend(response.fixes_admin)
    # a response code's own causes ([AUTH], [IN-USE]) are the category's, said for
    # that code: the category's general form of them would say the same again
    code_said_them = response is not None and found.same_response and bool(response.causes)
    if not found.wording_cause_alone and not code_said_them:
        causes.extend(_for_situation(cat.causes, found.command, found.server))
    if not found.wording_says_all:
        # the category's fixes are the general form of what a wording or code says
        if not any(fixes_user):
            fixes_user.extend(cat.fixes_user)
        if not any(fixes_admin):
            fixes_admin.extend(cat.fixes_admin)
    return causes, fixes_user, fixes_admin


def _lead(found: _Findings, summary: str) -> str:
    """What the one-line explanation leads with, most specific first."""
    pattern, response, context = found.pattern, found.response, found.context
    after_command = context.meaning if context is not None else ""
    agrees = context is not None and context.category == found.name
    # a context that hedges ("no such user, relaying denied, or a policy; the text
    # says which") only where no wording said which
    hedges = context is not None and context.category is None and pattern is None
    candidates = [
        found.wording_cause if pattern is not None and pattern.origin else "",
        response.meaning if response is not None and found.same_response else "",
        after_command if agrees else "",
        found.wording_cause,
        found.term.cause if found.term is not None else "",
        after_command if hedges else "",
        *found.cat.causes,
        summary,
    ]
    return next((c for c in candidates if c), "")


def _contradiction(parsed: ParsedReply) -> str | None:
    """A sentence when the basic and the enhanced code disagree."""
    if parsed.basic is None or parsed.enhanced_code is None:
        return None
    try:
        return codes.contradiction(parsed.basic, parsed.enhanced_code)
    except ValueError:
        return None


_CONTENT_WORD: Final = re.compile(r"[a-z][a-z0-9'-]{3,}")
_COMMON: Final = frozenset(
    [
        "that",
        "this",
        "with",
        "from",
        "your",
        "their",
        "there",
        "they",
        "them",
        "have",
        "will",
        "when",
        "where",
        "which",
        "what",
        "than",
        "then",
        "does",
        "into",
        "only",
        "also",
        "more",
        "most",
        "server",
        "servers",
    ]
)


def _content(text: str) -> frozenset[str]:
    return frozenset(_CONTENT_WORD.findall(text.lower())) - _COMMON


def says_the_same(one: str, other: str) -> bool:
    """Two sentences say the same when most content words of the shorter are in the
    longer: a wording's cause and its category's first cause, in other words."""
    a, b = _content(one), _content(other)
    if not a or not b:
        return one == other
    return len(a & b) / min(len(a), len(b)) >= 0.7


def _dedupe(items: list[str]) -> list[str]:
    """The items without repeats, in their order."""
    return list(dict.fromkeys(item for item in items if item))


def _distinct(items: list[str]) -> list[str]:
    """Causes or fixes without repeats, also in other words (:func:`says_the_same`):
    of two that say the same, the one that says more stays, where the first stood."""
    result: list[str] = []
    for item in _dedupe(items):
        same = next((i for i, kept in enumerate(result) if says_the_same(item, kept)), None)
        if same is None:
            result.append(item)
        elif len(_content(item)) > len(_content(result[same])):
            result[same] = item
    return result


def explain(
    text: str,
    protocol: Protocol | None = None,
    command: str | None = None,
    *,
    banner: str | None = None,
    local: bool | None = None,
    language: str = "en",
) -> Explanation:
    """Explain one reply, or a bare code, given as the user typed it.

    ``command`` is the command the reply answered: its name (``RCPT``) or the
    whole line (``RCPT TO:<bob@example.org>``, whose domain then counts).
    ``banner`` is the server's greeting. ``local`` says whether the server handles
    the address's domain itself (is its MX); None when unknown, and then a
    greeting that names a host in that domain counts as yes. ``language`` is the
    language of the prose ("en", "nl").
    """
    parsed = parse(text, protocol)
    if parsed.protocol is None and (by_command := protocol_of_command(command)):
        # the words alone do not say, the command does ("Mailbox doesn't exist" after SELECT)
        parsed = parse(text, by_command)  # type: ignore[arg-type]
    explanation = explain_parsed(parsed, command, banner=banner, local=local)
    if language != "en":
        from mailtalk.knowledge.translation import translated

        explanation = translated(explanation, language)
    return explanation


def explain_parsed(
    parsed: ParsedReply,
    command: str | None = None,
    *,
    banner: str | None = None,
    local: bool | None = None,
) -> Explanation:
    """Explain a reply already taken apart (see :func:`explain` for the arguments):
    the situation, the evidence in the order of the module docstring, the prose."""
    verb, server, local = situation(parsed, command, banner, local)
    response = response_code_of(parsed)
    context, all_contexts = context_for(parsed, verb)
    decision = decide_category(parsed, verb, server, local, response, context)
    name, pattern, readings = decision.category, decision.pattern, decision.readings
    protocol = (
        parsed.protocol
        or (pattern.protocol if pattern else None)
        or (response.protocol if response else None)
    )
    cat = category(name, protocol)
    found = _Findings(
        parsed,
        response,
        context,
        name,
        pattern,
        readings,
        protocol,
        cat,
        verb,
        decision.term,
        server.name if server else None,
    )
    meaning, references, summary = _code_meanings(found)
    if pattern is not None:
        references.append(pattern.source)
    if found.wording_says_all:
        summary = found.wording_cause
    causes, fixes_user, fixes_admin = _causes_and_fixes(found)
    ok = name == "ok"
    return Explanation(
        reply=parsed.raw,
        protocol=protocol,
        code=parsed.code,
        enhanced_code=parsed.enhanced_code,
        response_code=parsed.response_code,
        category=name,
        title=_title(found),
        transient=None if ok else decide_transient(parsed, response, pattern, cat),
        summary=summary,
        side=cat.side,
        meaning=[m for m in meaning if m],
        causes=[] if ok else _distinct(causes),
        fixes_user=[] if ok else _distinct(fixes_user),
        fixes_admin=[] if ok else _distinct(fixes_admin),
        command=verb,
        # what the code usually means after the command, unless the words said
        # otherwise ("-ERR Unknown command." to RETR before login is no missing message)
        context=context.meaning
        if context is not None and context.category in (None, name)
        else None,
        # What the code means after each command, when nothing more specific
        # (a wording, a response code, the command itself) has settled it.
        other_contexts=[]
        if context is not None or pattern is not None or response is not None
        else [(", ".join(c.commands), c.meaning) for c in all_contexts],
        references=_dedupe(references),
        contradiction=_contradiction(parsed),
        matched=pattern,
        rule=decision.rule,
        evidence=decision.evidence,
        certainty=decision.guess.probability if decision.guess else None,
        weighed=decision.guess.evidence if decision.guess else (),
        term=decision.term,
        known=(
            pattern is not None
            or response is not None
            or parsed.code is not None
            or parsed.enhanced_code is not None
        ),
        lead="" if ok else _lead(found, summary),
        software=server.name if server else None,
    )

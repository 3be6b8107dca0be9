"""mailtalk: talk SMTP, POP3 and IMAP to mail servers, with a tool that knows each protocol."""

__version__ = "0.1.0"
